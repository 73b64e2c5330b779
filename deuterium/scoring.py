"""Score raw audio with the exported ONNX model. onnxruntime + numpy + soundfile only (no torch).

The contract (written by the export stage into one folder):
- model.onnx: input "waveform" float32 [batch, samples] at the model's sample rate
  ([batch, channels, samples] when `channels` > 1); output "output" float32 [batch, n_outputs]:
  class probabilities (softmax, or one sigmoid per class when `multi_label`) or the regression
  values. Fold models are averaged inside the graph.
- preprocessing.json: what cannot live in the graph (see `Preprocessing`).
Clips are cut into pieces (audio_io.pieces): `chunk_method` fix, chunks of exactly `chunk_samples`
(the last zero-padded, the graph's length is fixed); varying, the whole clip up to `chunk_samples`
and pieces of that length beyond (the graph takes any length). A clip's prediction is the mean
over its pieces.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deuterium import audio_io
from deuterium.errors import DataError

log = logging.getLogger(__name__)

INPUT_NAME = "waveform"
OUTPUT_NAME = "output"
MULTI_LABEL_THRESHOLD = 0.5  # a class is in a multi-label answer when its probability reaches this


@dataclass(frozen=True)
class Preprocessing:
    problem_type: str
    experiment_name: str
    sample_rate: int
    chunk_samples: int
    target_names: list[str]
    labels: list[str] = field(default_factory=list)  # class names, classification only
    max_seconds: float = 600.0
    format_version: int = 1
    channels: int = 1  # audio channels the model takes (audio_io.fit_channels)
    chunk_method: str = "fix"  # fix | varying
    min_samples: int = 1  # varying: a shorter piece is zero-padded to this (the STFT window)
    multi_label: bool = False  # classification: independent per-class probabilities

    @classmethod
    def read(cls, path: Path) -> Preprocessing:
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"{path}: missing; a model folder holds model.onnx and preprocessing.json (stages/export)"
            )
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:  # bad JSON, unknown or missing keys
            raise DataError(f"{path}: not a valid preprocessing file ({err})") from None

    @property
    def is_classification(self) -> bool:
        return bool(self.labels)


def session(model_path: Path, providers: list[str] | None = None) -> ort.InferenceSession:
    available = ort.get_available_providers()
    wanted = providers or ["CPUExecutionProvider"]
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


class Scorer:
    def __init__(self, model_dir: Path | str, providers: list[str] | None = None, batch_size: int = 64):
        model_dir = Path(model_dir)
        self.pre = Preprocessing.read(model_dir / "preprocessing.json")
        self.session = session(model_dir / "model.onnx", providers)
        self.batch_size = batch_size

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def shape(self, wave: np.ndarray) -> np.ndarray:
        """A loaded clip as the model takes it: mono [samples], or [channels, samples] (a mono clip zero-padded)."""
        if self.pre.channels == 1:
            return wave if wave.ndim == 1 else wave.mean(axis=0, dtype=np.float32)
        return audio_io.fit_channels(wave, self.pre.channels)

    def raw(self, waves: list[np.ndarray]) -> np.ndarray:
        """One output row per clip: the mean of its pieces' outputs."""
        averager = audio_io.PieceAverager(
            lambda batch: self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0], self.batch_size
        )
        for w in waves:
            pieces = audio_io.pieces(
                self.shape(w), self.pre.chunk_samples, self.pre.chunk_method, self.pre.min_samples
            )
            averager.add(pieces)
        return averager.result()

    def format(self, row: np.ndarray) -> dict:
        if self.pre.is_classification:
            probs = {label: float(p) for label, p in zip(self.pre.labels, row, strict=True)}
            if self.pre.multi_label:
                return {
                    "labels": [c for c, p in probs.items() if p >= MULTI_LABEL_THRESHOLD],
                    "probabilities": probs,
                }
            return {"label": self.pre.labels[int(np.argmax(row))], "probabilities": probs}
        return {"predictions": {name: float(v) for name, v in zip(self.pre.target_names, row, strict=True)}}

    def predict(self, waves: list[np.ndarray]) -> list[dict]:
        return [self.format(row) for row in self.raw(waves)] if waves else []

    def load(self, source: Path | str | bytes, name: str | None = None) -> np.ndarray:
        channels = self.pre.channels if self.pre.channels > 1 else None
        return audio_io.load(
            source, self.pre.sample_rate, name=name, max_seconds=self.pre.max_seconds, channels=channels
        )
