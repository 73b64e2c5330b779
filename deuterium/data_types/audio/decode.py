"""Audio uploads and files -> waveform pieces at the model's rate (numpy, soundfile, scipy; no torch)."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import numpy as np

from deuterium.data_types.audio import io
from deuterium.data_types.base import Decoder, from_base64
from deuterium.errors import InputError

MAX_SAMPLE_RATE = io.MAX_SAMPLE_RATE


class AudioDecoder(Decoder):
    """A clip is cut into pieces (io.pieces): `chunk_method` fix, chunks of exactly `chunk_samples` (the
    last zero-padded); varying, the whole clip up to `chunk_samples` and pieces of that length beyond."""

    input_name = "waveform"

    def __init__(self, settings: dict, bounded: bool = True):
        super().__init__(settings, bounded)
        s = settings
        self.sample_rate, self.chunk_samples = int(s["sample_rate"]), int(s["chunk_samples"])
        self.channels, self.chunk_method = int(s.get("channels", 1)), s.get("chunk_method", "fix")
        self.min_samples, self.max_seconds = int(s.get("min_samples", 1)), float(s.get("max_seconds", 600.0))
        self.max_samples = int(s.get("max_decoded_samples", 600 * 48000 * 2))

    def load(self, source: Path | str | bytes, name: str | None = None) -> np.ndarray:
        return io.load(
            source,
            self.sample_rate,
            name=name,
            max_seconds=self.max_seconds if self.bounded else None,
            channels=self.channels if self.channels > 1 else None,
            max_samples=self.max_samples if self.bounded else None,
        )

    def cost(self, source: bytes, name: str) -> int:
        meta = io.info(source, name)
        if self.bounded:
            io.check_cost(meta, name, self.max_seconds, self.max_samples)
        return meta.frames * meta.channels * 4

    def max_cost(self) -> int:
        return self.max_samples * 4 if self.bounded else 0

    def shape(self, wave: np.ndarray) -> np.ndarray:
        """A clip as the model takes it: mono [samples], or [channels, samples] (a mono clip zero-padded)."""
        if self.channels == 1:
            return wave if wave.ndim == 1 else wave.mean(axis=0, dtype=np.float32)
        return io.fit_channels(wave, self.channels)

    def pieces(self, x: np.ndarray) -> list[np.ndarray]:
        return io.pieces(self.shape(x), self.chunk_samples, self.chunk_method, self.min_samples)

    def piece_weights(self, x: np.ndarray) -> list[float]:
        """Each piece by the real samples it holds: a zero-padded tail counts for what it has, not as a full chunk."""
        size = self.chunk_samples if self.chunk_method == "fix" else max(self.chunk_samples, self.min_samples)
        length = x.shape[-1]
        return [float(max(1, min(size, length - start))) for start in range(0, max(length, 1), size)]

    def from_json(self, payload: dict[str, Any]) -> np.ndarray:
        """One of `waveform` (mono samples as a list of floats) or `waveform_base64` (the same as base64 of
        float32 little-endian), each with its `sample_rate`; or `audio_base64`, a whole audio file."""
        allowed = ("waveform", "waveform_base64", "sample_rate", "audio_base64")
        unknown = [k for k in payload if k not in allowed]
        if unknown:
            raise InputError(
                f"unknown key(s) {', '.join(map(reprlib.repr, unknown[:5]))}; send {', '.join(allowed)}"
            )
        given = {k: payload.get(k) for k in ("waveform", "waveform_base64", "audio_base64")}
        sent = [name for name, value in given.items() if value is not None]
        if len(sent) != 1:
            raise InputError(f"send exactly one of {', '.join(map(repr, given))}, not {len(sent)}")
        name = sent[0]
        if name == "audio_base64":
            data = from_base64(name, payload[name])
            if not data:
                raise InputError(f"{name}: the file is empty")
            return self.load(data, name)
        rate = payload.get("sample_rate")
        if rate is None:
            raise InputError(f"'sample_rate' is required with '{name}': the rate the samples were taken at")
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_SAMPLE_RATE:
            raise InputError(
                f"sample_rate: a whole number of Hz from 1 to {MAX_SAMPLE_RATE}, got {reprlib.repr(rate)}"
            )
        if name == "waveform_base64":
            data = from_base64(name, payload[name])
            if len(data) % 4:
                raise InputError(f"{name}: {len(data)} bytes is not a whole number of float32 samples")
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        else:
            values = payload[name]
            if not isinstance(values, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                raise InputError(f"{name}: a list of numbers")
            try:  # float64 first: 1e308 would be inf in float32, and said to be "infinite"
                wide = np.asarray(values, dtype=np.float64)
            except OverflowError:  # JSON integers of hundreds of digits
                raise InputError(f"{name}: numbers out of range") from None
            if not np.all(np.abs(wide) <= io.MAX_ABS_SAMPLE):
                raise InputError(f"{name}: {io.bad_samples(wide)}")
            samples = wide.astype(np.float32)
        if samples.size == 0:
            raise InputError(f"{name}: no samples")
        if samples.size / rate > self.max_seconds:
            seconds = samples.size / rate
            raise InputError(f"{name}: {seconds:.1f} s is longer than the limit of {self.max_seconds:g} s")
        if not np.all(np.abs(samples) <= io.MAX_ABS_SAMPLE):  # NaN compares false too
            raise InputError(f"{name}: {io.bad_samples(samples)}")
        return io.resample(samples, rate, self.sample_rate)

    def limits(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "max_seconds": self.max_seconds,
            "max_decoded_samples": self.max_samples,
        }
