"""What a data type provides: how a row of a dataframe becomes model input, in training and in scoring.

A data type (audio, image) owns its section of params.yaml, the per-row checks of the validate stage, the
training `Dataset` and its augmentations, the model's front end, the ONNX graph's input and the torch-free
`Decoder` that the service and the standalone scorer turn an upload into that input with. Stages, export,
serving and flows ask `deuterium.data_types` (through `deuterium.problems`) and never name one.

This module and each data type's `__init__` import no torch: the BentoML service loads them to find the
decoder. What needs torch (dataset, model) is imported inside the methods that train.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from deuterium import assets
from deuterium.errors import InputError
from deuterium.plugins import Registry
from deuterium.settings import LoggingBase, MixSettings, PredictionBase, Section

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor, nn
    from torch.utils.data import Dataset

    from deuterium.settings import ExperimentBase

_PLUGINS: Registry = Registry("data type")
register = _PLUGINS.register
registered = _PLUGINS.registered


class Decoder:
    """Torch-free: a file, bytes or a JSON payload -> the array the ONNX graph takes (`input_name`).

    Built from the `input` part of preprocessing.json, so training, export's parity check, the standalone
    scorer and the service decode alike. `bounded` False lifts the limits meant for requests (training data
    may hold long clips or large images).
    """

    input_name: ClassVar[str] = "input"

    def __init__(self, settings: dict, bounded: bool = True):
        self.settings, self.bounded = settings, bounded

    def load(self, source: Path | str | bytes, name: str | None = None) -> np.ndarray:
        """Raises deuterium.errors.InputError naming `name` when the input cannot be used."""
        raise NotImplementedError

    def cost(self, source: bytes, name: str) -> int:
        """What decoding `source` will take (bytes), read from its header; 0 when the data type does not say.
        Raises InputError when the header alone shows it is over the limits."""
        return 0

    def max_cost(self) -> int:
        """The most one request may decode to (bytes), by `cost`; 0: no limit beyond each input's own."""
        return 0

    def max_json_bytes(self) -> int:
        """The largest JSON body the service reads for one input (the upload limit when lower). Parsed, a
        body is Python objects, not bytes: each number of a list of samples or pixels costs 32 bytes or
        more for its 2 to 10 bytes of text, and 30 MB bodies of waveform samples held 300 MB each. 8 MiB
        bounds that to about 130 MB at worst; a larger file goes to the upload endpoints as it is."""
        return JSON_BODY_BYTES

    def pieces(self, x: np.ndarray) -> list[np.ndarray]:
        """What one input is scored as; its prediction is the mean over the pieces (one piece by default)."""
        return [x]

    def piece_weights(self, x: np.ndarray) -> list[float]:
        """How much each of `pieces(x)` counts in the mean (how much of the input it really holds)."""
        return [1.0] * len(self.pieces(x))

    def from_json(self, payload: dict[str, Any]) -> np.ndarray:
        """The service's JSON endpoint: a payload (data type specific keys) -> a decoded input."""
        raise NotImplementedError

    def limits(self) -> dict:
        """What one request may be, for the service's health answer."""
        return {}


JSON_BODY_BYTES = 8 << 20


def from_base64(field: str, text: object) -> bytes:
    """A JSON payload's base64 text as bytes; InputError naming `field` otherwise."""
    if not isinstance(text, str):
        raise InputError(f"{field}: a base64 string")
    if text.startswith("data:") and ";base64," in text[:200]:  # a data URL, as a browser's FileReader gives
        text = text.split(";base64,", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field}: not valid base64") from None


class DataType:
    name: ClassVar[str]
    noun: ClassVar[str]  # in messages: "audio file not found", "image file not found"
    Settings: ClassVar[type[Section]]  # its section of params.yaml, named after the data type
    Prediction: ClassVar[type[PredictionBase]] = PredictionBase  # its keys of the prediction section
    Augmentation: ClassVar[type[MixSettings]]
    Logging: ClassVar[type[LoggingBase]]
    dataset_fields: ClassVar[dict[str, tuple]]  # its keys of the dataset section: {name: (type, default)}
    # the dataset key naming the column of files ("": no files, the row itself is the input)
    column_key: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression")
    # its model takes the task's target scale (`set_output_scale`): regression targets are learnt standardized.
    # False where the model standardizes its response itself (tabular: tabular.response_scale)
    takes_target_scale: ClassVar[bool] = True
    # settings sections its own trainer does not read (section -> why), but for the keys in `read_anyway`:
    # a search varying one would run identical trials
    unread_settings: ClassVar[dict[str, str]] = {}
    read_anyway: ClassVar[tuple[str, ...]] = ()
    file_suffixes: ClassVar[frozenset[str]]  # what the standalone scorer picks from a folder
    scoring_requirements: ClassVar[tuple[str, ...]]  # pip names its Decoder needs (the bento installs them)
    front_end: ClassVar[
        str
    ]  # qualified name of the model's front-end class: kept float32 in reduced precision
    decoder_class: ClassVar[str]  # "module:Class" of its Decoder, imported when asked for
    json_help: ClassVar[str]  # what the service's /predict_json takes under `input`
    json_example: ClassVar[dict]
    limits_example: ClassVar[dict]  # Decoder.limits() of a typical model, for the OpenAPI page
    settings_checks: ClassVar[
        tuple
    ] = ()  # functions(exp) raising ValueError for settings that clash across sections

    def __init__(self, exp: ExperimentBase | None = None):
        self.exp = exp

    # --- rows and files -----------------------------------------------------------
    def column(self, exp: ExperimentBase) -> str:
        return getattr(exp.dataset, self.column_key)

    def files(self, frame: pd.DataFrame, exp: ExperimentBase, data_folder: Path | None = None) -> Sequence:
        """The rows' inputs, what the decoder's `load` takes: their files (a data type without files, such as
        tabular, gives the rows themselves)."""
        folder = data_folder or exp.dataset.data_folder
        return [assets.resolve(folder, name) for name in frame[self.column(exp)]]

    def check_file(self, path: Path, shown: str, exp: ExperimentBase) -> str | None:
        """validate: why this file cannot be used (None when it can), cheaply (headers, not whole decodes)."""
        raise NotImplementedError

    def check_rows(
        self, frame: pd.DataFrame, train: pd.DataFrame, exp: ExperimentBase
    ) -> list[tuple[int | None, str, object, str]]:
        """validate: what in a dataframe's input columns the model cannot take, compared with the training
        dataframe `train` (`frame` may be `train` itself): (0-based row or None, column, value, why) each.
        For a data type whose rows are the input; one that reads files checks them in check_file."""
        return []

    def row_weights(self, frame: pd.DataFrame, exp: ExperimentBase) -> np.ndarray | None:
        """Each row's weight in the metrics (float64), or None when every row counts once (the default)."""
        return None

    # --- settings chosen from the data --------------------------------------------------------
    def choose(self, files: list[Path], exp: ExperimentBase) -> dict | None:
        """split: settings chosen from the training files (`auto` settings), recorded in data_info.json."""
        return None

    def resolve(self, exp: ExperimentBase, info: dict) -> ExperimentBase:
        """`exp` with what `choose` recorded: the experiment the models are trained with."""
        return exp

    def of_models(self, exp: ExperimentBase, model_exp: ExperimentBase) -> ExperimentBase:
        """`exp` (params.yaml: prediction, environment...) with the data settings the models were trained with."""
        section = type(model_exp).data_section
        return exp.model_copy(update={section: getattr(model_exp, section)})

    def fold_assignment(self, exp: ExperimentBase) -> str:
        """split: how k_fold deals rows into folds, one of deuterium.splitting.FOLD_ASSIGNMENTS."""
        return "random"

    # --- scoring (torch-free) -------------------------------------------------------------
    def preprocessing(self, exp: ExperimentBase) -> dict:
        """The `input` part of preprocessing.json: everything its Decoder needs."""
        raise NotImplementedError

    @classmethod
    def decoder(cls, settings: dict, bounded: bool = True) -> Decoder:
        import importlib

        module, name = cls.decoder_class.split(":")
        return getattr(importlib.import_module(module), name)(settings, bounded)

    # --- training (torch) ---------------------------------------------------------------
    def trainer(self) -> Callable | None:
        """A training function with deuterium.training.train_fold's contract, for a data type whose
        training is not the shared loop's (tabular: H2O-3's); None: the shared loop."""
        return None

    def chosen_keys(self, exp: ExperimentBase) -> dict[str, str]:
        """Settings (dotted keys) this data type chooses from the training files under `exp`, each with why:
        a search may not vary them (its values would be replaced)."""
        return {}

    def fixed_by_pbt(self) -> list[str]:
        """Settings (dotted keys) a population-based search may not vary: a trial could not continue another
        trial's checkpoint under other values (the shared loop's are checked when its weights load)."""
        return []

    def dataset(self, files: list[Path], targets: np.ndarray, exp: ExperimentBase, seed: int) -> Dataset:
        """Training items (input, target) with the augmentations; item i's randomness from (seed, epoch, i)."""
        raise NotImplementedError

    def batch_augmenter(self, exp: ExperimentBase) -> Callable[[Tensor], Tensor] | None:
        """Augmentations of a whole training batch of inputs, run by the training loop on the training
        device before mixing (None: the data type has none, or the settings turn them all off)."""
        return None

    def model(self, exp: ExperimentBase, n_outputs: int) -> nn.Module:
        """Decoded input (the graph's input) -> logits: the front end, a timm backbone, pooling, the head."""
        raise NotImplementedError

    def example_input(self, exp: ExperimentBase) -> tuple[Tensor, dict[int, Any]]:
        """An input for the ONNX exporter and its dynamic dimensions (batch is always dynamic)."""
        raise NotImplementedError

    def render(self, x: np.ndarray, exp: ExperimentBase) -> tuple[np.ndarray, dict]:
        """insights: a decoded input as a picture a person looks at, with imshow's keyword arguments."""
        raise NotImplementedError
