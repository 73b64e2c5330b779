"""What a problem type provides. Shared machinery (training loop, splitting, export) only calls these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
from torch import Tensor, nn

from deuterium.settings import ExperimentBase


@dataclass(frozen=True)
class Metric:
    fn: Callable[[np.ndarray, np.ndarray], float]  # (targets, predictions after activation) -> value
    greater_is_better: bool


class ProblemType:
    name: ClassVar[str]
    Settings: ClassVar[type[ExperimentBase]]
    label_kind: ClassVar[Literal["categorical", "numeric"]]

    def __init__(self, exp: ExperimentBase | None = None):
        # The experiment it serves (problems.of): what activate, truth and metrics do may depend on it.
        self.exp = exp

    # --- labels -----------------------------------------------------------------
    def label_info(self, frame: pd.DataFrame, exp: ExperimentBase) -> dict:
        """What later stages need to know about the labels (class names...), from the training frame."""
        raise NotImplementedError

    def n_outputs(self, info: dict) -> int:
        raise NotImplementedError

    def encode(self, frame: pd.DataFrame, exp: ExperimentBase, info: dict) -> np.ndarray:
        """Targets as float32 [n, n_outputs] (one-hot for single-label classification)."""
        raise NotImplementedError

    # --- model ------------------------------------------------------------------
    def model(self, exp: ExperimentBase, n_outputs: int) -> nn.Module:
        raise NotImplementedError

    def loss(self, exp: ExperimentBase) -> nn.Module:
        raise NotImplementedError

    def activate(self, logits: Tensor) -> Tensor:
        """Logits -> what a client gets (probabilities, values). Part of the ONNX graph."""
        raise NotImplementedError

    # --- evaluation ---------------------------------------------------------------
    def metrics(self) -> dict[str, Metric]:
        raise NotImplementedError

    def prediction_columns(self, preds: np.ndarray, info: dict) -> pd.DataFrame:
        raise NotImplementedError

    def plot(self, targets: np.ndarray, preds: np.ndarray, info: dict) -> dict[str, pd.DataFrame]:
        """DVC plot tables by file stem (confusion pairs, predicted vs actual)."""
        raise NotImplementedError
