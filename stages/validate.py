"""Check every dataframe and input file the experiment names, before anything trains on them."""

import argparse
from pathlib import Path

from deuterium import cli, config, paths, validation


def main(params_path: Path = Path("params.yaml"), out_dir: Path = paths.VALIDATE) -> dict:
    exp = config.load(params_path)
    return validation.validate(exp, out_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=paths.VALIDATE)
    args = parser.parse_args()
    cli.run(main, args.params, args.out)
