"""Store the exported model in the BentoML model store and build the bento that serves it."""

import argparse
from pathlib import Path

from deuterium import cli, packaging, paths


def main(model_dir: Path = paths.EXPORT, out_dir: Path = paths.PACKAGE) -> str:
    return packaging.package(model_dir, out_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=paths.EXPORT)
    parser.add_argument("--out", type=Path, default=paths.PACKAGE)
    args = parser.parse_args()
    cli.run(main, args.model_dir, args.out)
