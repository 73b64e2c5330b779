"""Score inputs with the exported ONNX model. onnxruntime + numpy + the data type's decoder only (no torch).

The contract (written by the export stage into one folder):
- model.onnx: one input, named by the data type (`waveform` float32 [batch, samples] for audio, `pixels`
  uint8 [batch, height, width, channels] for images); output "output" float32 [batch, n_outputs]: class
  probabilities (softmax, or one sigmoid per class when `multi_label`) or the regression values. Fold
  models are averaged inside the graph.
- preprocessing.json: what cannot live in the graph (`Preprocessing`); its `input` part is the data
  type's decoder settings (sample rate, image size, limits...).
An input is decoded by its data type's `Decoder` and cut into pieces (one piece for an image; chunks of a
clip); its prediction is the mean over its pieces.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deuterium import data_types
from deuterium.data_types import Decoder
from deuterium.errors import DataError

log = logging.getLogger(__name__)

OUTPUT_NAME = "output"
MULTI_LABEL_THRESHOLD = 0.5  # a class is in a multi-label answer when its probability reaches this
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Preprocessing:
    problem_type: str
    data_type: str
    experiment_name: str
    target_names: list[str]
    input: dict  # the data type's decoder settings
    column: str = ""  # the dataframe column that named the files in training (the scorer's CSV default)
    labels: list[str] = field(default_factory=list)  # class names, classification only
    multi_label: bool = False  # classification: independent per-class probabilities
    format_version: int = FORMAT_VERSION

    @classmethod
    def read(cls, path: Path) -> Preprocessing:
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"{path}: missing; a model folder holds model.onnx and preprocessing.json (stages/export)"
            )
        try:
            data = json.loads(path.read_text())
            if data.get("format_version", 1) < FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version', 1)}; export the model again")
            pre = cls(**data)
            data_types.get(pre.data_type)
            return pre
        except (ValueError, TypeError, AttributeError, DataError) as err:  # bad JSON, unknown or missing keys
            raise DataError(f"{path}: not a valid preprocessing file ({err})") from None

    @property
    def is_classification(self) -> bool:
        return bool(self.labels)

    def decoder(self, bounded: bool = True) -> Decoder:
        return data_types.get(self.data_type).decoder(self.input, bounded)


def _cuda_driver() -> bool:
    """Whether this machine has NVIDIA's driver library. onnxruntime-gpu lists CUDAExecutionProvider on any
    machine and, asked for it without a GPU, prints a red error before it falls back to the CPU."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def session(model_path: Path, providers: list[str] | None = None) -> ort.InferenceSession:
    available = ort.get_available_providers()
    wanted = providers or ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in wanted and not _cuda_driver():
        wanted = [p for p in wanted if p != "CUDAExecutionProvider"] or ["CPUExecutionProvider"]
        log.info("no NVIDIA driver on this machine: onnxruntime runs on %s", wanted[0])
    chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not Path(model_path).is_file():
        raise DataError(f"{model_path}: missing; a model folder holds model.onnx and preprocessing.json")
    sess = ort.InferenceSession(str(model_path), opts, providers=chosen)
    got = sess.get_providers()
    log.info("onnxruntime session on %s", got)
    if got[0] != wanted[0]:
        log.warning("asked onnxruntime for %s but it runs on %s", wanted[0], got[0])
    return sess


class PieceAverager:
    """Runs the pieces of many inputs in batches of equal shape; each input's output is the mean over its pieces.

    The PyTorch predictions (deuterium.inference) and the ONNX scorer both use it, so they batch and
    average alike. At most `batch_size` pieces wait at once, whatever their shapes (images of many sizes
    would otherwise all be held until the end).
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], batch_size: int):
        self.run, self.batch_size = run, max(1, batch_size)
        self.pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        self.sums: list[np.ndarray | None] = []
        self.counts: list[float] = []

    def add(self, pieces: list[np.ndarray], weights: list[float] | None = None) -> None:
        """One input's pieces; its output is their mean, weighted by `weights` (equal by default)."""
        item = len(self.sums)
        self.sums.append(None)
        self.counts.append(0.0)
        for piece, weight in zip(pieces, weights or [1.0] * len(pieces), strict=True):
            group = self.pending.setdefault(piece.shape, [])
            group.append((item, weight, piece))
            if len(group) >= self.batch_size:
                self._flush(piece.shape)
            elif sum(len(g) for g in self.pending.values()) >= self.batch_size:
                for shape in list(self.pending):
                    self._flush(shape)

    def _flush(self, shape: tuple) -> None:
        group = self.pending.pop(shape, [])
        if not group:
            return
        out = self.run(np.stack([piece for _, _, piece in group]))
        for (item, weight, _), row in zip(group, out, strict=True):
            row = row.astype(np.float64) * weight
            self.sums[item] = row if self.sums[item] is None else self.sums[item] + row
            self.counts[item] += weight

    def result(self) -> np.ndarray:
        for shape in list(self.pending):
            self._flush(shape)
        return np.stack([s / c for s, c in zip(self.sums, self.counts, strict=True)]).astype(np.float32)


NOT_FINITE = (
    "the model's output is not a finite number for this input (values far outside the training data?)"
)


class Scorer:
    def __init__(self, model_dir: Path | str, providers: list[str] | None = None, batch_size: int = 64):
        model_dir = Path(model_dir)
        self.pre = Preprocessing.read(model_dir / "preprocessing.json")
        self.decoder = self.pre.decoder()
        self.session = session(model_dir / "model.onnx", providers)
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def raw(self, inputs: list[np.ndarray]) -> np.ndarray:
        """One output row per decoded input: the mean of its pieces' outputs."""
        averager = PieceAverager(
            lambda batch: self.session.run([OUTPUT_NAME], {self.input_name: batch})[0], self.batch_size
        )
        for x in inputs:
            averager.add(self.decoder.pieces(x), self.decoder.piece_weights(x))
        return averager.result()

    def format(self, row: np.ndarray) -> dict:
        """The prediction of one output row; {"error": why} when the model gave no finite number for it
        (an input far outside what the decoder bounds and the model saw: a table's value of 1e38 in a
        column of sd 0.01), which the service answers with a 400 and the scorer reports as a failure."""
        if not np.all(np.isfinite(row)):
            return {"error": NOT_FINITE}
        if self.pre.is_classification:
            probs = {label: float(p) for label, p in zip(self.pre.labels, row, strict=True)}
            if self.pre.multi_label:
                return {
                    "labels": [c for c, p in probs.items() if p >= MULTI_LABEL_THRESHOLD],
                    "probabilities": probs,
                }
            return {"label": self.pre.labels[int(np.argmax(row))], "probabilities": probs}
        return {"predictions": {name: float(v) for name, v in zip(self.pre.target_names, row, strict=True)}}

    def predict(self, inputs: list[np.ndarray]) -> list[dict]:
        return [self.format(row) for row in self.raw(inputs)] if inputs else []

    def load(self, source: Path | str | bytes, name: str | None = None) -> np.ndarray:
        return self.decoder.load(source, name)
