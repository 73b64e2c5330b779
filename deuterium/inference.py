"""Predict clips with PyTorch models: each clip cut into pieces, outputs averaged over pieces and models.

The same pieces (audio_io.pieces) and averaging (audio_io.PieceAverager) as deuterium.scoring, so
PyTorch and ONNX agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch import Tensor, nn

from deuterium import audio_io
from deuterium.runtime import autocast
from deuterium.settings import ExperimentBase


@torch.no_grad()
def predict_files(
    models: list[nn.Module],
    activate: Callable[[Tensor], Tensor],
    files: list[Path],
    sample_rate: int,
    chunk: int,
    batch_size: int,
    dev: torch.device,
    mixed_precision: bool = False,
    description: str = "predicting",
    *,
    channels: int | None = None,
    method: str = "fix",
    min_size: int = 1,
) -> np.ndarray:
    """One output row per file. `chunk`: the piece length (fix) or the longest piece (varying)."""
    for m in models:
        m.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(dev)
        with autocast(dev, mixed_precision):
            return torch.stack([activate(m(x).float()) for m in models]).mean(0).cpu().numpy()

    averager = audio_io.PieceAverager(run, batch_size)
    for f in track(files, description=description, transient=True, disable=len(files) < 50):
        wave = audio_io.load(f, sample_rate, channels=channels)
        averager.add(audio_io.pieces(wave, chunk, method, min_size))
    return averager.result()


def predict(
    models: list[nn.Module],
    activate: Callable[[Tensor], Tensor],
    files: list[Path],
    exp: ExperimentBase,
    dev: torch.device,
    description: str = "predicting",
) -> np.ndarray:
    """`predict_files` with the experiment's audio and prediction settings."""
    return predict_files(
        models,
        activate,
        files,
        exp.audio.sample_rate,
        exp.inference_chunk_samples,
        exp.inference_batch_size,
        dev,
        exp.environment.mixed_precision_inference,
        description,
        **loading(exp),
    )


def loading(exp: ExperimentBase) -> dict:
    """How clips are read and cut for this experiment's model (keyword arguments of predict_files)."""
    return {
        "channels": exp.audio.audio_channels if exp.audio.audio_channels > 1 else None,
        "method": exp.prediction.inference_chunk_method,  # type: ignore[attr-defined]
        "min_size": exp.audio.stft_window_size,
    }
