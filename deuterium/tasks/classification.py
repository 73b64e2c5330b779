"""Classification: one label column of class names (softmax over the classes), or several 0/1 label
columns, one per class (multi-label: a row may have several classes; sigmoid per class).

Which activation the model ends with follows the loss: sigmoid for `bce` and `sigmoid_focal` (and for
`classification` with several label columns), softmax otherwise; the ONNX graph carries the same one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from sklearn import metrics as skm
from torch import Tensor, nn

from deuterium import losses
from deuterium.errors import ConfigError, DataError
from deuterium.settings import ExperimentBase, PredictionBase, TrainingBase
from deuterium.tasks.base import Metric, Task, register


class ClassificationTraining(TrainingBase):
    loss_function: Literal["cross_entropy", "classification", "bce", "sigmoid_focal", "softmax_focal"] = (
        "cross_entropy"
    )
    # training targets moved towards uniform: (1 - s) * target + s / classes (losses.Smoothed)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ClassificationPrediction(PredictionBase):
    metric: Literal["Accuracy", "LogLoss", "F1", "F2", "F05", "Precision", "Recall", "MCC", "ROC_AUC"] = (
        "Accuracy"
    )


THRESHOLD = 0.5  # multi-label: a class is predicted when its probability reaches this


def _labels(probs: np.ndarray) -> np.ndarray:
    return probs.argmax(axis=1)


def _chosen(probs: np.ndarray) -> np.ndarray:
    return (probs >= THRESHOLD).astype(int)


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    if p.shape[1] == 2:
        return skm.roc_auc_score(y, p[:, 1], sample_weight=w)
    return skm.roc_auc_score(y, p, multi_class="ovr", labels=list(range(p.shape[1])), sample_weight=w)


def _decision_metrics(choose) -> dict[str, Metric]:
    """The metrics computed on decided labels (`choose`: probabilities -> labels), macro-averaged."""

    def macro(score, **kw):
        return Metric(
            lambda y, p, w=None: score(y, choose(p), average="macro", zero_division=0, sample_weight=w, **kw),
            True,
        )

    return {
        "Accuracy": Metric(lambda y, p, w=None: skm.accuracy_score(y, choose(p), sample_weight=w), True),
        "F1": macro(skm.f1_score),
        "F2": macro(skm.fbeta_score, beta=2),
        "F05": macro(skm.fbeta_score, beta=0.5),
        "Precision": macro(skm.precision_score),
        "Recall": macro(skm.recall_score),
    }


_METRICS = {
    **_decision_metrics(_labels),
    "LogLoss": Metric(
        lambda y, p, w=None: skm.log_loss(
            y, np.clip(p, 1e-7, 1), labels=list(range(p.shape[1])), sample_weight=w
        ),
        False,
    ),
    "MCC": Metric(lambda y, p, w=None: skm.matthews_corrcoef(y, _labels(p), sample_weight=w), True),
    "ROC_AUC": Metric(_auc, True),
}

# Multi-label: truth is the 0/1 matrix; Accuracy is exact match of the whole row, F/Precision/Recall are
# macro averages over the classes, LogLoss and MCC are over every (row, class) decision.
_MULTI_LABEL_METRICS = {
    **_decision_metrics(_chosen),
    "LogLoss": Metric(
        lambda y, p, w=None: skm.log_loss(
            y.ravel(), np.clip(p, 1e-7, 1 - 1e-7).ravel(), labels=[0, 1], sample_weight=_each(w, y)
        ),
        False,
    ),
    "MCC": Metric(
        lambda y, p, w=None: skm.matthews_corrcoef(y.ravel(), _chosen(p).ravel(), sample_weight=_each(w, y)),
        True,
    ),
    "ROC_AUC": Metric(lambda y, p, w=None: skm.roc_auc_score(y, p, average="macro", sample_weight=w), True),
}


def _each(w: np.ndarray | None, y: np.ndarray) -> np.ndarray | None:
    """A row's weight for each of its (row, class) decisions, as y.ravel() orders them."""
    return None if w is None else np.repeat(w, y.shape[1])


@register("classification")
class Classification(Task):
    Training = ClassificationTraining
    Prediction = ClassificationPrediction
    label_kind = "categorical"

    def _column(self, exp: ExperimentBase) -> str:
        if len(exp.dataset.label_columns) != 1:
            raise ConfigError(
                "dataset.label_columns: single-label classification takes exactly one label column"
            )
        return exp.dataset.label_columns[0]

    def label_info(self, frame: pd.DataFrame, exp: ExperimentBase) -> dict:
        if self.multi_label(exp):
            columns = list(exp.dataset.label_columns)
            return {"labels": columns, "target_names": columns, "multi_label": True}
        classes = sorted({str(v) for v in frame[self._column(exp)].dropna()})
        if len(classes) < 2:
            raise DataError(f"{self._column(exp)}: classification needs at least 2 classes, found {classes}")
        return {"labels": classes, "target_names": [self._column(exp)]}

    def text_columns(self, exp: ExperimentBase) -> list[str]:
        return [] if self.multi_label(exp) else [self._column(exp)]

    def n_outputs(self, info: dict) -> int:
        return len(info["labels"])

    def class_index(self, frame: pd.DataFrame, exp: ExperimentBase, info: dict) -> np.ndarray:
        index = {c: i for i, c in enumerate(info["labels"])}
        values = frame[self._column(exp)].astype(str)
        unknown = sorted(set(values) - set(index))
        if unknown:
            raise DataError(f"{self._column(exp)}: classes {unknown[:10]} were not in the training data")
        return values.map(index).to_numpy()

    def encode(self, frame: pd.DataFrame, exp: ExperimentBase, info: dict) -> np.ndarray:
        if info.get("multi_label"):
            values = frame[info["labels"]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
            bad = ~np.isin(values, (0.0, 1.0))
            if bad.any():
                row, col = np.argwhere(bad)[0]
                column = info["labels"][col]
                value = frame[column].iloc[row]
                value = value.item() if isinstance(value, np.generic) else value
                raise DataError(f"{column}: row {row + 1} is {value!r}; multi-label columns hold 0 or 1")
            return values
        return np.eye(len(info["labels"]), dtype=np.float32)[self.class_index(frame, exp, info)]

    def multi_label(self, exp: ExperimentBase) -> bool:
        """Whether a row may have several classes at once: several 0/1 label columns, one per class."""
        return len(exp.dataset.label_columns) > 1

    def sigmoid(self, exp: ExperimentBase) -> bool:
        """Whether the outputs are independent per-class probabilities (sigmoid) rather than a softmax."""
        loss = exp.training.loss_function
        if loss == "classification":
            return self.multi_label(exp)
        return loss in ("bce", "sigmoid_focal")

    def loss(self, exp: ExperimentBase) -> nn.Module:
        return losses.classification(
            exp.training.loss_function, self.multi_label(exp), exp.training.label_smoothing
        )

    def activate(self, logits: Tensor) -> Tensor:
        if self.exp is not None and self.sigmoid(self.exp):
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def metrics(self) -> dict[str, Metric]:
        return _MULTI_LABEL_METRICS if self.exp is not None and self.multi_label(self.exp) else _METRICS

    def truth(self, targets: np.ndarray) -> np.ndarray:
        if self.exp is not None and self.multi_label(self.exp):
            return (targets >= THRESHOLD).astype(int)
        return targets.argmax(axis=1)

    def output_columns(self, info: dict) -> list[str]:
        return [f"prob_{c}" for c in info["labels"]]

    def prediction_columns(self, preds: np.ndarray, info: dict) -> pd.DataFrame:
        out = pd.DataFrame(preds, columns=self.output_columns(info))
        labels = np.asarray(info["labels"])
        if info.get("multi_label"):
            out.insert(0, "predicted_labels", [";".join(labels[row >= THRESHOLD]) for row in preds])
        else:
            out.insert(0, "predicted_label", labels[preds.argmax(axis=1)])
        return out

    def plot(self, targets: np.ndarray, preds: np.ndarray, info: dict) -> dict[str, pd.DataFrame]:
        if info.get("multi_label"):
            return {}  # a confusion matrix is for one class per row
        names = np.asarray(info["labels"])
        return {
            "confusion": pd.DataFrame(
                {"actual": names[self.truth(targets)], "predicted": names[preds.argmax(1)]}
            )
        }
