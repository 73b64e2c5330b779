"""The worst validation predictions of a run, as images in dvclive (the data type renders them: a spectrogram,
the picture itself; `logging.number_of_<noun>s_to_show`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dvclive import Live

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
    problem,
    info: dict,
    files: list[Path],
    targets: np.ndarray,
    preds: np.ndarray,
) -> list[str]:
    """Log one PNG per worst row under `{name}/worst/`; returns the image names."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    decoder = problem.decoder(exp)
    single = bool(np.allclose(targets.sum(axis=1), 1))  # one class per row (one-hot or soft pseudo labels)
    names = []
    for rank, i in enumerate(worst(targets, preds, exp.logging.samples_to_show)):
        image, style = problem.data.render(decoder.load(files[i]), exp)
        style = dict(style)
        xlabel, ylabel = style.pop("xlabel", None), style.pop("ylabel", None)
        fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
        ax.imshow(image, **style)
        ax.set_title(
            f"{files[i].name}\ntrue: {_describe(targets[i], info, single, False)}  "
            f"predicted: {_describe(preds[i], info, single, True)}",
            fontsize=8,
        )
        if xlabel:
            ax.set_xlabel(xlabel)
        if ylabel:
            ax.set_ylabel(ylabel)
        fig.tight_layout()
        image_name = f"{name}/worst/{rank:02d}_{files[i].stem}.png"
        live.log_image(image_name, fig)
        plt.close(fig)
        names.append(image_name)
    return names
