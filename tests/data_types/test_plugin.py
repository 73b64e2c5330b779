"""The data-type plug-in: stages, flows, serving, export and training never name a data type; every
registered problem type trains a batch, exports and scores (as timm's test_models runs every model); the
scoring side imports no torch."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from projects import REPO

from deuterium import config, data_types, export, problems, scoring

GENERIC = ["stages", "flows", "serving", "deuterium/export.py", "deuterium/training.py"]
# BentoML's own API for the container a bento runs in: its words, not a data type
BENTOML_API = re.compile(r"bentoml\.images\.Image|\bimage=CONTAINER\b")


def generic_files() -> list:
    found = []
    for entry in GENERIC:
        path = REPO / entry
        found += sorted(path.rglob("*")) if path.is_dir() else [path]
    return [p for p in found if p.is_file() and p.suffix in (".py", ".yaml", ".yml")]


def test_generic_code_never_names_a_data_type():
    words = re.compile(r"audio|image", re.IGNORECASE)
    offending = []
    for path in generic_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if words.search(BENTOML_API.sub("", line)):
                offending.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert len(generic_files()) > 15  # the check really reads the stages, flows and serving
    assert not offending, "\n".join(offending)


def test_the_check_would_catch_a_data_type_name(tmp_path):
    assert re.search(r"audio|image", "exp.audio.sample_rate", re.IGNORECASE)
    assert not re.search(
        r"audio|image", BENTOML_API.sub("", "x = bentoml.images.Image(python_version='3.11')")
    )


def test_every_data_type_is_paired_with_every_task_it_takes():
    names = problems.names()
    for dt in data_types.registered().values():
        for task in dt.tasks:
            assert f"{dt.name}_{task}" in names
    assert {"audio_classification", "audio_regression", "image_classification", "image_regression"} <= set(
        names
    )


def test_the_scoring_side_imports_no_torch():
    """The bento installs onnxruntime, numpy, pydantic and the decoders' requirements: no torch, no pandas."""
    code = (
        "import sys\n"
        "class Block:\n"  # any import of torch or pandas now fails
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'pandas'): raise ImportError(name + ' is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from deuterium import scoring, data_types\n"
        "for dt in data_types.registered().values():\n"
        "    assert dt.decoder(dt.limits_example | {'sample_rate': 8000, 'chunk_samples': 8000})\n"
        "import serving.service\n"
        "assert not {'torch', 'pandas'} & set(sys.modules)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _params(name: str) -> dict:
    dt = name.split("_")[0]
    params = {
        "problem_type": name,
        "dataset": {"train_dataframe": "train.csv", "data_folder": ".", "label_columns": ["y"]},
        "architecture": {"backbone": "resnet10t"},
    }
    if dt == "audio":
        params["audio"] = {"sample_rate": 8000, "training_chunk_seconds": 0.5, "stft_window_size": 256}
    if dt == "image":
        params["image"] = {"image_size": 32, "channels": 3}
    if dt == "tabular":
        params["tabular"] = {"hidden": [8, 4], "epochs": 1}
    return params


def _inputs(name: str, tmp_path) -> list:
    rng = np.random.default_rng(0)
    files = []
    if name.startswith("tabular"):  # no files: the frame's rows are the inputs
        import pandas as pd

        y = ["a", "b"] if name.endswith("classification") else [0.5, 2.0]
        frame = pd.DataFrame({"x1": [0.5, np.nan], "colour": ["red", None], "y": y})
        return data_types.get("tabular")().files(frame, None)
    if name.startswith("audio"):
        import soundfile as sf

        for i, seconds in enumerate((0.3, 1.2)):
            files.append(tmp_path / f"{i}.wav")
            sf.write(files[-1], 0.2 * rng.standard_normal(int(seconds * 8000)), 8000)
    else:
        from PIL import Image

        for i, (h, w) in enumerate(((20, 30), (64, 48))):
            files.append(tmp_path / f"{i}.png")
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(files[-1])
    return files


@pytest.mark.parametrize("name", problems.names())
def test_every_problem_type_trains_a_batch_and_exports(name, tmp_path):
    exp = config.parse(_params(name))
    problem = problems.of(exp)
    files = _inputs(name, tmp_path)
    if name.startswith("tabular"):  # the split stage's fitted columns
        exp = problem.data.resolve(exp, {"tabular": problem.data.choose(files, exp)})
    info = (
        {"labels": ["a", "b"], "target_names": ["y"]}
        if problem.label_kind == "categorical"
        else {"target_names": ["y"], "target_mean": [1.25], "target_sd": [0.75]}
    )
    n = problem.n_outputs(info)
    targets = np.eye(n, dtype=np.float32)[[0, 1]] if n > 1 else np.array([[0.5], [2.0]], np.float32)
    dataset = problem.data.dataset(files, targets, exp, seed=0)
    x, y = zip(*(dataset[i] for i in range(len(files))), strict=True)
    torch.manual_seed(0)
    scale = problem.target_scale(exp, info)
    assert (scale is not None) == (name in ("audio_regression", "image_regression"))
    model = problem.model(exp, n, scale).train()
    loss = problem.loss(exp, scale)(model(torch.stack(x)).float(), torch.stack(y))
    loss.backward()
    assert torch.isfinite(loss) and all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
    )
    report = export.export(exp, problem, info, [model.eval()], files, tmp_path / "export")
    assert report["max_abs_diff"] <= 1e-4
    scorer = scoring.Scorer(tmp_path / "export")
    out = scorer.predict([scorer.load(f) for f in files])
    assert len(out) == 2 and ("probabilities" in out[0] or "predictions" in out[0])
