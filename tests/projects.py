"""Build small, self-contained deuterium projects (code + a slice of FSDD + params) in a temporary folder.

Tests run the real pipeline in them: `dvc repro` in a fresh git repo, Prefect flows, `bentoml serve`.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
FSDD = REPO / "data" / "fsdd"
# What a whole run of the pipeline leaves (dvc.yaml's stages, in order).
PIPELINE_OUTPUTS = [
    "artifacts/validate/report.json",
    "artifacts/split/folds.parquet",
    "artifacts/train/fold0/model.safetensors",
    "artifacts/pseudo/oof.parquet",
    "metrics.json",
    "artifacts/export/model.onnx",
    "artifacts/export/preprocessing.json",
    "artifacts/package/bento.txt",
]
CODE = ["deuterium", "stages", "serving", "flows", "dvc.yaml", "pyproject.toml"]

# A few seconds of CPU per stage: 2 speakers x 10 digits x 3 takes to train on, a tiny net, 1 epoch.
TINY = {
    "experiment_name": "tiny-digits",
    "dataset": {"number_of_folds": 2, "selected_folds": "all"},
    "audio": {"training_chunk_seconds": 0.5},
    # the augmentations off, so a test sees the data as it is (tests/test_audio_augment.py covers them)
    "augmentation": {
        "time_shift_probability": 0.0,
        "gain_probability": 0.0,
        "noise_probability": 0.0,
        "speed_probability": 0.0,
        "frequency_masks": 0,
        "time_masks": 0,
    },
    "architecture": {"backbone": "mobilenetv3_small_050", "dropout": 0.0},
    # validating every epoch (params.yaml: every 2nd), so a test of a few epochs sees each one's curves
    "training": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0.0, "evaluation_epochs": 1.0},
    "prediction": {"batch_size_inference": 32},
    # one fold after another: starting a process per fold costs more than these runs take
    # (tests/test_training_runs.py and tests/e2e/test_pipeline.py train folds at once)
    "environment": {"parallel_folds": 1},
}


def env() -> dict:
    """The environment for subprocesses: this interpreter's bin first, so dvc.yaml's `python` is ours."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    return out


def in_own_group(args: list[str], cwd: Path, env: dict | None = None, **streams) -> subprocess.Popen:
    """A process in its own process group, as a terminal's foreground job (Ctrl-C: os.killpg(pid, SIGINT)),
    its output as text; `streams`: stdout/stderr (default: both piped)."""
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **streams}
    return subprocess.Popen(args, cwd=cwd, env=env, text=True, start_new_session=True, **streams)


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        check=check,
    )


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def tiny_params(overrides: dict | None = None, base: Path = REPO / "params.yaml") -> dict:
    return merge(merge(yaml.safe_load(base.read_text()), TINY), overrides or {})


def slice_fsdd(
    dest: Path, speakers=("george", "jackson"), train_takes=range(5, 8), test_takes=range(0, 1)
) -> None:
    """Copy a slice of FSDD into dest/data/fsdd with the same layout as the repo's data/fsdd."""
    (dest / "data" / "fsdd" / "recordings").mkdir(parents=True, exist_ok=True)
    for name, takes in (("train", train_takes), ("test", test_takes)):
        frame = pd.read_csv(FSDD / f"{name}.csv")
        frame = frame[frame.speaker.isin(speakers) & frame["index"].isin(list(takes))]
        frame.to_csv(dest / "data" / "fsdd" / f"{name}.csv", index=False)
        for file in frame.file:
            shutil.copy(FSDD / "recordings" / file, dest / "data" / "fsdd" / "recordings" / file)


def write_params(dest: Path, params: dict, name: str = "params.yaml") -> Path:
    path = dest / name
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# A few seconds of CPU per stage on MNIST: 150 training and 60 test images, timm's smallest ResNet, 1 epoch.
TINY_IMAGE = {
    "experiment_name": "tiny-mnist",
    "prepare": {"max_rows": 150},
    "architecture": {"backbone": "test_resnet"},
    "training": {"epochs": 1, "batch_size": 32, "warmup_epochs": 0.0},
    "logging": {"number_of_images_to_show": 2},
}


def make_image_project(
    dest: Path, config: str = "configs/mnist_image.yaml", overrides: dict | None = None
) -> Path:
    """A fresh git + DVC project of an image config on MNIST's original files (data/mnist), made tiny."""
    params = merge(merge(yaml.safe_load((REPO / config).read_text()), TINY_IMAGE), overrides or {})
    return make_project(dest, params=params, data=["data/mnist"])


def make_project(
    dest: Path,
    overrides: dict | None = None,
    git: bool = True,
    params: dict | None = None,
    data: list[str] | None = None,
) -> Path:
    """A fresh project folder: code, a slice of the data, tiny params; a git + DVC repo with one commit.

    `params` and `data` (folders of the repo to copy) replace the FSDD slice and its tiny params."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in CODE:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dest / item)
    shutil.copy(REPO / ".gitignore", dest / ".gitignore")
    if data is None:
        slice_fsdd(dest)
    for folder in data or []:
        shutil.copytree(REPO / folder, dest / folder)
    write_params(dest, params if params is not None else tiny_params(overrides))
    if git:
        init_repo(dest)
    return dest


def init_repo(dest: Path) -> None:
    """Make `dest` a git + DVC repo with everything in one commit."""
    run = lambda *cmd: subprocess.run(cmd, cwd=dest, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q", "-b", "main")
    run("git", "config", "user.email", "tests@deuterium.local")
    run("git", "config", "user.name", "tests")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    # the repository's own .dvcignore (dvc init writes an empty one): bytecode that Python writes into
    # the code folders as the stages import them must not change the stages' deps
    shutil.copy(REPO / ".dvcignore", dest / ".dvcignore")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "tiny project")


@functools.cache
def black_png(width: int, height: int) -> bytes:
    """A real, valid grey PNG of width x height black pixels, streamed through zlib: a decompression bomb of
    a few hundred KB for hundreds of megapixels (it is never held decoded here)."""
    import struct
    import zlib

    row = b"\0" * (width + 1)  # filter byte + pixels
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
