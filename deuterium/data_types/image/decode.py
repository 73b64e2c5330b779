"""Image files and uploads -> uint8 pixels [height, width, channels] (numpy and Pillow; no torch).

The size is read from the header and checked against `max_pixels` (and the longest side against
`max_side`) before anything is decoded, so a small file that would decode to a huge image (a decompression
bomb) costs nothing. Only the formats in FORMATS are opened: some other Pillow plugins (ICO, ICNS) decode
while opening, before any size is known. Pillow's own bomb check stays on at CEILING as a second guard.
"""

from __future__ import annotations

import io
import math
import re
import reprlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deuterium.data_types.base import Decoder, from_base64
from deuterium.errors import InputError

SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
CEILING = 500_000_000  # pixels: what even training data may not exceed (image.max_pixels' own maximum)
Image.MAX_IMAGE_PIXELS = CEILING // 2  # Pillow refuses twice this while opening: our ceiling, as a backstop
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # read their size from the header, decode on load()


def max_side(max_pixels: int) -> int:
    """The longest side an image may have: 4 x the side of a square of max_pixels. Without it a 1 x 10^7
    image passes the pixel limit, and resizing it to a square makes intermediates of gigabytes."""
    return 4 * math.isqrt(max_pixels)


def open_image(source: Path | str | bytes, name: str, limit: int = CEILING) -> Image.Image:
    """The image, opened lazily (header only); InputError naming `name` when it is not one. `limit`: the
    pixel limit an image too large for Pillow to open at all is reported against (the caller's own)."""
    try:
        data = io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source)
        return Image.open(data, formats=FORMATS)
    except MemoryError:
        raise
    except Image.DecompressionBombError as err:
        size = re.search(r"\((\d+) pixels\)", str(err))  # Pillow's message holds the image's size
        given = f"{size.group(1)} pixels is" if size else "the image is"
        setting = (
            "image.max_pixels"
            if limit < CEILING
            else "the most any image may have; image.max_pixels's own maximum"
        )
        raise InputError(f"{name}: {given} more than the limit of {limit} ({setting})") from None
    except Exception as err:  # Pillow's plugins raise many types for broken or hostile headers
        if isinstance(err, FileNotFoundError):
            raise InputError(f"{name}: file not found") from None
        raise InputError(f"{name}: not a readable image ({_reason(err)})") from None


def _empty_file(path: Path | str) -> bool:
    try:
        return Path(path).stat().st_size == 0
    except OSError:
        return False  # missing or unreadable: open_image names why


def _reason(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return f"format not recognised; {', '.join(FORMATS)} are read"
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.rstrip(".")


def pixels(im: Image.Image, channels: int, name: str, min_side: int = 0) -> np.ndarray:
    """Decode `im` to uint8 [height, width, channels]: EXIF orientation applied, 16-bit scaled to 8,
    alpha dropped, grey replicated to RGB or colour converted to grey as the model takes it. With
    `min_side`, an image whose shorter side is at least twice that is shrunk by a whole factor while
    that side stays at least `min_side` (see shrink_factor)."""
    try:
        factor = shrink_factor(im.size, min_side)
        if factor > 1 and im.format == "JPEG":  # libjpeg decodes at 1/2, 1/4 or 1/8 of the size
            im.draft(im.mode, (im.size[0] // factor, im.size[1] // factor))
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in (*SIXTEEN_BIT, "I", "F"):
            im = Image.fromarray(_to_8_bit(np.asarray(im), im.mode))
        im = im.convert("L" if channels == 1 else "RGB")
        if (factor := shrink_factor(im.size, min_side)) > 1:  # what the draft left to shrink
            im = im.reduce(factor)
    except MemoryError:
        raise
    except Exception as err:  # truncated, corrupt, or a plugin's own failure: the input's fault
        raise InputError(f"{name}: image data is corrupt ({_reason(err)})") from None
    out = np.array(im, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    return out[..., np.newaxis] if out.ndim == 2 else out


def shrink_factor(size: tuple[int, int], min_side: int) -> int:
    """The whole factor a decoded image is shrunk by before the graph sees it: its shorter side stays
    at least `min_side` (preprocessing.json's `decoded_min_side`, 4 x image_size: a random resized crop
    of a sixteenth of the image still has all the pixels the model takes). A 6000 x 6000 photo for a
    model of 224 pixels is 1000 x 1000 afterwards: the graph's float copies and antialiased resize of
    36 M pixels (gigabytes in the service, per image) become those of 1 M. Training decodes with the same
    decoder, so the model learns from the pixels the service gives it."""
    return max(1, min(size) // min_side) if min_side > 0 else 1


def _to_8_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """16- and 32-bit integer images as 16-bit scaled by 1/257 (rounded), float images in [0, 1] scaled to
    255. A block of rows at a time, in whole numbers for integer images: the float64 copy of the whole
    image this was (8 bytes a pixel) made a 16-bit grey upload near image.max_pixels cost 5.6 GB."""
    out = np.empty(values.shape, np.uint8)
    rows = max(1, (1 << 20) // max(1, values[0].size))  # about a million values a block
    scale = mode == "F" and np.nanmax(values, initial=0) <= 1
    for start in range(0, len(values), rows):
        block = values[start : start + rows]
        if mode != "F":
            wide = np.clip(block, 0, 65535).astype(np.uint32)
            wide += 128
            wide //= 257  # round(v / 257): v / 257 is never k + 0.5
            out[start : start + rows] = wide
        else:
            block = block.astype(np.float32) * (255 if scale else 1)
            out[start : start + rows] = np.nan_to_num(np.clip(block, 0, 255)).round()
    return out


class ImageDecoder(Decoder):
    input_name = "pixels"

    def __init__(self, settings: dict, bounded: bool = True):
        super().__init__(settings, bounded)
        self.channels = int(settings.get("channels", 3))
        self.max_pixels = int(settings.get("max_pixels", 40_000_000))
        # 0 (a model exported before it was written): the image at the size it was decoded, as then
        self.min_side = int(settings.get("decoded_min_side", 0))

    def check_size(self, width: int, height: int, name: str) -> None:
        if width < 1 or height < 1:
            raise InputError(f"{name}: the image has no pixels ({width}x{height})")
        limit = self.limit
        if width * height > limit:
            raise InputError(
                f"{name}: {width}x{height} = {width * height} pixels is more than the limit of {limit} "
                "(image.max_pixels)"
            )
        if max(width, height) > max_side(limit):
            raise InputError(
                f"{name}: {width}x{height} has a side longer than the limit of {max_side(limit)} pixels "
                "(4 x the side of a square of image.max_pixels)"
            )

    @property
    def limit(self) -> int:
        """Pixels one image may have: image.max_pixels for a request, CEILING for training data."""
        return self.max_pixels if self.bounded else CEILING

    def max_cost(self) -> int:
        return self.max_pixels * self.channels if self.bounded else 0

    def cost(self, source: bytes, name: str) -> int:
        """Decoded bytes, from the header alone (the service bounds a whole batch by it)."""
        with open_image(source, name, self.limit) as im:
            self.check_size(*im.size, name)
            return im.size[0] * im.size[1] * self.channels

    def load(self, source: Path | str | bytes, name: str | None = None) -> np.ndarray:
        name = name or (str(source) if not isinstance(source, bytes | bytearray) else "upload")
        empty = not source if isinstance(source, bytes | bytearray) else _empty_file(source)
        if empty:  # as the service says of an empty upload, not "format not recognised"
            raise InputError(f"{name}: the file is empty")
        with open_image(source, name, self.limit) as im:
            self.check_size(*im.size, name)
            return pixels(im, self.channels, name, self.min_side)

    def from_json(self, payload: dict[str, Any]) -> np.ndarray:
        """`image_base64`: a whole image file; or `pixels`: rows of pixels, each a number 0-255 (grey) or a
        list of 1, 3 or 4 numbers (alpha dropped)."""
        unknown = [k for k in payload if k not in ("image_base64", "pixels")]
        sent = [k for k in ("image_base64", "pixels") if payload.get(k) is not None]
        if unknown or len(sent) != 1:
            raise InputError(
                "send exactly one of 'image_base64', 'pixels'"
                + (f"; unknown: {', '.join(map(reprlib.repr, unknown[:5]))}" if unknown else "")
            )
        if sent[0] == "image_base64":
            return self.load(from_base64("image_base64", payload["image_base64"]), "image_base64")
        try:
            arr = np.asarray(payload["pixels"])
        except (ValueError, TypeError, OverflowError):
            arr = None  # ragged rows
        if arr is None or arr.dtype.kind not in "iuf":  # not true/false, nor "12", as numbers
            raise InputError(
                "pixels: rows of equal length, of numbers or of equal-length lists of numbers"
            ) from None
        arr = arr.astype(np.float64)
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
        image = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        return pixels(image, self.channels, "pixels", self.min_side)

    def limits(self) -> dict:
        return {"max_pixels": self.max_pixels, "channels": self.channels}
