"""The image data type's settings: its `image` section (DeepQ's data loader options) and its keys in
dataset, augmentation (DeepQ's augmentations, with mixup) and logging."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from deuterium.settings import LoggingBase, MixSettings, Section


class ImageSettings(Section):
    channels: Literal[1, 3] = 3  # 1: grayscale (colour images are converted), 3: RGB (grey ones replicated)
    image_size: int = Field(224, ge=8, le=4096)  # the backbone sees image_size x image_size pixels
    # stretch: resized to a square whatever its shape; keep_aspect_ratio: padded (black) to a square first
    resize_method: Literal["stretch", "keep_aspect_ratio"] = "stretch"
    normalization: Literal["imagenet", "zero_one", "minus_one_one", "per_image"] = "imagenet"
    max_pixels: int = Field(40_000_000, ge=64, le=500_000_000)  # a larger image is refused before decoding


class ImageAugmentation(MixSettings):
    """Each off by default (exactly the identity); torchvision transforms v2, applied per image in training."""

    mix_image: Literal["disabled", "mixup"] = "disabled"
    horizontal_flip_probability: float = Field(0.0, ge=0, le=1)
    vertical_flip_probability: float = Field(0.0, ge=0, le=1)
    random_resized_crop: bool = (
        False  # a random part of the image, resized to image_size (replaces the resize)
    )
    crop_scale: tuple[float, float] = (0.08, 1.0)  # the part's area, as a fraction of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # the part's width / height
    brightness: float = Field(0.0, ge=0)  # colour jitter: factors drawn from [1 - b, 1 + b]
    contrast: float = Field(0.0, ge=0)
    saturation: float = Field(0.0, ge=0)  # RGB only
    hue: float = Field(0.0, ge=0, le=0.5)  # RGB only
    rotation_degrees: float = Field(0.0, ge=0, le=180)  # a random rotation within +-this

    @model_validator(mode="after")
    def _ranges(self) -> ImageAugmentation:
        for key, (low, high) in (("crop_scale", self.crop_scale), ("crop_ratio", self.crop_ratio)):
            if not 0 < low <= high:
                raise ValueError(f"augmentation.{key}: [low, high] with 0 < low <= high, got {[low, high]}")
        if self.crop_scale[1] > 1:
            raise ValueError(
                f"augmentation.crop_scale: at most 1 (the whole image), got {self.crop_scale[1]}"
            )
        return self


class ImageLogging(LoggingBase):
    number_of_images_to_show: int = Field(10, ge=0, le=1000)


DATASET_FIELDS = {"image_column": (str, "image")}
