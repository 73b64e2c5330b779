"""Tables: a dataframe's own columns are the input (no files). H2O-3 Deep Learning's network and training.

The split stage fits the columns on the training frame (kinds, means, levels: `tabular.columns` of the
resolved experiment); the ONNX graph takes `features` float32 [batch, columns] and does imputation,
standardization and categorical encoding itself; the torch-free `TabularDecoder` turns a JSON row (or a
frame's row) into that vector. Training is H2O-3's (deuterium/data_types/tabular/trainer.py), not the
shared loop: its epochs, rates, momentum, constraints and stopping rules are H2O-3's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deuterium.data_types.base import DataType, register
from deuterium.data_types.tabular.decode import FrameRows
from deuterium.data_types.tabular.settings import (
    DATASET_FIELDS,
    TabularAugmentation,
    TabularLogging,
    TabularSettings,
    fold_assignment_fits,
)


@register("tabular")
class Tabular(DataType):
    noun = "row"
    Settings = TabularSettings
    Augmentation = TabularAugmentation
    Logging = TabularLogging
    dataset_fields = DATASET_FIELDS
    column_key = ""
    tasks = ("classification", "regression", "anomaly")
    file_suffixes = frozenset({".json"})
    scoring_requirements = ()
    front_end = "deuterium.data_types.tabular.model.Preprocess"
    takes_target_scale = False  # TabularNet standardizes its response itself (tabular.response_scale)
    unread_settings = {
        "training": "its training is H2O-3's, set under tabular; of training it reads train_validation_data",
        "architecture": "its network is tabular.hidden and tabular.activation",
    }
    read_anyway = ("training.train_validation_data",)
    decoder_class = "deuterium.data_types.tabular.decode:TabularDecoder"
    json_help = "one row: an object of column name -> value (a number, a level's text, or null when missing)"
    json_example = {"x1": 1.5, "colour": "red"}
    limits_example = {
        "n_columns": 2,
        "column_names": ["x1", "colour"],
        "max_keys": 1000,
        "max_json_bytes": 1048576,
    }
    settings_checks = (fold_assignment_fits,)

    def column(self, exp) -> str:
        return ""  # no column of files: every column is input

    def files(self, frame, exp, data_folder: Path | None = None) -> FrameRows:
        return FrameRows(frame)

    def check_file(self, path: Path, shown: str, exp) -> str | None:
        return None

    def check_rows(self, frame, train, exp):
        from deuterium.data_types.tabular import columns

        return columns.check_rows(frame, train, exp)

    def row_weights(self, frame, exp):
        """tabular.weights_column's values (empty: 0, as training takes them), as H2O-3 weighs its metrics;
        None for a frame without the column (a test frame may not have it: each row then counts once)."""
        from deuterium.data_types.tabular import columns  # not at import: the scoring side imports no pandas

        column = exp.tabular.weights_column
        if not column or column not in frame.columns:
            return None
        return columns.row_weights(frame, column)

    def fold_assignment(self, exp) -> str:
        return "random" if exp.tabular.fold_assignment == "auto" else exp.tabular.fold_assignment

    def choose(self, files: FrameRows, exp) -> dict:
        from deuterium.data_types.tabular import columns

        return columns.fit_all(files.frame, exp)

    def resolve(self, exp, info: dict):
        chosen = info.get("tabular") or {}
        if not chosen:
            return exp
        return exp.model_copy(update={"tabular": exp.tabular.model_copy(update=chosen)})

    def preprocessing(self, exp) -> dict:
        return {"columns": exp.tabular.columns or []}

    def trainer(self):
        from deuterium.data_types.tabular.trainer import train_fold

        return train_fold

    def fixed_by_pbt(self) -> list[str]:
        from deuterium.data_types.tabular.settings import ARCHITECTURE

        return [f"tabular.{key}" for key in ARCHITECTURE]

    def dataset(self, files, targets, exp, seed):
        import torch
        from torch.utils.data import TensorDataset

        from deuterium.data_types.tabular.trainer import frame_matrix

        matrix = frame_matrix(exp.tabular.columns, files.frame)
        return TensorDataset(torch.from_numpy(matrix), torch.as_tensor(targets))

    def model(self, exp, n_outputs: int):
        from deuterium.data_types.tabular.model import TabularNet

        autoencoder = exp.problem_type.endswith("_anomaly")
        return TabularNet(
            exp.tabular, n_outputs, autoencoder, tuple(exp.tabular.response_scale or (0.0, 1.0))
        )

    def example_input(self, exp):
        import torch

        n = len(exp.tabular.columns or [])
        return torch.zeros(2, n, dtype=torch.float32), {}

    def render(self, x: np.ndarray, exp) -> tuple[np.ndarray, dict]:
        return x[None, :], {"cmap": "viridis", "aspect": "auto"}
