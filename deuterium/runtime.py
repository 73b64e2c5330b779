"""Device choice, seeding (per run, per epoch, per data-loader worker) and fitting the batch size into memory."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import numpy as np
import torch

from deuterium.errors import ConfigError
from deuterium.settings import EnvironmentSettings

log = logging.getLogger(__name__)


def device(env: EnvironmentSettings) -> torch.device:
    if env.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("environment.device is 'cuda' but no CUDA GPU is available; use 'auto' or 'cpu'")
    if env.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def seed_everything(seed: int) -> int:
    """Seed Python, numpy and torch; -1 draws a random seed (logged, so a run can be repeated)."""
    if seed < 0:
        seed = random.SystemRandom().randrange(2**31)
        log.info("seed -1: drew seed %d", seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch of one run: an epoch replays the same whether or not the run was resumed."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: numpy and random in each worker from torch's per-worker seed.

    torch seeds itself per worker (base seed from the loader's generator + worker id), but numpy
    and random would otherwise start from the parent's state, the same in every worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def is_out_of_memory(err: BaseException) -> bool:
    """A device or host allocation failure (retrying smaller can help), not any other error."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "CUDA out of memory" in text or "DefaultCPUAllocator: can't allocate memory" in text
    )


def fit_batch_size(try_batch: Callable[[int], None], batch_size: int) -> int:
    """The largest of batch_size, batch_size/2, ... 1 for which try_batch runs without running out of memory."""
    size = batch_size
    while True:
        try:
            try_batch(size)
            return size
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            if size == 1:
                raise ConfigError(
                    "out of memory at batch size 1: choose a smaller architecture.backbone or "
                    "smaller inputs (the data type's size settings)"
                ) from None
            log.warning("out of memory at batch size %d; trying %d", size, max(1, size // 2))
        # outside the except block, so the traceback no longer holds the failed batch's tensors
        size = max(1, size // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def autocast(dev: torch.device, enabled: bool):
    dtype = torch.bfloat16 if dev.type == "cpu" else torch.float16
    return torch.autocast(dev.type, dtype=dtype, enabled=enabled and dev.type == "cuda")
