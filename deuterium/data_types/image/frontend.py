"""Pixels -> the backbone's input, inside the model and the ONNX graph: uint8 [batch, height, width, channels]
of any size -> float [batch, channels, image_size, image_size], resized and normalized.

Training resizes with the same `resize` (stages see the same pixels as the service), so a training image
reaches the front end already at image_size and its resize is then exactly the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deuterium.data_types.image.settings import ImageSettings

IMAGENET = {1: ([0.449], [0.226]), 3: ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}


def resize(x: Tensor, size: int, method: str) -> Tensor:
    """[batch, channels, h, w] floats -> [batch, channels, size, size]. Antialiased bilinear, so a large photo
    does not alias. keep_aspect_ratio scales the longer side to `size`, then pads the shorter one (zeros,
    centred): padding first would make a square of the longer side at full resolution."""
    if method != "keep_aspect_ratio":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    h, w = x.shape[-2], x.shape[-1]
    longest = torch.sym_max(h, w)
    new_h = torch.sym_max((h * size + longest // 2) // longest, 1)
    new_w = torch.sym_max((w * size + longest // 2) // longest, 1)
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return F.pad(x, (left, size - new_w - left, top, size - new_h - top))


class ImageFrontEnd(nn.Module):
    def __init__(self, settings: ImageSettings):
        super().__init__()
        self.size, self.method, self.normalization = (
            settings.image_size,
            settings.resize_method,
            settings.normalization,
        )
        mean, std = IMAGENET[settings.channels]
        # Derived from the settings, so not saved with the weights.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.float().permute(0, 3, 1, 2) / 255.0
        x = resize(x, self.size, self.method)
        if self.normalization == "imagenet":
            return (x - self.mean) / self.std
        if self.normalization == "minus_one_one":
            return x * 2 - 1
        if self.normalization == "per_image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return x
