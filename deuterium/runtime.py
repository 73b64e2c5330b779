"""Device choice and seeding."""

from __future__ import annotations

import logging
import random

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


def autocast(dev: torch.device, enabled: bool):
    dtype = torch.bfloat16 if dev.type == "cpu" else torch.float16
    return torch.autocast(dev.type, dtype=dtype, enabled=enabled and dev.type == "cuda")
