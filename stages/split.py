"""Assign validation folds and record what later stages need to know about the labels (and the settings the
data type chooses from the training files, such as `auto` ones)."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from deuterium import cli, config, io, paths, previous, problems, splitting

log = logging.getLogger(__name__)


def main(params: Path = Path("params.yaml"), out_dir: Path = paths.SPLIT) -> None:
    exp = config.load(params)
    problem = problems.of(exp)
    if exp.dataset.train_dataframe is None:  # inference only: the previous experiment's labels, no rows
        folds = pd.DataFrame(columns=[splitting.ROW_ID, splitting.FOLD])
        info = previous.data_info(exp.previous_experiment)
    else:
        seed = splitting.split_seed(exp.environment.seed)  # -1: drawn once, recorded
        frame = problem.read_frame(exp.dataset.train_dataframe)
        folds = splitting.assign_folds(
            frame, exp.dataset, seed, problem.data.fold_assignment(exp), read=problem.read_frame
        )
        info = {"problem_type": exp.problem_type, "split_seed": seed, **problem.label_info(folds, exp)}
        if problem.task.name == "classification" and not info.get("multi_label"):
            if not exp.training.train_validation_data:  # else the validation rows train too
                for line in splitting.untrained_classes(
                    folds, exp.dataset.label_columns[0], exp.dataset.folds
                ):
                    log.warning("%s", line)
        chosen = problem.data.choose(problem.files(folds, exp), exp)
        if chosen is not None:
            info[exp.data_section] = chosen
    io.write_frame(folds, out_dir / paths.FOLDS_FILE)
    io.write_json(info, out_dir / paths.DATA_INFO_FILE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=paths.SPLIT)
    args = parser.parse_args()
    cli.run(main, args.params, args.out)
