"""Predict inputs with PyTorch models: each decoded and cut into pieces by its data type's decoder, outputs
averaged over pieces and models.

The same decoder and averaging (scoring.PieceAverager) as the ONNX scorer, so PyTorch and ONNX agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch import Tensor, nn

from deuterium.data_types import Decoder
from deuterium.runtime import autocast
from deuterium.scoring import PieceAverager


@torch.no_grad()
def predict_files(
    models: list[nn.Module],
    activate: Callable[[Tensor], Tensor],
    files: list[Path],
    decoder: Decoder,
    batch_size: int,
    dev: torch.device,
    mixed_precision: bool = False,
    description: str = "predicting",
) -> np.ndarray:
    """One output row per file."""
    for m in models:
        m.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(dev)
        with autocast(dev, mixed_precision):
            return torch.stack([activate(m(x).float()) for m in models]).mean(0).cpu().numpy()

    averager = PieceAverager(run, batch_size)
    for f in track(files, description=description, transient=True, disable=len(files) < 50):
        x = decoder.load(f)
        averager.add(decoder.pieces(x), decoder.piece_weights(x))
    return averager.result()


def predict(models, problem, files, exp, dev, description: str = "predicting") -> np.ndarray:
    """`predict_files` with the problem type's activation, the experiment's data settings and inference
    batch size. `problem` serves the models' experiment (softmax or sigmoid as they were trained)."""
    return predict_files(
        models,
        problem.activate,
        files,
        problem.decoder(exp),
        exp.inference_batch_size,
        dev,
        exp.environment.mixed_precision_inference,
        description,
    )
