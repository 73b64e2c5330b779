"""audio.audio_parameters `auto`: the sample rate and the training chunk chosen from the training files.

- sample_rate: the most common rate among the training files (the higher one on a tie);
- training_chunk_seconds: the 95th percentile of the clip lengths, rounded up to 0.1 s, at most 60 s
  (most clips fit whole in a crop, a few long ones do not make every batch mostly padding);
- stft_window_size and hop_size: their durations kept. They are counts of samples at the sample rate
  they were set with (params.yaml's, or the default's); the same counts at another rate are other
  durations, and at a higher one far narrower frequency bins: 256 samples at 48 kHz leave 26 of 64 mel
  bands up to 4 kHz without a single STFT bin, and six times the frames to compute. So at a chosen rate
  r the window is round(window * r / rate) and the hop likewise, logged and written with the choice;
- the rest of the audio section: as set (the mel bins, the frequency range...). A
  `sample_rate` or `training_chunk_seconds` also in params.yaml is replaced by the chosen one, and the
  split stage says so: `dvc exp run -S audio.audio_parameters=auto` has no way to remove a key, and
  H2O Hydrogen Torch's auto likewise overrides them. An unset max_frequency is the chosen rate's
  Nyquist frequency; a set one above it is an error naming both.

The split stage reads the files' headers and records the choice in data_info.json; `resolve` turns an
experiment with `auto` into the one the models are trained with, whose resolved config (next to each
model) holds the values as `manual` settings, which evaluate, pseudo_label and export read back.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from deuterium.data_types.audio import io
from deuterium.data_types.audio.settings import CHOSEN, AudioSettings
from deuterium.errors import DataError
from deuterium.settings import ExperimentBase

log = logging.getLogger(__name__)

MAX_CHUNK_SECONDS = 60.0
CHUNK_PERCENTILE = 95


def choose(files: list[Path], audio: AudioSettings | None = None) -> dict:
    """{sample_rate, training_chunk_seconds} from the files' headers, and with `audio`, the section they
    go into, its stft_window_size and hop_size at the chosen rate (when it is another); the section is
    checked with them (a set max_frequency above the chosen rate's Nyquist frequency)."""
    if not files:
        raise DataError("audio.audio_parameters auto: there are no training files to choose from")
    infos = [io.info(f) for f in files]
    rates = Counter(i.sample_rate for i in infos)
    rate = max(rates, key=lambda r: (rates[r], r))
    seconds = float(np.percentile([i.seconds for i in infos], CHUNK_PERCENTILE))
    chunk = min(MAX_CHUNK_SECONDS, max(0.1, math.ceil(seconds * 10 - 1e-9) / 10))
    log.info(
        "audio_parameters auto: sample_rate %d (%d of %d files), training_chunk_seconds %.1f",
        rate,
        rates[rate],
        len(infos),
        chunk,
    )
    chosen = {"sample_rate": rate, "training_chunk_seconds": chunk}
    if audio is not None and rate != audio.sample_rate:
        scale = rate / audio.sample_rate
        window = max(16, round(audio.stft_window_size * scale))
        hop = min(window, max(1, round(audio.hop_size * scale)))
        chosen.update(stft_window_size=window, hop_size=hop)
        log.info(
            "audio_parameters auto: stft_window_size %d -> %d and hop_size %d -> %d, the same %.1f ms and "
            "%.1f ms at %d Hz as at %d Hz",
            audio.stft_window_size,
            window,
            audio.hop_size,
            hop,
            1000 * audio.stft_window_size / audio.sample_rate,
            1000 * audio.hop_size / audio.sample_rate,
            rate,
            audio.sample_rate,
        )
    if audio is not None:
        replaced = [f"{key} {getattr(audio, key)}" for key in CHOSEN if key in audio.model_fields_set]
        if replaced:
            log.warning(
                "audio_parameters auto replaces params.yaml's audio %s with the chosen values",
                " and ".join(replaced),
            )
        _manual(audio, chosen)
    return chosen


def _manual(audio: AudioSettings, chosen: dict) -> AudioSettings:
    """`audio` with the chosen values, as `manual` settings; a DataError when they do not fit the rest."""
    kept = {key: getattr(audio, key) for key in audio.model_fields_set - {"audio_parameters", *CHOSEN}}
    try:
        return AudioSettings(**{**kept, **chosen, "audio_parameters": "manual"})
    except ValidationError as err:
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise DataError(
            f"audio_parameters auto chose sample_rate {chosen['sample_rate']}: {reason}; "
            "change that setting or set audio_parameters: manual"
        ) from None


def resolve(exp: ExperimentBase, info: dict) -> ExperimentBase:
    """`exp` with the audio settings the split stage chose (a no-op for manual audio parameters)."""
    if exp.audio.audio_parameters != "auto":
        return exp
    if "audio" not in info:
        raise DataError(
            "audio_parameters auto: data_info.json has no chosen audio settings; rerun the split stage"
        )
    return exp.model_copy(update={"audio": _manual(exp.audio, info["audio"])})
