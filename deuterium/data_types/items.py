"""What every data type's training Dataset shares: files, targets, and randomness tied to (seed, epoch, row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset


class SeededItems(Dataset):
    """Item i's randomness comes from (seed, epoch, i) alone, so data-loader workers never repeat each other
    and a resumed run draws what the killed one would have (the training loop calls set_epoch)."""

    def __init__(self, files: list[Path], targets: np.ndarray, seed: int):
        self.files, self.targets = files, targets
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def item_seed(self, i: int) -> int:
        return int(np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0])
