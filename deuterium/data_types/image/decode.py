"""Image files and uploads -> uint8 pixels [height, width, channels] (numpy and Pillow; no torch).

The size is read from the header and checked against `max_pixels` before anything is decoded, so a small
file that would decode to a huge image (a decompression bomb) costs nothing; Pillow's own bomb check stays
on for training data too.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deuterium.data_types.base import Decoder
from deuterium.errors import InputError

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
CEILING = 500_000_000  # pixels: what even training data may not exceed (image.max_pixels' own maximum)
Image.MAX_IMAGE_PIXELS = None  # Pillow's bomb check is replaced by ours, made before any decoding


def open_image(source: Path | str | bytes, name: str) -> Image.Image:
    """The image, opened lazily (header only); InputError naming `name` when it is not one."""
    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise InputError(f"{name}: not a readable image ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "format not recognised"
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.rstrip(".")


def pixels(im: Image.Image, channels: int, name: str) -> np.ndarray:
    """Decode `im` to uint8 [height, width, channels]: EXIF orientation applied, 16-bit scaled to 8,
    alpha dropped, grey replicated to RGB or colour converted to grey as the model takes it."""
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in SIXTEEN_BIT:
            im = Image.fromarray((np.asarray(im, dtype=np.float32) / 257).round().astype(np.uint8))
        im = im.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # truncated, corrupt
        raise InputError(f"{name}: image data is corrupt ({_reason(err)})") from None
    out = np.array(im, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    return out[..., np.newaxis] if out.ndim == 2 else out


class ImageDecoder(Decoder):
    input_name = "pixels"

    def __init__(self, settings: dict, bounded: bool = True):
        super().__init__(settings, bounded)
        self.channels = int(settings.get("channels", 3))
        self.max_pixels = int(settings.get("max_pixels", 40_000_000))

    def check_size(self, width: int, height: int, name: str) -> None:
        if width < 1 or height < 1:
            raise InputError(f"{name}: the image has no pixels ({width}x{height})")
        limit = self.max_pixels if self.bounded else CEILING
        if width * height > limit:
            raise InputError(
                f"{name}: {width}x{height} = {width * height} pixels is more than the limit of {limit} "
                "(image.max_pixels)"
            )

    def load(self, source: Path | str | bytes, name: str | None = None) -> np.ndarray:
        name = name or (str(source) if not isinstance(source, bytes | bytearray) else "upload")
        if isinstance(source, bytes | bytearray) and not source:
            raise InputError(f"{name}: the file is empty")
        with open_image(source, name) as im:
            self.check_size(*im.size, name)
            return pixels(im, self.channels, name)

    def from_json(self, payload: dict[str, Any]) -> np.ndarray:
        """`image_base64`: a whole image file; or `pixels`: rows of pixels, each a number 0-255 (grey) or a
        list of 1, 3 or 4 numbers (alpha dropped)."""
        unknown = [k for k in payload if k not in ("image_base64", "pixels")]
        sent = [k for k in ("image_base64", "pixels") if payload.get(k) is not None]
        if unknown or len(sent) != 1:
            raise InputError(
                "send exactly one of 'image_base64', 'pixels'"
                + (f"; unknown: {unknown[:5]}" if unknown else "")
            )
        if sent[0] == "image_base64":
            text = payload["image_base64"]
            if not isinstance(text, str):
                raise InputError("image_base64: a base64 string")
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise InputError("image_base64: not valid base64") from None
            return self.load(data, "image_base64")
        try:
            arr = np.asarray(payload["pixels"], dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError(
                "pixels: rows of equal length, of numbers or of equal-length lists of numbers"
            ) from None
        if arr.ndim == 2:
            arr = arr[..., np.newaxis]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise InputError(
                f"pixels: [height][width] or [height][width][1, 3 or 4], got shape {list(arr.shape)}"
            )
        self.check_size(arr.shape[1], arr.shape[0], "pixels")
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
            raise InputError("pixels: every value a number from 0 to 255")
        arr = arr[..., :3].round().astype(np.uint8)
        return pixels(Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr), self.channels, "pixels")

    def limits(self) -> dict:
        return {"max_pixels": self.max_pixels, "channels": self.channels}
