"""Assign validation folds and record what later stages need to know about the labels."""

import argparse
from pathlib import Path

from deuterium import cli, config, io, paths, problems, splitting


def main(params: Path = Path("params.yaml"), out_dir: Path = paths.SPLIT) -> None:
    exp = config.load(params)
    problem = problems.get(exp.problem_type)
    folds = splitting.assign_folds(
        io.read_frame(exp.dataset.train_dataframe), exp.dataset, exp.environment.seed
    )
    info = {"problem_type": exp.problem_type, **problem.label_info(folds, exp)}
    io.write_frame(folds, out_dir / paths.FOLDS_FILE)
    io.write_json(info, out_dir / paths.DATA_INFO_FILE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=paths.SPLIT)
    args = parser.parse_args()
    cli.run(main, args.params, args.out)
