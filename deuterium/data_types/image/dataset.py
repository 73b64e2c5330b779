"""Training items of the image data type: decoded pixels, resized as the graph resizes, augmented with
torchvision transforms v2 (DeepQ's augmentations)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from deuterium.data_types.base import Decoder
from deuterium.data_types.image.frontend import resize
from deuterium.data_types.image.settings import ImageAugmentation, ImageSettings
from deuterium.data_types.items import SeededItems


class Resize:
    """The graph's resize as a transform (a class, not a lambda, so data-loader workers can pickle it)."""

    def __init__(self, size: int, method: str):
        self.size, self.method = size, method

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x[None], self.size, self.method)[0]


def transforms(settings: ImageSettings, aug: ImageAugmentation) -> v2.Compose:
    """[channels, h, w] floats in [0, 1] -> [channels, size, size]; every augmentation off is the identity."""
    size = settings.image_size
    steps: list = []
    if aug.random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=aug.crop_scale, ratio=aug.crop_ratio, antialias=True))
    else:
        steps.append(Resize(size, settings.resize_method))
    if aug.horizontal_flip_probability:
        steps.append(v2.RandomHorizontalFlip(aug.horizontal_flip_probability))
    if aug.vertical_flip_probability:
        steps.append(v2.RandomVerticalFlip(aug.vertical_flip_probability))
    if aug.rotation_degrees:
        steps.append(v2.RandomRotation(aug.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR))
    if aug.brightness or aug.contrast or aug.saturation or aug.hue:
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    return v2.Compose(steps)


class ImageFiles(SeededItems):
    """Item i: the image, transformed, as float pixels 0-255 [size, size, channels] (the graph's layout)."""

    def __init__(
        self,
        files: list[Path],
        targets: np.ndarray,
        decoder: Decoder,
        settings: ImageSettings,
        aug: ImageAugmentation,
        seed: int,
    ):
        super().__init__(files, targets, seed)
        self.decoder, self.transform = decoder, transforms(settings, aug)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.decoder.load(self.files[i])).permute(2, 0, 1).float() / 255.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.item_seed(i))
            x = self.transform(x)
        return (x.clamp(0, 1) * 255.0).permute(1, 2, 0).contiguous(), torch.from_numpy(self.targets[i])
