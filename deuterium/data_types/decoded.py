"""Decode once: every input file decoded (read, mixed down, resampled) once per training process.

The train stage trains every fold and seed in one process, and each epoch crops and augments the same
clips again; without this cache each epoch decoded every file anew (an MP3 decode and a resample per
clip per epoch). Entries are keyed by the file (resolved path, size, modification time) and by the
decoder's settings (for audio: sample rate, channels, ...), so a changed file or a changed setting
decodes again instead of reusing a stale array.

Held in memory up to `environment.decode_cache_megabytes` (0: off); what does not fit is decoded each
time it is used, as before. `fill` decodes a list of files up front with a thread pool (soundfile,
soxr and Pillow release the GIL), so data-loader worker processes forked afterwards share the arrays
instead of each decoding its own copy. Hand-written: functools.lru_cache bounds entries, not bytes, and
does not share across forked workers unless filled before the fork.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deuterium.data_types.base import Decoder

log = logging.getLogger(__name__)


class DecodedCache:
    def __init__(self, max_bytes: int = 0):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._warned = False

    @staticmethod
    def key(path: Path, decoder: Decoder) -> tuple:
        st = os.stat(path)
        settings = json.dumps(decoder.settings, sort_keys=True, default=str)
        where = str(Path(path).resolve())
        return (type(decoder).__qualname__, settings, decoder.bounded, where, st.st_size, st.st_mtime_ns)

    def load(self, path: Path, decoder: Decoder) -> np.ndarray:
        """`decoder.load(path)`, from memory when this file was decoded with these settings before.
        The array is shared: callers copy before changing it."""
        key = self.key(path, decoder)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self.hits += 1
                return found
        x = decoder.load(path)
        with self._lock:
            self.misses += 1
            if key not in self._items and self.bytes + x.nbytes <= self.max_bytes:
                x.setflags(write=False)
                self._items[key] = x
                self.bytes += x.nbytes
            elif key not in self._items and self.max_bytes and not self._warned:
                self._warned = True
                log.info(
                    "decode cache full (%.0f MB, environment.decode_cache_megabytes): "
                    "the remaining files are decoded each time they are used",
                    self.max_bytes / 2**20,
                )
        return x

    def fill(self, files: list[Path], decoder: Decoder, threads: int | None = None) -> None:
        """Decode `files` now (those not cached yet), in parallel."""
        if not self.max_bytes or not files:
            return
        threads = threads or min(8, os.cpu_count() or 1)
        step = threads * 16
        with ThreadPoolExecutor(threads) as pool:
            for start in range(0, len(files), step):
                if self.bytes >= self.max_bytes:
                    break
                list(pool.map(lambda f: self.load(f, decoder), files[start : start + step]))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = self.hits = self.misses = 0


CACHE = DecodedCache()  # the process's cache; training sets its size from the settings
SHARE = 1.0  # of decode_cache_megabytes this process may use: 1/N in each of N folds trained at once


def configure(megabytes: float) -> DecodedCache:
    """Size the process's cache (dropping what no longer fits is not needed: sizes only grow in a run)."""
    CACHE.max_bytes = int(megabytes * SHARE * 2**20)
    return CACHE


class CachedDecoder(Decoder):
    """A decoder whose `load` of a file goes through the cache; everything else is the wrapped decoder's."""

    def __init__(self, decoder: Decoder, cache: DecodedCache = CACHE):
        super().__init__(decoder.settings, decoder.bounded)
        self.inner, self.cache = decoder, cache
        self.input_name = decoder.input_name

    def load(self, source, name=None) -> np.ndarray:
        if isinstance(source, (str, Path)) and name is None:
            return self.cache.load(Path(source), self.inner)
        return self.inner.load(source, name)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def cost(self, source, name):
        return self.inner.cost(source, name)

    def max_cost(self):
        return self.inner.max_cost()

    def pieces(self, x):
        return self.inner.pieces(x)

    def piece_weights(self, x):
        return self.inner.piece_weights(x)

    def from_json(self, payload):
        return self.inner.from_json(payload)

    def limits(self):
        return self.inner.limits()
