"""Training items of the audio data type: random crops of the decoded clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deuterium.data_types.audio import io
from deuterium.data_types.items import SeededItems


class AudioClips(SeededItems):
    """Training items: a random crop of `chunk` samples (shorter clips zero-padded) and its target row."""

    def __init__(
        self,
        files: list[Path],
        targets: np.ndarray,
        sample_rate: int,
        chunk: int,
        seed: int,
        channels: int | None = None,  # None: mono [chunk]; else [channels, chunk] (audio_io.fit_channels)
    ):
        super().__init__(files, targets, seed)
        self.sample_rate, self.chunk, self.channels = sample_rate, chunk, channels

    def __getitem__(self, i: int):
        self.rng = np.random.default_rng((self.seed, self.epoch, i))
        with io.quiet_stderr():  # an MP3's decoder notes would flood the training log
            wave = io.load(self.files[i], self.sample_rate, channels=self.channels)
        length = wave.shape[-1]
        out = np.zeros((*wave.shape[:-1], self.chunk), dtype=np.float32)
        if length > self.chunk:
            start = int(self.rng.integers(0, length - self.chunk + 1))
            out[:] = wave[..., start : start + self.chunk]
        else:
            start = int(self.rng.integers(0, self.chunk - length + 1))
            out[..., start : start + length] = wave
        return torch.from_numpy(out), torch.from_numpy(self.targets[i])
