"""Audio classification: one label column of class names; softmax over the classes."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm
from torch import Tensor, nn

from deuterium.errors import ConfigError, DataError
from deuterium.problems.audio import AudioProblem
from deuterium.problems.base import Metric
from deuterium.problems.registry import register
from deuterium.settings import ExperimentBase, PredictionBase, TrainingBase


class ClassificationTraining(TrainingBase):
    loss_function: Literal["cross_entropy", "classification"] = "cross_entropy"


class ClassificationPrediction(PredictionBase):
    metric: Literal["Accuracy", "LogLoss", "F1", "Precision", "Recall", "MCC", "ROC_AUC"] = "Accuracy"


class AudioClassificationSettings(ExperimentBase):
    problem_type: Literal["audio_classification"]
    training: ClassificationTraining = ClassificationTraining()
    prediction: ClassificationPrediction = ClassificationPrediction()


def _labels(probs: np.ndarray) -> np.ndarray:
    return probs.argmax(axis=1)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    if p.shape[1] == 2:
        return skm.roc_auc_score(y, p[:, 1])
    return skm.roc_auc_score(y, p, multi_class="ovr", labels=list(range(p.shape[1])))


_METRICS = {
    "Accuracy": Metric(lambda y, p: skm.accuracy_score(y, _labels(p)), True),
    "LogLoss": Metric(
        lambda y, p: skm.log_loss(y, np.clip(p, 1e-7, 1), labels=list(range(p.shape[1]))), False
    ),
    "F1": Metric(lambda y, p: skm.f1_score(y, _labels(p), average="macro", zero_division=0), True),
    "Precision": Metric(
        lambda y, p: skm.precision_score(y, _labels(p), average="macro", zero_division=0), True
    ),
    "Recall": Metric(lambda y, p: skm.recall_score(y, _labels(p), average="macro", zero_division=0), True),
    "MCC": Metric(lambda y, p: skm.matthews_corrcoef(y, _labels(p)), True),
    "ROC_AUC": Metric(_auc, True),
}


@register("audio_classification")
class AudioClassification(AudioProblem):
    Settings = AudioClassificationSettings
    label_kind = "categorical"

    def _column(self, exp: ExperimentBase) -> str:
        if len(exp.dataset.label_columns) != 1:
            raise ConfigError("dataset.label_columns: audio_classification takes exactly one label column")
        return exp.dataset.label_columns[0]

    def label_info(self, frame: pd.DataFrame, exp: ExperimentBase) -> dict:
        classes = sorted({str(v) for v in frame[self._column(exp)].dropna()})
        if len(classes) < 2:
            raise DataError(f"{self._column(exp)}: classification needs at least 2 classes, found {classes}")
        return {"labels": classes, "target_names": [self._column(exp)]}

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
        return np.eye(len(info["labels"]), dtype=np.float32)[self.class_index(frame, exp, info)]

    def loss(self, exp: ExperimentBase) -> nn.Module:
        return nn.CrossEntropyLoss()  # takes the (soft) probability targets from encode/pseudo labels

    def activate(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, dim=1)

    def metrics(self) -> dict[str, Metric]:
        return _METRICS

    def truth(self, targets: np.ndarray) -> np.ndarray:
        return targets.argmax(axis=1)

    def prediction_columns(self, preds: np.ndarray, info: dict) -> pd.DataFrame:
        out = pd.DataFrame(preds, columns=[f"prob_{c}" for c in info["labels"]])
        out.insert(0, "predicted_label", np.asarray(info["labels"])[preds.argmax(axis=1)])
        return out

    def plot(self, targets: np.ndarray, preds: np.ndarray, info: dict) -> dict[str, pd.DataFrame]:
        names = np.asarray(info["labels"])
        return {
            "confusion": pd.DataFrame(
                {"actual": names[self.truth(targets)], "predicted": names[preds.argmax(1)]}
            )
        }
