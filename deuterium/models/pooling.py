"""Global pooling over a feature map [batch, channels, h, w] -> [batch, features] (HT's pool choices)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class Pool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.gem = GeM() if kind == "gem" else None

    def widen(self, channels: int) -> int:
        return channels * 2 if self.kind == "cat_average_max" else channels

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "gem":
            return self.gem(x)
        avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
        return {
            "average": avg,
            "max": mx,
            "cat_average_max": torch.cat([avg, mx], dim=1),
            "mean_average_max": (avg + mx) / 2,
        }[self.kind]
