"""Turn a dataset's original files into what the pipeline reads: one file per row and a dataframe per split.

It runs once, as its own DVC stage, so the slow conversion is cached and repeats only when its params or
the source files change. A recipe is one function registered here; `prepare` runs it into a scratch
folder and swaps that in, so a killed run never leaves a half-prepared folder behind.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from deuterium import io
from deuterium.errors import DataError
from deuterium.settings import PrepareSettings

log = logging.getLogger(__name__)

PREPARED_FILE = "prepared.json"


Recipe = Callable[[PrepareSettings, Path], dict]
RECIPES: dict[str, Recipe] = {}


def recipe(name: str) -> Callable[[Recipe], Recipe]:
    """Register a recipe: fn(settings, out_dir) fills out_dir and returns what prepared.json should add."""

    def register(fn: Recipe) -> Recipe:
        if name in RECIPES:
            raise ValueError(f"prepare recipe {name!r} is registered twice")
        RECIPES[name] = fn
        return fn

    return register


def prepare(settings: PrepareSettings, out_dir: Path) -> dict:
    """Run the settings' recipe into out_dir (replacing it) and return the summary also in prepared.json."""
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed run
    partial.mkdir(parents=True)
    try:
        summary = {"recipe": settings.recipe, **RECIPES[settings.recipe](settings, partial)}
        io.write_json(summary, partial / PREPARED_FILE)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # Rename the old folder aside first: at every moment out_dir is either the old or the new result.
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    partial.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return summary


@recipe("none")
def _none(settings: PrepareSettings, out_dir: Path) -> dict:
    return {}


# ---- mnist_idx: the original MNIST files, as distributed (data/mnist/README.md) ----

IDX_IMAGES, IDX_LABELS = 2051, 2049  # magic numbers: unsigned bytes, 3 and 1 dimensions
MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
PNG_LEVEL = 1  # on 28x28 images the default (6) saves about 2% of the bytes, for more time


@recipe("mnist_idx")
def _mnist_idx(settings: PrepareSettings, out_dir: Path) -> dict:
    splits = {split: _read_split(settings.source, *names) for split, names in MNIST_SPLITS.items()}
    sizes = {split: list(images.shape[1:]) for split, (images, _) in splits.items()}
    if sizes["train"] != sizes["test"]:
        raise DataError(f"{settings.source}: train images are {sizes['train']} pixels, test {sizes['test']}")
    rows = {}
    for split, (images, labels) in splits.items():
        images, labels = images[: settings.max_rows], labels[: settings.max_rows]
        started = time.perf_counter()
        files = write_pngs(images, out_dir, split)
        frame = pd.DataFrame({"image": files, "digit": labels.astype(int)})
        frame.to_csv(out_dir / f"{split}.csv", index=False)
        log.info("%s: %d images in %.1f s", split, len(files), time.perf_counter() - started)
        rows[split] = len(files)
    return {"rows": rows, "image_size": sizes["train"], "columns": ["image", "digit"]}


def _read_split(folder: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
    images, labels = read_idx(images_path, IDX_IMAGES), read_idx(labels_path, IDX_LABELS)
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images, but {labels_path} has {len(labels)} labels")
    if labels.max() > 9:
        raise DataError(f"{labels_path}: label {labels.max()} is not a digit 0-9")
    return images, labels


def _find(folder: Path, name: str) -> Path:
    for path in (folder / f"{name}.gz", folder / name):
        if path.is_file():
            return path
    raise DataError(f"{folder / name}[.gz]: no such file (prepare.source must hold the four MNIST IDX files)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (gzipped when its name ends in .gz) as a uint8 array, checked against its own header."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # not gzip, or a truncated gzip stream
        raise DataError(f"{path}: cannot be read ({err})") from None
    kind = "images" if magic == IDX_IMAGES else "labels"
    header = 4 + 4 * (magic & 0xFF)  # the magic number's last byte is the number of dimensions
    if len(data) < header:
        raise DataError(
            f"{path}: {len(data)} bytes, shorter than an IDX {kind} header ({header}); truncated?"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: magic number {found}, expected {magic} (IDX {kind}); is this the right file?"
        )
    shape = tuple(int.from_bytes(data[i : i + 4], "big") for i in range(4, header, 4))
    if 0 in shape:
        raise DataError(f"{path}: dimensions {shape} hold no data")
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, but dimensions {shape} need {expected} (truncated?)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def write_pngs(images: np.ndarray, out_dir: Path, split: str) -> list[str]:
    """Write images[i] to out_dir/split/i.png (zero padded) as 8-bit grayscale; returns the relative paths.

    A plain loop: a pool of two processes was not faster on a shared 2-core runner (measured)."""
    width = max(5, len(str(len(images) - 1)))
    files = [f"{split}/{i:0{width}d}.png" for i in range(len(images))]
    (out_dir / split).mkdir()
    for pixels, file in zip(images, files, strict=True):
        Image.fromarray(pixels).save(out_dir / file, compress_level=PNG_LEVEL)
    return files


@recipe("mnist_idx_columns")
def _mnist_idx_columns(settings: PrepareSettings, out_dir: Path) -> dict:
    """MNIST as a table, as H2O-3 reads it: 784 pixel columns C1..C784 (0-255) and the digit, one parquet
    file per split (a CSV of the 60,000 rows would be 110 MB and slow to parse)."""
    rows = {}
    for split, names in MNIST_SPLITS.items():
        images, labels = _read_split(settings.source, *names)
        images, labels = images[: settings.max_rows], labels[: settings.max_rows]
        pixels = images.reshape(len(images), -1)
        frame = pd.DataFrame(pixels, columns=[f"C{i + 1}" for i in range(pixels.shape[1])])
        frame["digit"] = labels.astype(int).astype(str)  # a class name, not a number: classification
        io.write_frame(frame, out_dir / f"{split}.parquet")
        rows[split] = len(frame)
    return {"rows": rows, "columns": pixels.shape[1] + 1}


ECG_FILES = {"train": "ecg_discord_train.csv", "test": "ecg_discord_test.csv"}
ECG_ANOMALIES = (20, 21, 22)  # the test file's rows 21-23 (0-based 20-22): the booklet's anomalous beats


@recipe("ecg_discord")
def _ecg_discord(settings: PrepareSettings, out_dir: Path) -> dict:
    """The H2O booklet's ECG heartbeats (no header, 210 readings a row) with named columns and an
    `anomaly` label: 1 for the test file's three anomalous beats, 0 elsewhere (not trained on)."""
    rows = {}
    for split, name in ECG_FILES.items():
        path = settings.source / name
        if not path.is_file():
            raise DataError(
                f"{path}: no such file (prepare.source must hold {', '.join(ECG_FILES.values())})"
            )
        frame = pd.read_csv(path, header=None)
        frame.columns = [f"t{i + 1}" for i in range(frame.shape[1])]
        frame["anomaly"] = 0
        if split == "test":
            frame.loc[list(ECG_ANOMALIES), "anomaly"] = 1
        frame = frame.head(settings.max_rows) if settings.max_rows else frame
        frame.to_csv(out_dir / f"{split}.csv", index=False)
        rows[split] = len(frame)
    return {"rows": rows, "anomalies": list(ECG_ANOMALIES)}
