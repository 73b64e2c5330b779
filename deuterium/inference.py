"""Predict clips with PyTorch models: each clip cut into fixed chunks, outputs averaged over chunks and models.

The same chunking (audio_io.chunks) and averaging as deuterium.scoring, so PyTorch and ONNX agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch import nn

from deuterium import audio_io
from deuterium.runtime import autocast


@torch.no_grad()
def predict_files(
    models: list[nn.Module],
    activate,
    files: list[Path],
    sample_rate: int,
    chunk: int,
    batch_size: int,
    dev: torch.device,
    mixed_precision: bool = False,
    description: str = "predicting",
) -> np.ndarray:
    for m in models:
        m.eval()
    results: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    owners: list[int] = []

    def flush() -> None:
        if not pending:
            return
        batch = torch.from_numpy(np.concatenate(pending)).to(dev)
        with autocast(dev, mixed_precision):
            out = torch.stack([activate(m(batch).float()) for m in models]).mean(0).cpu().numpy()
        own = np.concatenate([np.full(len(p), o) for p, o in zip(pending, owners, strict=True)])
        for o in owners:
            results.append(out[own == o].mean(axis=0))
        pending.clear()
        owners.clear()

    for i, f in enumerate(track(files, description=description, transient=True, disable=len(files) < 50)):
        pieces = audio_io.chunks(audio_io.load(f, sample_rate), chunk)
        if sum(len(p) for p in pending) + len(pieces) > batch_size:
            flush()
        pending.append(pieces)
        owners.append(i)
    flush()
    return np.stack(results).astype(np.float32)
