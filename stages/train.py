"""Train one model per selected fold; write the models, their resolved configs and out-of-fold predictions."""

import argparse
from pathlib import Path

from deuterium import cli, config, distributed, fitting, io, paths, previous, problems


def main(
    params: Path = Path("params.yaml"),
    split_dir: Path = paths.SPLIT,
    out_dir: Path = paths.TRAIN,
    checkpoints: Path = paths.CHECKPOINTS,
) -> None:
    exp = config.load(params)
    if exp.dataset.train_dataframe is None:  # inference only: the previous experiment's models are ours
        previous.copy_models(exp.previous_experiment, out_dir)
        (checkpoints / "train").mkdir(parents=True, exist_ok=True)  # a declared output, even when unused
        return
    argv = ["--params", params, "--split", split_dir, "--out", out_dir, "--checkpoints", checkpoints]
    if distributed.relaunch(exp.environment, "stages.train", [str(a) for a in argv]):
        return  # environment.number_of_gpus > 1: torchrun's processes did the work
    problem = problems.of(exp)
    info = io.read_json(split_dir / paths.DATA_INFO_FILE)
    exp = problem.data.resolve(exp, info)
    folds = io.read_frame(split_dir / paths.FOLDS_FILE)
    fitting.fit_folds(
        exp, problem, info, folds, problem.encode(folds, exp, info), out_dir, checkpoints / "train"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    parser.add_argument("--out", type=Path, default=paths.TRAIN)
    parser.add_argument("--checkpoints", type=Path, default=paths.CHECKPOINTS)
    args = parser.parse_args()
    cli.run(main, args.params, args.split, args.out, args.checkpoints)
