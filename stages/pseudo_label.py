"""Pseudo-label the unlabeled dataframe with the fold models and train a second round on labels + pseudo labels.

Fold k's second round trains on pseudo labels made by fold k's own first-round model(s) only: the other
folds' models were trained on fold k's validation rows, and labels from them would leak those rows into
fold k's out-of-fold score. Without an unlabeled dataframe the first-round models pass through unchanged.
"""

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from deuterium import (
    cli,
    config,
    distributed,
    fitting,
    inference,
    io,
    paths,
    problems,
    runtime,
    splitting,
)

log = logging.getLogger(__name__)


def main(
    params: Path = Path("params.yaml"),
    split_dir: Path = paths.SPLIT,
    train_dir: Path = paths.TRAIN,
    out_dir: Path = paths.PSEUDO,
    checkpoints: Path = paths.CHECKPOINTS,
) -> None:
    exp = config.load(params)
    (checkpoints / "pseudo").mkdir(parents=True, exist_ok=True)  # a declared output, even when unused
    if exp.dataset.unlabeled_dataframe is None:
        tmp = out_dir.with_name(out_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(train_dir, tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
        log.info("no unlabeled_dataframe: the first-round models pass through to %s", out_dir)
        return
    argv = ["--params", params, "--split", split_dir, "--train", train_dir, "--out", out_dir]
    argv += ["--checkpoints", checkpoints]
    if distributed.relaunch(exp.environment, "stages.pseudo_label", [str(a) for a in argv]):
        return  # environment.number_of_gpus > 1: torchrun's processes did the work
    problem = problems.of(exp)
    info = io.read_json(split_dir / paths.DATA_INFO_FILE)
    exp = problem.data.resolve(exp, info)
    folds = io.read_frame(split_dir / paths.FOLDS_FILE)
    unlabeled = problem.read_frame(exp.dataset.unlabeled_dataframe)
    dev = runtime.device(exp.environment)
    labeled = problem.encode(folds, exp, info)
    fold_targets = {}
    for fold in exp.dataset.folds:
        model_exp, models = fitting.load_models(train_dir, problem, info, fold)
        pseudo = inference.predict(
            fitting.to_device(models, dev),
            problems.of(model_exp),  # softmax or sigmoid, as the models were trained
            problem.files(unlabeled, exp),
            problem.data.of_models(exp, model_exp),
            dev,
            f"pseudo-labeling for fold {fold}",
        )
        fold_targets[fold] = np.concatenate([labeled, pseudo.astype(np.float32)])
    log.info("pseudo-labeled %d unlabeled rows, each fold with its own models", len(unlabeled))
    extra = unlabeled.reset_index(drop=True).copy()
    extra[splitting.ROW_ID] = np.arange(len(extra)) + int(folds[splitting.ROW_ID].max()) + 1
    extra[splitting.FOLD] = -1  # pseudo-labeled rows only ever train
    frame = pd.concat([folds, extra], ignore_index=True)
    targets = next(iter(fold_targets.values()))
    oof = fitting.fit_folds(
        exp,
        problem,
        info,
        frame,
        targets,
        out_dir,
        checkpoints / "pseudo",
        fold_targets=fold_targets,
        stage="pseudo_label",
    )
    oof = oof[oof[splitting.ROW_ID].isin(folds[splitting.ROW_ID])]
    io.write_frame(oof, out_dir / paths.OOF_FILE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    parser.add_argument("--train", type=Path, default=paths.TRAIN)
    parser.add_argument("--out", type=Path, default=paths.PSEUDO)
    parser.add_argument("--checkpoints", type=Path, default=paths.CHECKPOINTS)
    args = parser.parse_args()
    cli.run(main, args.params, args.split, args.train, args.out, args.checkpoints)
