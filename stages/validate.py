"""Check every dataframe and input file the experiment names, before anything trains on them."""

import argparse
from pathlib import Path

from deuterium import cli, config, paths, validation


def main(
    params_path: Path = Path("params.yaml"), out_dir: Path = paths.VALIDATE, rows_only: bool = False
) -> dict:
    exp = config.load(params_path)
    return validation.validate(exp, out_dir, test_classes=not rows_only)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=paths.VALIDATE)
    parser.add_argument(
        "--rows-only",
        action="store_true",
        help="check each frame's rows, not the test classes against the training rows' (the retrain "
        "flow's new rows, which are added to the training data: the pipeline's own validate stage "
        "then checks them all)",
    )
    args = parser.parse_args()
    cli.run(main, args.params, args.out, args.rows_only)
