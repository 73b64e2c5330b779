"""Anomaly detection: an autoencoder learns the training rows; a row's score is its reconstruction error
(the mean squared difference between the row, as the model encodes it, and its reconstruction).

The label column is optional knowledge: 1 for a known anomaly, 0 otherwise (training rows are assumed
normal and their labels are not trained on). With both kinds among the scored rows, AUC says how well the
error ranks the known anomalies first.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from torch import Tensor, nn

from deuterium.errors import DataError
from deuterium.settings import ExperimentBase, PredictionBase, TrainingBase
from deuterium.tasks.base import Metric, Task, register

SCORE = "reconstruction_error"


class AnomalyTraining(TrainingBase):
    loss_function: Literal["mse"] = "mse"


class AnomalyPrediction(PredictionBase):
    metric: Literal["reconstruction_MSE", "AUC"] = "reconstruction_MSE"


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(y, p[:, 0], sample_weight=w))


_METRICS = {
    "reconstruction_MSE": Metric(lambda y, p, w=None: float(np.average(p[:, 0], weights=w)), False),
    "AUC": Metric(_auc, True),
}


class _MeanOutput(nn.Module):
    """The model's output is already the per-row error: the loss is its mean."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return pred.mean()


@register("anomaly")
class Anomaly(Task):
    Training = AnomalyTraining
    Prediction = AnomalyPrediction
    label_kind = "numeric"

    def label_info(self, frame: pd.DataFrame, exp: ExperimentBase) -> dict:
        return {"target_names": [SCORE], "label_column": exp.dataset.label_columns[0]}

    def n_outputs(self, info: dict) -> int:
        return 1

    def encode(self, frame: pd.DataFrame, exp: ExperimentBase, info: dict) -> np.ndarray:
        column = exp.dataset.label_columns[0]
        if column not in frame:
            return np.zeros((len(frame), 1), np.float32)
        values = pd.to_numeric(frame[column], errors="coerce").fillna(0).to_numpy(np.float32)
        if not np.isin(values, (0, 1)).all():
            raise DataError(f"{column}: the anomaly label is 0 (normal) or 1 (known anomaly)")
        return values[:, None]

    def loss(self, exp: ExperimentBase) -> nn.Module:
        return _MeanOutput()

    def activate(self, logits: Tensor) -> Tensor:
        return logits

    def metrics(self) -> dict[str, Metric]:
        return _METRICS

    def truth(self, targets: np.ndarray) -> np.ndarray:
        return targets[:, 0]

    def output_columns(self, info: dict) -> list[str]:
        return [SCORE]

    def prediction_columns(self, preds: np.ndarray, info: dict) -> pd.DataFrame:
        frame = pd.DataFrame(preds, columns=[SCORE])
        frame["rank"] = frame[SCORE].rank(ascending=False, method="first").astype(int)
        return frame

    def plot(self, targets: np.ndarray, preds: np.ndarray, info: dict) -> dict[str, pd.DataFrame]:
        return {
            "reconstruction_error": pd.DataFrame(
                {"row": np.arange(len(preds)), SCORE: preds[:, 0], "label": targets[:, 0]}
            )
        }
