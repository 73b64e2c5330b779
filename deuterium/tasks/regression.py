"""Regression: one or more numeric label columns, one output each."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch import Tensor, nn

from deuterium.errors import DataError
from deuterium.settings import ExperimentBase, PredictionBase, TrainingBase
from deuterium.tasks.base import Metric, Task, register, weighted


class RegressionTraining(TrainingBase):
    loss_function: Literal["mae", "mse", "rmse"] = "mse"
    # the net learns (target - mean) / sd of the training targets, and the model's last step scales back, so
    # predictions, metrics and the ONNX graph are in the targets' own units (H2O-3's `standardize`). Without
    # it a target in the thousands takes the head thousands of optimizer steps to reach.
    standardize_targets: bool = True


class RegressionPrediction(PredictionBase):
    metric: Literal["MAE", "MSE", "RMSE", "MAPE", "SMAPE", "R2"] = "MAE"


class RMSELoss(nn.Module):
    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return torch.sqrt(nn.functional.mse_loss(pred, target) + 1e-8)


def _numeric(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The label columns as numbers; what is not a number is NaN."""
    return frame[cols].apply(pd.to_numeric, errors="coerce")


def _smape(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    denom = np.abs(y) + np.abs(p)
    each = np.where(denom == 0, 0.0, 2 * np.abs(p - y) / np.where(denom == 0, 1, denom))
    return float(np.average(each.mean(axis=1) if each.ndim == 2 else each, weights=w))


_METRICS = {
    "MAE": Metric(weighted(skm.mean_absolute_error), False),
    "MSE": Metric(weighted(skm.mean_squared_error), False),
    "RMSE": Metric(weighted(skm.root_mean_squared_error), False),
    "MAPE": Metric(weighted(skm.mean_absolute_percentage_error), False),
    "SMAPE": Metric(_smape, False),
    "R2": Metric(weighted(skm.r2_score), True),
}


@register("regression")
class Regression(Task):
    Training = RegressionTraining
    Prediction = RegressionPrediction
    label_kind = "numeric"

    def label_info(self, frame: pd.DataFrame, exp: ExperimentBase) -> dict:
        cols = list(exp.dataset.label_columns)
        numeric = _numeric(frame, cols).replace([np.inf, -np.inf], np.nan)  # encode names a bad row; not here
        mean, sd = numeric.mean(), numeric.std(ddof=0)  # missing values skipped; an all-missing column: NaN
        return {
            "target_names": cols,
            "target_mean": [float(m) if np.isfinite(m) else 0.0 for m in mean],
            "target_sd": [float(d) if np.isfinite(d) and d > 0 else 1.0 for d in sd],
        }

    def target_scale(self, exp: ExperimentBase, info: dict) -> tuple[list[float], list[float]] | None:
        if not exp.training.standardize_targets or "target_mean" not in info:  # info of an older version
            return None
        return info["target_mean"], info["target_sd"]

    def n_outputs(self, info: dict) -> int:
        return len(info["target_names"])

    def encode(self, frame: pd.DataFrame, exp: ExperimentBase, info: dict) -> np.ndarray:
        cols = info["target_names"]
        values = _numeric(frame, cols).to_numpy(dtype=np.float32)
        if not np.isfinite(values).all():
            row, col = np.argwhere(~np.isfinite(values))[0]
            raise DataError(
                f"{cols[col]}: row {row + 1} is not a finite number ({frame[cols[col]].iloc[row]!r})"
            )
        return values

    def loss(self, exp: ExperimentBase) -> nn.Module:
        return {"mae": nn.L1Loss(), "mse": nn.MSELoss(), "rmse": RMSELoss()}[exp.training.loss_function]

    def activate(self, logits: Tensor) -> Tensor:
        return logits

    def metrics(self) -> dict[str, Metric]:
        return _METRICS

    def truth(self, targets: np.ndarray) -> np.ndarray:
        return targets

    def output_columns(self, info: dict) -> list[str]:
        return [f"predicted_{c}" for c in info["target_names"]]

    def prediction_columns(self, preds: np.ndarray, info: dict) -> pd.DataFrame:
        return pd.DataFrame(preds, columns=self.output_columns(info))

    def plot(self, targets: np.ndarray, preds: np.ndarray, info: dict) -> dict[str, pd.DataFrame]:
        name = info["target_names"][0]
        return {
            "predicted_vs_actual": pd.DataFrame(
                {"actual": targets[:, 0], "predicted": preds[:, 0], "target": name}
            )
        }
