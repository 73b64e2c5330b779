"""audio.audio_parameters `auto`: the sample rate and the training chunk chosen from the training files.

- sample_rate: the most common rate among the training files (the higher one on a tie);
- training_chunk_seconds: the 95th percentile of the clip lengths, rounded up to 0.1 s, at most 60 s
  (most clips fit whole in a crop, a few long ones do not make every batch mostly padding);
- the rest of the audio section: its defaults (max_frequency the Nyquist frequency of the chosen rate).

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

from deuterium.data_types.audio import io
from deuterium.data_types.audio.settings import LIMITS, AudioSettings
from deuterium.errors import DataError
from deuterium.settings import ExperimentBase

log = logging.getLogger(__name__)

MAX_CHUNK_SECONDS = 60.0
CHUNK_PERCENTILE = 95


def choose(files: list[Path]) -> dict:
    """{sample_rate, training_chunk_seconds} from the files' headers."""
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
    return {"sample_rate": rate, "training_chunk_seconds": chunk}


def resolve(exp: ExperimentBase, info: dict) -> ExperimentBase:
    """`exp` with the audio settings the split stage chose (a no-op for manual audio parameters)."""
    if exp.audio.audio_parameters != "auto":
        return exp
    if "audio" not in info:
        raise DataError(
            "audio_parameters auto: data_info.json has no chosen audio settings; rerun the split stage"
        )
    limits = {key: getattr(exp.audio, key) for key in LIMITS}
    audio = AudioSettings(
        audio_parameters="manual", audio_channels=exp.audio.audio_channels, **limits, **info["audio"]
    )
    return exp.model_copy(update={"audio": audio})
