"""What a task provides: labels, loss, activation, metrics and plots, the same for every data type.

A task (classification, regression) is one module with `@register("name")` on its class; deuterium.problems
pairs it with every data type that takes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from torch import Tensor, nn

from deuterium.plugins import Registry
from deuterium.settings import ExperimentBase, PredictionBase, TrainingBase

_PLUGINS: Registry = Registry("task")
register = _PLUGINS.register
registered = _PLUGINS.registered


@dataclass(frozen=True)
class Metric:
    # (targets, predictions after activation, row weights or None) -> value; the weights are H2O-3's
    # weights_column: a row counts as many times as its weight (0: not at all)
    fn: Callable[..., float]
    greater_is_better: bool


def weighted(score: Callable[..., float], **kw) -> Callable[..., float]:
    """A scikit-learn metric as a Metric's fn: the row weights as its `sample_weight`."""
    return lambda y, p, w=None: score(y, p, sample_weight=w, **kw)


class Task:
    name: ClassVar[str]
    Training: ClassVar[type[TrainingBase]]  # the training section, with this task's losses
    Prediction: ClassVar[type[PredictionBase]]  # the prediction section's keys, with this task's metrics
    label_kind: ClassVar[Literal["categorical", "numeric"]]

    def __init__(self, exp: ExperimentBase | None = None):
        # The experiment it serves: what activate, truth and metrics do may depend on it.
        self.exp = exp

    def label_info(self, frame: pd.DataFrame, exp: ExperimentBase) -> dict:
        """What later stages need to know about the labels (class names...), from the training frame."""
        raise NotImplementedError

    def text_columns(self, exp: ExperimentBase) -> list[str]:
        """The label columns whose values are names, read from a file as written (see io.read_frame)."""
        return []

    def n_outputs(self, info: dict) -> int:
        raise NotImplementedError

    def encode(self, frame: pd.DataFrame, exp: ExperimentBase, info: dict) -> np.ndarray:
        """Targets as float32 [n, n_outputs] (one-hot for single-label classification)."""
        raise NotImplementedError

    def loss(self, exp: ExperimentBase) -> nn.Module:
        raise NotImplementedError

    def target_scale(self, exp: ExperimentBase, info: dict) -> tuple[list[float], list[float]] | None:
        """Each output's (mean, sd) when the net learns standardized targets and the model scales back
        (regression); None when the outputs are used as they are."""
        return None

    def activate(self, logits: Tensor) -> Tensor:
        """Logits -> what a client gets (probabilities, values). Part of the ONNX graph."""
        raise NotImplementedError

    def metrics(self) -> dict[str, Metric]:
        raise NotImplementedError

    def truth(self, targets: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def output_columns(self, info: dict) -> list[str]:
        """The names of the model's output columns in prediction frames (the numbers evaluate reads back)."""
        raise NotImplementedError

    def prediction_columns(self, preds: np.ndarray, info: dict) -> pd.DataFrame:
        """The outputs under `output_columns`, with whatever a person reads besides (the decided label)."""
        raise NotImplementedError

    def plot(self, targets: np.ndarray, preds: np.ndarray, info: dict) -> dict[str, pd.DataFrame]:
        """DVC plot tables by file stem (confusion pairs, predicted vs actual)."""
        raise NotImplementedError
