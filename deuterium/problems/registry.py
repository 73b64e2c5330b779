"""Problem types are (data type, task) pairs: `image_classification` is the image data type with the
classification task. Every data type is paired with each task it lists, so a new data type registers its
problem types by registering itself. The rest of the code only asks this registry."""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import create_model
from torch import Tensor, nn

from deuterium import data_types, io, losses, tasks
from deuterium.data_types import DataType
from deuterium.errors import ConfigError
from deuterium.settings import DatasetSettings, ExperimentBase
from deuterium.tasks import Metric, Task


@functools.cache
def _pairs() -> dict[str, tuple[type[DataType], type[Task]]]:
    known = tasks.registered()
    return {
        f"{dt.name}_{task}": (dt, known[task])
        for dt in data_types.registered().values()
        for task in dt.tasks
        if task in known
    }


def names() -> list[str]:
    return sorted(_pairs())


@functools.cache
def settings_model(name: str) -> type[ExperimentBase]:
    """params.yaml's schema for this problem type: the shared sections, the data type's, the task's."""
    dt, task = _pairs()[name]
    title = "".join(part.title() for part in name.split("_"))
    dataset = create_model(f"{title}Dataset", __base__=DatasetSettings, **dt.dataset_fields)
    prediction = create_model(f"{title}Prediction", __base__=(task.Prediction, dt.Prediction))
    model = create_model(
        f"{title}Settings",
        __base__=ExperimentBase,
        problem_type=(Literal[name], ...),
        dataset=(dataset, ...),
        training=(task.Training, task.Training()),
        prediction=(prediction, prediction()),
        augmentation=(dt.Augmentation, dt.Augmentation()),
        logging=(dt.Logging, dt.Logging()),
        **{dt.name: (dt.Settings, dt.Settings())},
    )
    model.data_section = dt.name
    reads_architecture = "architecture" not in dt.unread_settings
    model.data_checks = (*dt.settings_checks, *((_known_backbone,) if reads_architecture else ()))
    return model


def _known_backbone(exp: ExperimentBase) -> None:
    """At load, so a misspelt backbone stops `dvc repro` before the data is validated and split, not at
    the train stage; for the data types that read the architecture section (a table's network is its
    own: its configs say `backbone: none`). timm is imported here, not at the top: the service reads no
    settings and runs without torch."""
    from deuterium.models.timm_model import unknown_backbone

    if why := unknown_backbone(exp.architecture.backbone):
        raise ValueError(why)


def settings_models() -> list[type[ExperimentBase]]:
    return [settings_model(n) for n in names()]


class ProblemType:
    """A data type and a task serving one experiment; the stages call these and never name either."""

    def __init__(self, name: str, exp: ExperimentBase | None = None):
        if name not in _pairs():
            raise ConfigError(f"unknown problem_type {name!r}; registered: {', '.join(names())}")
        data_type, task = _pairs()[name]
        self.name, self.exp = name, exp
        self.data: DataType = data_type(exp)
        self.task: Task = task(exp)
        self.label_kind = task.label_kind
        self.Settings = settings_model(name)

    def read_frame(self, path) -> pd.DataFrame:
        """One of the experiment's dataframe files, its class names as written (io.read_frame)."""
        return io.read_frame(path, self.task.text_columns(self.exp) if self.exp is not None else ())

    def row_weights(self, frame: pd.DataFrame, exp: ExperimentBase):
        """Each row's weight in the metrics (the data type's: a table's weights_column), or None."""
        return self.data.row_weights(frame, exp)

    # --- the task: labels, loss, activation, metrics, plots -----------------------------------
    def label_info(self, frame: pd.DataFrame, exp: ExperimentBase) -> dict:
        return self.task.label_info(frame, exp)

    def n_outputs(self, info: dict) -> int:
        return self.task.n_outputs(info)

    def encode(self, frame: pd.DataFrame, exp: ExperimentBase, info: dict) -> np.ndarray:
        return self.task.encode(frame, exp, info)

    def target_scale(self, exp: ExperimentBase, info: dict) -> tuple[list[float], list[float]] | None:
        """Each output's (mean, sd) the model scales its net's output by, or None (see Task.target_scale)."""
        return self.task.target_scale(exp, info) if self.data.takes_target_scale else None

    def loss(self, exp: ExperimentBase, scale: tuple[list[float], list[float]] | None = None) -> nn.Module:
        """The task's loss; with a target scale, on standardized values (losses.Standardized)."""
        loss = self.task.loss(exp)
        return loss if scale is None else losses.Standardized(loss, scale[1])

    def activate(self, logits: Tensor) -> Tensor:
        return self.task.activate(logits)

    def metrics(self) -> dict[str, Metric]:
        return self.task.metrics()

    def truth(self, targets: np.ndarray) -> np.ndarray:
        return self.task.truth(targets)

    def output_columns(self, info: dict) -> list[str]:
        return self.task.output_columns(info)

    def prediction_columns(self, preds: np.ndarray, info: dict) -> pd.DataFrame:
        return self.task.prediction_columns(preds, info)

    def plot(self, targets: np.ndarray, preds: np.ndarray, info: dict) -> dict[str, pd.DataFrame]:
        return self.task.plot(targets, preds, info)

    # --- the data type: rows -> model input ---------------------------------------------------
    def files(self, frame: pd.DataFrame, exp: ExperimentBase, data_folder=None) -> list:
        return self.data.files(frame, exp, data_folder)

    def dataset(self, frame: pd.DataFrame, exp: ExperimentBase, targets: np.ndarray, seed: int):
        return self.data.dataset(self.files(frame, exp), targets, exp, seed)

    def batch_augmenter(self, exp: ExperimentBase):
        return self.data.batch_augmenter(exp)

    def model(
        self, exp: ExperimentBase, n_outputs: int, scale: tuple[list[float], list[float]] | None = None
    ) -> nn.Module:
        """The data type's model; with a target scale (`target_scale`), its outputs are net * sd + mean."""
        model = self.data.model(exp, n_outputs)
        if scale is not None:
            model.set_output_scale(*scale)
        return model

    def decoder(self, exp: ExperimentBase, bounded: bool = False) -> data_types.Decoder:
        return self.data.decoder(self.data.preprocessing(exp), bounded)


def get(name: str, exp: ExperimentBase | None = None) -> ProblemType:
    return ProblemType(name, exp)


def of(exp: ExperimentBase) -> ProblemType:
    """The problem type of `exp`, serving it (multi-label classification differs from single-label)."""
    return get(exp.problem_type, exp)
