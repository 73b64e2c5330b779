"""Train every selected fold and collect out-of-fold predictions; load trained fold models back."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from safetensors.torch import load_file
from torch import nn

from deuterium import config, io, paths, splitting
from deuterium.errors import DataError
from deuterium.problems.base import ProblemType
from deuterium.settings import ExperimentBase
from deuterium.training import train_fold

log = logging.getLogger(__name__)


def fit_folds(
    exp: ExperimentBase,
    problem: ProblemType,
    info: dict,
    frame: pd.DataFrame,
    targets: np.ndarray,
    out_dir: Path,
    checkpoints: Path,
) -> pd.DataFrame:
    """Train one model per selected fold into out_dir/fold{k}; write and return out_dir/oof.parquet."""
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    oof_parts = []
    live = Live(str(tmp / "dvclive"), report=None, save_dvc_exp=False, dvcyaml=None)
    for fold in exp.dataset.folds:
        is_valid = (frame[splitting.FOLD] == fold).to_numpy()
        if not (~is_valid).any():
            raise DataError(f"fold {fold} has no training rows")
        result = train_fold(
            exp,
            problem,
            info,
            frame[~is_valid].reset_index(drop=True),
            targets[~is_valid],
            frame[is_valid].reset_index(drop=True),
            targets[is_valid],
            fold,
            tmp,
            checkpoints,
            live,
        )
        if result.predictions is not None:
            part = frame.loc[is_valid, [splitting.ROW_ID, splitting.FOLD]].reset_index(drop=True)
            oof_parts.append(pd.concat([part, problem.prediction_columns(result.predictions, info)], axis=1))
    live.end()
    oof = (
        pd.concat(oof_parts, ignore_index=True)
        if oof_parts
        else pd.DataFrame(columns=[splitting.ROW_ID, splitting.FOLD])
    )
    io.write_frame(oof, tmp / paths.OOF_FILE)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return oof


def model_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.glob("fold*") if (p / paths.MODEL_FILE).is_file())
    if not folders:
        raise DataError(f"{root}: no trained fold models; run the train stage first (dvc repro)")
    return folders


def load_models(root: Path, problem: ProblemType, info: dict) -> tuple[ExperimentBase, list[nn.Module]]:
    models, exp = [], None
    for folder in model_folders(root):
        exp = config.load(folder / paths.CONFIG_FILE)
        model = problem.model(exp, problem.n_outputs(info))
        model.load_state_dict(load_file(str(folder / paths.MODEL_FILE)))
        models.append(model.eval())
    return exp, models


def predictions_from(oof: pd.DataFrame) -> np.ndarray:
    cols = [c for c in oof.columns if c.startswith(("prob_", "predicted_")) and c != "predicted_label"]
    return oof[cols].to_numpy(dtype=np.float32)


def to_device(models: list[nn.Module], dev: torch.device) -> list[nn.Module]:
    return [m.to(dev) for m in models]
