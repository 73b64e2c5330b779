"""Read audio from a path or bytes into mono float32 at a target rate.

numpy + soundfile + scipy only (no torch): training, evaluation, the standalone scorer
and the BentoML service all call this one loader, so they cannot drift apart.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from deuterium.errors import AudioError


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _open(source: Path | str | bytes, name: str):
    try:
        return sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{name}: not a readable audio file ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.split(": ", 1)[-1] if text.startswith("Error opening") else text
    if "does not exist or is not a regular file" in text:  # libsndfile's words for a broken MPEG stream
        return "format not recognised or the data is corrupt"
    return text.rstrip(".")


def info(source: Path | str | bytes, name: str | None = None) -> AudioInfo:
    name = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "upload")
    with _open(source, name) as f:
        return AudioInfo(f.samplerate, f.channels, f.frames, f.format)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    if orig_rate == target_rate or wave.size == 0:
        return wave
    ratio = Fraction(target_rate, orig_rate).limit_denominator(1000)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def load(
    source: Path | str | bytes,
    sample_rate: int,
    name: str | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Mono float32 in [-1, 1] at `sample_rate`. Raises AudioError naming `name` on anything unusable.

    Decodes block by block, mixing down as it goes, so memory stays at one mono clip whatever the
    channel count, and stops past `max_seconds` even when the header understates the length.
    """
    name = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "upload")
    with _open(source, name) as f:
        rate, frames = f.samplerate, f.frames
        if max_seconds is not None and rate and frames / rate > max_seconds:
            raise AudioError(
                f"{name}: {frames / rate:.1f} s of audio is longer than the limit of {max_seconds:g} s"
            )
        limit = math.floor(max_seconds * rate) if max_seconds is not None else None
        pieces, total = [], 0
        try:
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                pieces.append(block.mean(axis=1))  # mix down every channel to mono
                total += len(block)
                if limit is not None and total > limit:
                    raise AudioError(f"{name}: the audio is longer than the limit of {max_seconds:g} s")
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{name}: audio data is corrupt ({_reason(err)})") from None
    if total == 0:
        raise AudioError(f"{name}: the audio file has no samples")
    wave = np.concatenate(pieces).astype(np.float32, copy=False)
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: the audio contains NaN or infinite samples")
    return resample(wave, rate, sample_rate)


def chunks(wave: np.ndarray, size: int) -> np.ndarray:
    """Split into non-overlapping chunks of `size` samples, zero-padding the last (HT's 'fix' inference)."""
    n = max(1, math.ceil(len(wave) / size))
    out = np.zeros((n, size), dtype=np.float32)
    for i in range(n):
        piece = wave[i * size : (i + 1) * size]
        out[i, : len(piece)] = piece
    return out
