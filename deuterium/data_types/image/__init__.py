"""Images: a column of image files (PNG, JPEG and what Pillow reads; any size, grey or colour) -> pixels ->
resize and normalize (in the graph) -> timm.

The ONNX graph takes decoded pixels, uint8 [batch, height, width, channels] of any size; decoding and the
size limit happen in the torch-free `ImageDecoder` (deuterium/data_types/image/decode.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deuterium.data_types.base import DataType, register
from deuterium.data_types.image.settings import DATASET_FIELDS, ImageAugmentation, ImageLogging, ImageSettings
from deuterium.errors import InputError


def _grey_colour_jitter(exp) -> None:
    aug = exp.augmentation
    if exp.image.channels == 1 and (aug.saturation or aug.hue):
        raise ValueError(
            "augmentation.saturation and augmentation.hue change colours, and image.channels 1 is grey; "
            "set them to 0 or use image.channels: 3"
        )


@register("image")
class Image(DataType):
    noun = "image"
    Settings = ImageSettings
    Augmentation = ImageAugmentation
    Logging = ImageLogging
    dataset_fields = DATASET_FIELDS
    column_key = "image_column"
    file_suffixes = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
    scoring_requirements = ("pillow",)
    front_end = "deuterium.data_types.image.frontend.ImageFrontEnd"
    decoder_class = "deuterium.data_types.image.decode:ImageDecoder"
    json_help = (
        "`image_base64`, a whole image file in base64; or `pixels`, rows of pixels, each a number 0-255 "
        "(grey) or a list of 3 (RGB)"
    )
    json_example = {"pixels": [[0, 128], [255, 64]]}
    limits_example = {"max_pixels": 40_000_000, "channels": 3}
    settings_checks = (_grey_colour_jitter,)

    def check_file(self, path: Path, shown: str, exp) -> str | None:
        decoder = self.decoder(self.preprocessing(exp), bounded=False)
        try:
            decoder.load(path, shown)
        except InputError as err:
            return str(err)
        return None

    def preprocessing(self, exp) -> dict:
        s = exp.image
        return {
            "channels": s.channels,
            "image_size": s.image_size,
            "resize_method": s.resize_method,
            "normalization": s.normalization,
            "max_pixels": s.max_pixels,
            "decoded_min_side": 4 * s.image_size,  # a large image is shrunk first (decode.shrink_factor)
        }

    def dataset(self, files, targets, exp, seed):
        from deuterium.data_types.image.dataset import ImageFiles

        decoder = self.decoder(self.preprocessing(exp), bounded=False)
        return ImageFiles(files, targets, decoder, exp.image, exp.augmentation, seed)

    def model(self, exp, n_outputs: int):
        from deuterium.data_types.image.frontend import ImageFrontEnd
        from deuterium.models.timm_model import TimmModel

        return TimmModel(ImageFrontEnd(exp.image), exp.image.channels, exp.architecture, n_outputs)

    def example_input(self, exp):
        import torch

        size, channels = exp.image.image_size, exp.image.channels
        # unequal sides, so the exporter keeps height and width apart
        example = torch.zeros(2, size + 3, size + 5, channels, dtype=torch.uint8)
        return example, {1: torch.export.Dim("height", min=2), 2: torch.export.Dim("width", min=2)}

    def render(self, x: np.ndarray, exp) -> tuple[np.ndarray, dict]:
        if x.shape[-1] == 1:
            return x[..., 0], {"cmap": "gray", "vmin": 0, "vmax": 255}
        return x, {}
