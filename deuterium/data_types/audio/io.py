"""Read audio from a path or bytes into float32 at a target rate: mono, or a fixed number of channels.

numpy + soundfile + soxr only (no torch): training, evaluation, the standalone scorer
and the BentoML service all call this one loader, so they cannot drift apart.

What one file may cost is decided from its header before anything is decoded: its length, its sample
rate and its decoded samples (frames x channels) against the limits given. It is then decoded and
resampled block by block (soxr's streaming resampler), so memory holds the output and one block, whatever
the file's rate and channels: a small FLAC of silence at a very high rate cannot take gigabytes.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

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


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 to /dev/null for the block: libsndfile's MP3 decoder (mpg123) writes its notes
    ("Illegal Audio-MPEG-Header...", hundreds on a real folder) there directly, below Python's sys.stderr.
    For single-threaded loops (validate, training); the service's threads keep their stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
    if "SF_INFO struct incomplete" in text:  # what libsndfile says of a header's rate of 0 or beyond 2^31
        return f"its header states no usable sample rate; the limit is {MAX_SAMPLE_RATE} Hz"
    return text.rstrip(".")


def info(source: Path | str | bytes, name: str | None = None) -> AudioInfo:
    name = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "upload")
    with _open(source, name) as f:
        return AudioInfo(f.samplerate, f.channels, f.frames, f.format)


MAX_SAMPLE_RATE = 384_000  # Hz: above it a file is refused (no recording needs more)
BLOCK = 1 << 16  # frames decoded at a time
# the largest sample magnitude taken. Audio is about -1 to 1 (a float file of raw 16-bit values reaches
# 32768); at 1e18 the spectrogram's power overflows float32 and the model answers NaN
MAX_ABS_SAMPLE = 1e6


def bad_samples(samples: np.ndarray) -> str:
    """Why samples are refused: NaN or infinite ones, or ones beyond MAX_ABS_SAMPLE."""
    if not np.all(np.isfinite(samples)):
        return "the audio contains NaN or infinite samples"
    return f"the audio contains samples beyond +-{MAX_ABS_SAMPLE:g} (audio is about -1 to 1)"


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Along the last axis (samples), so [channels, samples] works too (soxr, high quality)."""
    if orig_rate == target_rate or wave.size == 0:
        return wave
    out = soxr.resample(np.ascontiguousarray(wave.T), orig_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


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


def check_cost(meta: AudioInfo, name: str, max_seconds: float | None, max_samples: int | None) -> None:
    """Refuse from the header what would cost too much to decode (AudioError naming the limit)."""
    if meta.sample_rate > MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: a sample rate of {meta.sample_rate} Hz is above the limit of {MAX_SAMPLE_RATE} Hz"
        )
    if max_seconds is not None and meta.sample_rate and meta.seconds > max_seconds:
        raise AudioError(
            f"{name}: {meta.seconds:.1f} s of audio is longer than the limit of {max_seconds:g} s"
        )
    if max_samples is not None and meta.frames * meta.channels > max_samples:
        raise AudioError(
            f"{name}: {meta.frames} frames x {meta.channels} channels decode to {meta.frames * meta.channels} "
            f"samples, more than the limit of {max_samples} (audio.max_decoded_samples)"
        )


def load(
    source: Path | str | bytes,
    sample_rate: int,
    name: str | None = None,
    max_seconds: float | None = None,
    channels: int | None = None,
    max_samples: int | None = None,
) -> np.ndarray:
    """Float32 in [-1, 1] at `sample_rate`. Raises AudioError naming `name` on anything unusable.

    `channels` None: mono [samples]. A number: [channels, samples] by `fit_channels` (1 = the average).
    `max_seconds` and `max_samples` (decoded frames x channels) are checked from the header first; decoding
    and resampling go block by block, keeping only the channels asked for at the target rate, and stop
    past the limits even when the header understates the length.
    """
    name = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "upload")
    with _open(source, name) as f:
        meta = AudioInfo(f.samplerate, f.channels, f.frames, f.format)
        check_cost(meta, name, max_seconds, max_samples)
        rate = meta.sample_rate
        kept = 1 if channels is None or channels == 1 else channels
        stream = (
            soxr.ResampleStream(rate, sample_rate, kept, dtype="float32", quality="HQ")
            if rate != sample_rate
            else None
        )
        limit = math.floor(max_seconds * rate) if max_seconds is not None else None
        if max_samples is not None:
            limit = min(limit if limit is not None else max_samples, max_samples // max(1, meta.channels))
        pieces, total = [], 0
        try:
            for block in _checked_blocks(f, name):
                total += len(block)
                if limit is not None and total > limit:
                    raise AudioError(f"{name}: the audio is longer than its header says, past the limits")
                # mix down to mono, or keep the channels asked for: [frames, kept]
                part = block.mean(axis=1, keepdims=True) if kept == 1 else fit_channels(block.T, kept).T
                pieces.append(stream.resample_chunk(np.ascontiguousarray(part)) if stream else part)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{name}: audio data is corrupt ({_reason(err)})") from None
    if total == 0:
        raise AudioError(f"{name}: the audio file has no samples")
    if stream is not None:
        pieces.append(stream.resample_chunk(np.zeros((0, kept), np.float32), last=True))
    wave = np.ascontiguousarray(np.concatenate(pieces, axis=0).T, dtype=np.float32)  # [kept, samples]
    return wave[0] if channels is None else wave


def scan(source: Path | str, name: str) -> None:
    """Decode every block of a file, keeping nothing: AudioError naming `name` where `load` would fail on
    its samples (NaN or infinite ones, corrupt data past a valid header), so the validate stage finds them
    before training rather than an epoch into it. No resampling: only what the file holds is checked."""
    with _open(source, name) as f:
        for _ in _checked_blocks(f, name):
            pass


def _checked_blocks(f: sf.SoundFile, name: str):
    """The file's float32 blocks [frames, channels], each checked for samples `load` refuses; AudioError
    naming `name` for those and for corrupt data (libsndfile's errors)."""
    try:
        for block in f.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):
            if not np.all(np.abs(block) <= MAX_ABS_SAMPLE):  # NaN compares false too
                raise AudioError(f"{name}: {bad_samples(block)}")
            yield block
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{name}: audio data is corrupt ({_reason(err)})") from None


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
