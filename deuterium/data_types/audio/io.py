"""Read audio from a path or bytes into float32 at a target rate: mono, or a fixed number of channels.

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
    """Along the last axis (samples), so [channels, samples] works too."""
    if orig_rate == target_rate or wave.size == 0:
        return wave
    ratio = Fraction(target_rate, orig_rate).limit_denominator(1000)
    return resample_poly(wave, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def fit_channels(wave: np.ndarray, channels: int) -> np.ndarray:
    """[samples] or [channels_in, samples] -> [channels, samples] (H2O Hydrogen Torch's audio_channels rule).

    One channel: the average of all. More: the first `channels`, zero channels added when there are fewer.
    """
    wave = wave[np.newaxis] if wave.ndim == 1 else wave
    if channels == 1:
        return wave.mean(axis=0, keepdims=True, dtype=np.float32)
    out = np.zeros((channels, wave.shape[-1]), dtype=np.float32)
    kept = min(channels, wave.shape[0])
    out[:kept] = wave[:kept]
    return out


def load(
    source: Path | str | bytes,
    sample_rate: int,
    name: str | None = None,
    max_seconds: float | None = None,
    channels: int | None = None,
) -> np.ndarray:
    """Float32 in [-1, 1] at `sample_rate`. Raises AudioError naming `name` on anything unusable.

    `channels` None: mono [samples]. A number: [channels, samples] by `fit_channels` (1 = the average).
    Decodes block by block, keeping only the channels asked for, so memory stays at that many channels
    whatever the file has, and stops past `max_seconds` even when the header understates the length.
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
                if channels is None or channels == 1:
                    pieces.append(block.mean(axis=1))  # mix down every channel to mono
                else:
                    pieces.append(fit_channels(block.T, channels))
                total += len(block)
                if limit is not None and total > limit:
                    raise AudioError(f"{name}: the audio is longer than the limit of {max_seconds:g} s")
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{name}: audio data is corrupt ({_reason(err)})") from None
    if total == 0:
        raise AudioError(f"{name}: the audio file has no samples")
    wave = np.concatenate(pieces, axis=-1).astype(np.float32, copy=False)
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{name}: the audio contains NaN or infinite samples")
    if channels == 1:
        wave = wave[np.newaxis]
    return resample(wave, rate, sample_rate)


def chunks(wave: np.ndarray, size: int) -> np.ndarray:
    """Split into non-overlapping chunks of `size` samples, zero-padding the last (HT's 'fix' inference).

    [samples] -> [n, size]; [channels, samples] -> [n, channels, size].
    """
    length = wave.shape[-1]
    n = max(1, math.ceil(length / size))
    out = np.zeros((n, *wave.shape[:-1], size), dtype=np.float32)
    for i in range(n):
        piece = wave[..., i * size : (i + 1) * size]
        out[i, ..., : piece.shape[-1]] = piece
    return out


def pieces(wave: np.ndarray, size: int, method: str = "fix", min_size: int = 1) -> list[np.ndarray]:
    """What one clip is scored as; its prediction is the mean over the pieces.

    fix: `chunks` of exactly `size` (the last zero-padded). varying: the whole clip when it is at most
    `size` samples, else pieces of `size` and a shorter, unpadded last one; only a piece shorter than
    `min_size` (the STFT window) is zero-padded to it.
    """
    if method == "fix":
        return list(chunks(wave, size))
    size, length = max(size, min_size), wave.shape[-1]
    out = [wave[..., i : i + size] for i in range(0, max(length, 1), size)]
    if out[-1].shape[-1] < min_size:
        last = np.zeros((*wave.shape[:-1], min_size), dtype=np.float32)
        last[..., : out[-1].shape[-1]] = out[-1]
        out[-1] = last
    return [np.ascontiguousarray(p, dtype=np.float32) for p in out]
