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
    """Training items: a random crop of `chunk` samples (shorter clips zero-padded) and its target row."""

    def __init__(self, files: list[Path], targets: np.ndarray, sample_rate: int, chunk: int, seed: int):
        self.files, self.targets = files, targets
        self.sample_rate, self.chunk = sample_rate, chunk
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        wave = audio_io.load(self.files[i], self.sample_rate)
        out = np.zeros(self.chunk, dtype=np.float32)
        if len(wave) > self.chunk:
            start = int(self.rng.integers(0, len(wave) - self.chunk + 1))
            out[:] = wave[start : start + self.chunk]
        else:
            start = int(self.rng.integers(0, self.chunk - len(wave) + 1))
            out[start : start + len(wave)] = wave
        return torch.from_numpy(out), torch.from_numpy(self.targets[i])


class AudioProblem(ProblemType):
    def files(self, frame: pd.DataFrame, exp: ExperimentBase, data_folder: Path | None = None) -> list[Path]:
        folder = data_folder or exp.dataset.data_folder
        return [assets.resolve(folder, name) for name in frame[exp.dataset.audio_column]]

    def dataset(self, frame: pd.DataFrame, exp: ExperimentBase, targets: np.ndarray, seed: int) -> Dataset:
        return AudioClips(
            self.files(frame, exp), targets, exp.audio.sample_rate, exp.audio.chunk_samples, seed
        )

    def model(self, exp: ExperimentBase, n_outputs: int) -> AudioModel:
        return AudioModel(exp.audio, exp.architecture, n_outputs)
