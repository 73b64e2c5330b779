"""Train every selected fold (and seed) and collect out-of-fold predictions; load trained models back."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from safetensors.torch import load_file
from torch import nn

from deuterium import config, distributed, io, paths, splitting
from deuterium.errors import DataError
from deuterium.problems import ProblemType
from deuterium.settings import ExperimentBase
from deuterium.training import RunState, train_fold

log = logging.getLogger(__name__)


class _Silent:
    """Stands in for dvclive on the torchrun processes other than rank 0."""

    step = 0

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def fit_folds(
    exp: ExperimentBase,
    problem: ProblemType,
    info: dict,
    frame: pd.DataFrame,
    targets: np.ndarray,
    out_dir: Path,
    checkpoints: Path,
    fold_targets: dict[int, np.ndarray] | None = None,
    stage: str = "train",
    after_epoch: Callable[[str, RunState], None] | None = None,
    adopt: bool = False,
) -> pd.DataFrame:
    """Train number_of_seeds models per selected fold into out_dir/fold{k} (fold{k}/seed{s} with several seeds).

    `fold_targets`: targets for fold k in place of `targets` (pseudo labels made by fold k's own models).
    `stage`: the dvc.yaml stage running it, whose code a checkpoint must match to be resumed.
    `after_epoch`, `adopt`: passed to each run (train_fold); the hyperparameter search uses them.

    Writes and returns out_dir/oof.parquet: each fold's validation predictions, averaged over its seeds;
    with several seeds also out_dir/seeds.json, every seed's score and their spread. Under torchrun every
    process trains and rank 0 alone writes.
    """
    tmp = out_dir.with_name(out_dir.name + ".partial")
    distributed.init(exp.environment)
    main = distributed.is_main()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)  # a resumed run's curves come back from its checkpoints
    live = Live(str(tmp / "dvclive"), report=None, save_dvc_exp=False, dvcyaml=None) if main else _Silent()
    metric = problem.metrics()[exp.prediction.metric]
    n_seeds = exp.environment.number_of_seeds
    oof_parts, seeds = [], {}
    for fold in exp.dataset.folds:
        targets_k = (fold_targets or {}).get(fold, targets)
        trains, is_valid = fold_rows(exp, info, frame, fold)
        trainer = problem.data.trainer() or train_fold
        results = [
            trainer(
                exp,
                problem,
                info,
                frame[trains].reset_index(drop=True),
                targets_k[trains],
                frame[is_valid].reset_index(drop=True),
                targets_k[is_valid],
                fold,
                tmp,
                checkpoints,
                live,
                seed_index=seed_index,
                stage=stage,
                after_epoch=after_epoch,
                adopt=adopt,
            )
            for seed_index in range(n_seeds)
        ]
        if not main or results[0].predictions is None:
            continue
        preds = np.mean([r.predictions for r in results], axis=0)
        part = frame.loc[is_valid, [splitting.ROW_ID, splitting.FOLD]].reset_index(drop=True)
        oof_parts.append(pd.concat([part, problem.prediction_columns(preds, info)], axis=1))
        if n_seeds > 1:
            scores = [r.score for r in results]
            seeds[f"fold{fold}"] = {
                "seeds": [r.seed for r in results],
                exp.prediction.metric: scores,
                "mean": float(np.mean(scores)),
                "std": float(np.std(scores)),
                "averaged_predictions": float(metric.fn(problem.truth(targets_k[is_valid]), preds)),
            }
            live.log_metric(f"fold{fold}/valid/{exp.prediction.metric}_seed_std", float(np.std(scores)))
    if distributed.active():
        torch.distributed.barrier()  # the others wait for rank 0's last validation
        distributed.shutdown()
    if not main:
        return pd.DataFrame(columns=[splitting.ROW_ID, splitting.FOLD])
    live.end()
    oof = (
        pd.concat(oof_parts, ignore_index=True)
        if oof_parts
        else pd.DataFrame(columns=[splitting.ROW_ID, splitting.FOLD])
    )
    io.write_frame(oof, tmp / paths.OOF_FILE)
    io.write_json(info, tmp / paths.DATA_INFO_FILE)  # the labels travel with the models (previous_experiment)
    if seeds:
        io.write_json({"metric": exp.prediction.metric, **seeds}, tmp / paths.SEEDS_FILE)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return oof


def fold_rows(
    exp: ExperimentBase, info: dict, frame: pd.DataFrame, fold: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold `fold`'s (training, validation) row masks of `frame`, after dataset.data_sample."""
    is_valid = (frame[splitting.FOLD] == fold).to_numpy()
    if not (~is_valid).any():
        raise DataError(f"fold {fold} has no training rows")
    trains = ~is_valid | exp.training.train_validation_data  # HT: also train on the validation rows
    seed = info.get("split_seed", exp.environment.seed)  # the split's own (drawn when the setting is -1)
    return splitting.sample_fold(frame, trains, is_valid, exp.dataset, seed)


def model_folders(root: Path) -> list[Path]:
    found = [*root.glob(f"fold*/{paths.MODEL_FILE}"), *root.glob(f"fold*/seed*/{paths.MODEL_FILE}")]
    folders = sorted(p.parent for p in found)
    if not folders:
        raise DataError(f"{root}: no trained fold models; run the train stage first (dvc repro)")
    return folders


def fold_of(folder: Path) -> int:
    """The fold a model folder belongs to: fold{k} or fold{k}/seed{s}."""
    name = folder.name if folder.name.startswith("fold") else folder.parent.name
    return int(name.removeprefix("fold"))


def load_models(
    root: Path, problem: ProblemType, info: dict, fold: int | None = None
) -> tuple[ExperimentBase, list[nn.Module]]:
    """The trained models under `root` (only fold `fold`'s, when given) and the resolved config they share."""
    models, exp = [], None
    folders = [f for f in model_folders(root) if fold is None or fold_of(f) == fold]
    if not folders:
        raise DataError(f"{root}: no trained model of fold {fold}; run the train stage first (dvc repro)")
    for folder in folders:
        exp = config.load(folder / paths.CONFIG_FILE, inherit=False)  # resolved: complete as it is
        model = problem.model(exp, problem.n_outputs(info), problem.target_scale(exp, info))
        model.load_state_dict(load_file(str(folder / paths.MODEL_FILE)))
        models.append(model.eval())
    return exp, models


def predictions_from(oof: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The output columns (the problem type's `output_columns`) of a prediction frame, as float32.

    Named explicitly: a label column called `label` gives a regression output `predicted_label`, the name
    classification gives its decided label, so no pattern over the names can tell them apart."""
    missing = [c for c in columns if c not in oof.columns]
    if missing:
        raise DataError(f"prediction frame has no column(s) {missing}; rerun the train stage")
    return oof[columns].to_numpy(dtype=np.float32)


def beside(frame: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the prediction columns after it; a prediction column whose name the frame already has
    (a user's own `predicted_label`, `prob_a`...) gets `_predicted` appended, so nothing is overwritten."""
    taken = set(map(str, frame.columns))
    renames = {}
    for column in predictions.columns:
        name = column
        while name in taken:
            name += "_predicted"
        taken.add(name)
        renames[column] = name
    return pd.concat([frame.reset_index(drop=True), predictions.rename(columns=renames)], axis=1)


def to_device(models: list[nn.Module], dev: torch.device) -> list[nn.Module]:
    return [m.to(dev) for m in models]
