import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

_spec = importlib.util.spec_from_file_location(
    "serving_support", Path(__file__).resolve().parents[1] / "serving" / "serving_support.py"
)
support = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(support)

pytestmark = pytest.mark.e2e


def _models(home: Path) -> list[dict]:
    done = support.run(
        [sys.executable, "-m", "bentoml", "models", "list", "-o", "json"], support.bentoml_env(home)
    )
    return json.loads(done.stdout)


def test_package_stores_the_model_and_writes_the_bento_tag(tmp_path):
    model_dir = support.write_model_dir(tmp_path / "export")
    home = tmp_path / "bentoml"
    tag = support.package(model_dir, tmp_path / "package", home)

    name, version = tag.split(":")
    assert name == "tiny_test.model" and version  # the experiment name, made a valid BentoML tag
    bento = home / "bentos" / name / version
    assert (bento / "bento.yaml").is_file()
    assert sorted(p.name for p in (bento / "src" / "serving").iterdir()) == ["__init__.py", "service.py"]
    [model] = _models(home)
    assert model["tag"].startswith("tiny_test.model:")
    stored = home / "models" / "tiny_test.model" / model["tag"].split(":")[1]
    for f in ("model.onnx", "preprocessing.json", "parity.json"):
        assert (stored / f).read_bytes() == (model_dir / f).read_bytes()
    assert f"model_tag: {model['tag']}" in (bento / "bento.yaml").read_text()

    # Packaging the same export again builds a new bento but reuses the stored model.
    support.package(model_dir, tmp_path / "package", home)
    assert len(_models(home)) == 1


def test_a_missing_export_is_one_clear_error(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.package",
            "--model-dir",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path),
        ],
        cwd=support.ROOT,
        env=support.bentoml_env(tmp_path / "bentoml"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none' / 'model.onnx'}: missing; run the export stage first (dvc repro export)"
    ]
