"""Training items of the audio data type: random crops of the decoded clips, optionally sped up or slowed down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deuterium.data_types.audio import augment, io
from deuterium.data_types.audio.settings import AudioAugmentation
from deuterium.data_types.base import Decoder
from deuterium.data_types.decoded import CACHE, DecodedCache
from deuterium.data_types.items import SeededItems


class AudioClips(SeededItems):
    """Training items: a random crop of `chunk` samples (shorter clips zero-padded at a random offset) and
    its target row. Clips come from the decode cache (deuterium/decoded.py), so an epoch does not decode
    or resample again; `fill` decodes them all up front, before data-loader workers are forked."""

    def __init__(
        self,
        files: list[Path],
        targets: np.ndarray,
        decoder: Decoder,  # the audio decoder: mono [samples], or [channels, samples] when channels > 1
        chunk: int,
        seed: int,
        aug: AudioAugmentation | None = None,
        cache: DecodedCache = CACHE,
    ):
        super().__init__(files, targets, seed)
        self.decoder, self.chunk, self.aug, self.cache = decoder, chunk, aug, cache
        self.sample_rate = decoder.sample_rate
        with io.quiet_stderr():  # an MP3's decoder notes would flood the training log
            cache.fill(files, decoder)

    def wave(self, i: int) -> np.ndarray:
        with io.quiet_stderr():
            return self.cache.load(self.files[i], self.decoder)

    def __getitem__(self, i: int):
        self.rng = np.random.default_rng((self.seed, self.epoch, i))
        wave = self.wave(i)
        aug = self.aug
        if aug is not None and aug.speed_probability > 0 and self.rng.random() < aug.speed_probability:
            wave = augment.speed(
                wave, float(self.rng.uniform(aug.speed_min, aug.speed_max)), self.sample_rate
            )
        length = wave.shape[-1]
        out = np.zeros((*wave.shape[:-1], self.chunk), dtype=np.float32)
        if length > self.chunk:
            start = int(self.rng.integers(0, length - self.chunk + 1))
            out[:] = wave[..., start : start + self.chunk]
        else:
            start = int(self.rng.integers(0, self.chunk - length + 1))
            out[..., start : start + length] = wave
        return torch.from_numpy(out), torch.from_numpy(self.targets[i])
