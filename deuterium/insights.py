"""The worst validation predictions of a run, as spectrogram images in dvclive (logging.number_of_audios_to_show)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from deuterium import audio_io
from deuterium.audio import LogMel
from deuterium.settings import ExperimentBase


def worst(targets: np.ndarray, preds: np.ndarray, n: int) -> np.ndarray:
    """Row indices, worst first: the largest mean |prediction - target| (one-hot and multi-hot rows alike)."""
    error = np.abs(preds - targets).reshape(len(preds), -1).mean(axis=1)
    return np.argsort(-error, kind="stable")[:n]


def _describe(row: np.ndarray, info: dict, single_label: bool, probability: bool) -> str:
    labels = info.get("labels")
    if not labels:
        return ", ".join(f"{v:.3g}" for v in row)
    if single_label:
        return labels[int(row.argmax())] + (f" ({row.max():.2f})" if probability else "")
    return ", ".join(labels[i] for i in np.flatnonzero(row >= 0.5)) or "none"


def log_worst(
    live: Live,
    name: str,
    exp: ExperimentBase,
    info: dict,
    files: list[Path],
    targets: np.ndarray,
    preds: np.ndarray,
) -> list[str]:
    """Log one PNG per worst row under `{name}/worst/`; returns the image names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    mel = LogMel(exp.audio).eval()
    single = bool(np.allclose(targets.sum(axis=1), 1))  # one class per row (one-hot or soft pseudo labels)
    names = []
    for rank, i in enumerate(worst(targets, preds, exp.logging.number_of_audios_to_show)):
        wave = audio_io.chunks(audio_io.load(files[i], exp.audio.sample_rate), exp.inference_chunk_samples)[0]
        with torch.no_grad():
            image = mel(torch.from_numpy(wave)[None])[0, 0].numpy()
        fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(
            f"{files[i].name}\ntrue: {_describe(targets[i], info, single, False)}  "
            f"predicted: {_describe(preds[i], info, single, True)}",
            fontsize=8,
        )
        ax.set_xlabel("frame")
        ax.set_ylabel("mel bin")
        fig.tight_layout()
        image_name = f"{name}/worst/{rank:02d}_{files[i].stem}.png"
        live.log_image(image_name, fig)
        plt.close(fig)
        names.append(image_name)
    return names
