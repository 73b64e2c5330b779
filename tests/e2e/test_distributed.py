"""environment.number_of_gpus and sync_batch_normalization: real torchrun, 2 gloo processes on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from projects import REPO, env, make_project
from safetensors.torch import load_file

pytestmark = pytest.mark.e2e


def python(project: Path, *args: str) -> subprocess.CompletedProcess:
    environ = env() | {"PYTHONPATH": str(project)}  # the project's deuterium, for scripts run by path too
    return subprocess.run(
        [sys.executable, *args], cwd=project, env=environ, capture_output=True, text=True, timeout=300
    )


def test_number_of_gpus_trains_one_model_with_two_torchrun_processes(tmp_path):
    overrides = {
        "dataset": {"selected_folds": [0]},
        "environment": {"number_of_gpus": 2, "device": "cpu"},
        "logging": {"number_of_audios_to_show": 0},
        "training": {"batch_size": 8, "drop_last_batch": False},
    }
    root = make_project(tmp_path, overrides, git=False)
    assert python(root, "-m", "stages.split").returncode == 0
    result = python(root, "-m", "stages.train")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "distributed training: 2 processes (gloo)" in log
    # 30 training rows, 8 a batch: 4 batches an epoch alone, 2 for each of the 2 processes (15 rows each)
    assert "fold0: 30 training rows, 2 process(es) x 2 batches of 8 per epoch" in log
    assert log.count("fold0 epoch 1: loss") == 1  # rank 0 alone reports
    weights = load_file(str(root / "artifacts" / "train" / "fold0" / "model.safetensors"))
    assert not any(".module." in k or k.startswith("module.") for k in weights)  # the plain model, loadable
    assert (root / "artifacts" / "train" / "oof.parquet").is_file()


def test_sync_batch_normalization_uses_every_process_batch(tmp_path):
    out = tmp_path / "bn.json"
    worker = REPO / "tests" / "e2e" / "sync_bn_worker.py"
    result = python(
        REPO, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker), str(out)
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    got = json.loads(out.read_text())
    assert got["sync=False"]["running_mean"] == pytest.approx(got["local"], abs=1e-5)
    assert got["sync=True"]["running_mean"] == pytest.approx(got["global"], abs=1e-5)
    # with it, two processes on half a batch each learn what one process learns on the whole batch
    assert got["sync=True"]["grad"] == pytest.approx(got["reference"]["grad"], rel=1e-4, abs=1e-5)
    assert got["sync=False"]["grad"] != pytest.approx(got["reference"]["grad"], rel=1e-2)
    assert got["sync=True"]["classes"] == ["GlooSyncBatchNorm2d", "GlooSyncBatchNormAct2d"]
