"""Test support for serving: a tiny real model folder, audio files, and subprocesses with their own BENTOML_HOME.

The model follows the scoring contract (model.onnx + preprocessing.json): a few waveform statistics ->
linear -> softmax over 3 labels, exported by torch's dynamo exporter with a dynamic batch and length.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
MAX_UPLOAD = 2_000_000  # the served test model's limits
MAX_FILES = 4
SAMPLE_RATE = 8000
LABELS = ["a", "b", "c"]
PREPROCESSING = {
    "problem_type": "audio_classification",
    "data_type": "audio",
    "experiment_name": "Tiny_Test.Model",
    "input": {
        "sample_rate": SAMPLE_RATE,
        "chunk_samples": 8000,
        "max_seconds": 30,
        "max_decoded_samples": 2_000_000,
    },
    "target_names": ["label"],
    "labels": LABELS,
    "format_version": 2,
}


def write_model_dir(folder: Path) -> Path:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.head = torch.nn.Linear(4, len(LABELS))

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            magnitude = waveform.abs()
            crossings = (waveform[:, 1:] * waveform[:, :-1] < 0).float().mean(1)
            rms = waveform.pow(2).mean(1).sqrt()
            features = torch.stack([magnitude.mean(1), rms, magnitude.amax(1), crossings], 1)
            return torch.softmax(self.head(features * 4), dim=1)

    folder.mkdir(parents=True, exist_ok=True)
    dims = {"waveform": {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=2)}}
    torch.onnx.export(
        Tiny().eval(),
        (torch.randn(2, SAMPLE_RATE),),
        str(folder / "model.onnx"),
        input_names=["waveform"],
        output_names=["output"],
        dynamic_shapes=dims,
        dynamo=True,
        verbose=False,
    )
    (folder / "preprocessing.json").write_text(json.dumps(PREPROCESSING, indent=2))
    (folder / "parity.json").write_text(json.dumps({"max_abs_diff": 0.0, "passed": True}))
    return folder


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A sine with a little noise, [frames, channels] float32; channels differ so mixing down matters."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    cols = [
        0.5 / (c + 1) * np.sin(2 * np.pi * freq * (c + 1) * t) + 0.05 * rng.standard_normal(t.size)
        for c in range(channels)
    ]
    return np.stack(cols, 1).astype(np.float32)


def write_audio(
    path: Path, seconds: float, rate: int, channels: int = 1, fmt: str = "WAV", subtype: str = "PCM_16", **kw
) -> Path:
    sf.write(str(path), tone(seconds, rate, channels=channels, **kw), rate, format=fmt, subtype=subtype)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bentoml_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a bentoml or stage subprocess with its own BENTOML_HOME."""
    return {
        **os.environ,
        "BENTOML_HOME": str(home),
        "DO_NOT_TRACK": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def package(model_dir: Path, out: Path, home: Path) -> str:
    """Run the package stage as dvc would; returns the bento tag it wrote."""
    run(
        [sys.executable, "-m", "stages.package", "--model-dir", str(model_dir), "--out", str(out)],
        bentoml_env(home),
    )
    return (out / "bento.txt").read_text().strip()
