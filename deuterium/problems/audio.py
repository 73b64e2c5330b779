"""What audio classification and audio regression share: the dataset and the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from deuterium import assets, audio_io
from deuterium.models.audio_model import AudioModel
from deuterium.problems.base import ProblemType
from deuterium.settings import ExperimentBase


class AudioClips(Dataset):
    """Training items: a random crop of `chunk` samples (shorter clips zero-padded) and its target row.

    The randomness of item i comes from (seed, epoch, i) alone, so data-loader workers never repeat
    each other and a resumed run draws what the killed one would have (the loop calls set_epoch).
    """

    def __init__(
        self,
        files: list[Path],
        targets: np.ndarray,
        sample_rate: int,
        chunk: int,
        seed: int,
        channels: int | None = None,  # None: mono [chunk]; else [channels, chunk] (audio_io.fit_channels)
    ):
        self.files, self.targets = files, targets
        self.sample_rate, self.chunk, self.channels = sample_rate, chunk, channels
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        self.rng = np.random.default_rng((self.seed, self.epoch, i))
        wave = audio_io.load(self.files[i], self.sample_rate, channels=self.channels)
        length = wave.shape[-1]
        out = np.zeros((*wave.shape[:-1], self.chunk), dtype=np.float32)
        if length > self.chunk:
            start = int(self.rng.integers(0, length - self.chunk + 1))
            out[:] = wave[..., start : start + self.chunk]
        else:
            start = int(self.rng.integers(0, self.chunk - length + 1))
            out[..., start : start + length] = wave
        return torch.from_numpy(out), torch.from_numpy(self.targets[i])


class AudioProblem(ProblemType):
    def files(self, frame: pd.DataFrame, exp: ExperimentBase, data_folder: Path | None = None) -> list[Path]:
        folder = data_folder or exp.dataset.data_folder
        return [assets.resolve(folder, name) for name in frame[exp.dataset.audio_column]]

    def dataset(self, frame: pd.DataFrame, exp: ExperimentBase, targets: np.ndarray, seed: int) -> Dataset:
        channels = exp.audio.audio_channels if exp.audio.audio_channels > 1 else None
        return AudioClips(
            self.files(frame, exp), targets, exp.audio.sample_rate, exp.audio.chunk_samples, seed, channels
        )

    def model(self, exp: ExperimentBase, n_outputs: int) -> AudioModel:
        return AudioModel(exp.audio, exp.architecture, n_outputs)
