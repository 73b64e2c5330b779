"""A `dvc repro` killed with SIGKILL in the middle of training continues from its last checkpoint when rerun."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from projects import dvc, env, make_project

pytestmark = pytest.mark.e2e

EPOCHS = 4


def test_a_killed_repro_resumes_after_its_last_saved_epoch(tmp_path):
    overrides = {
        "dataset": {"selected_folds": [0]},
        "training": {"epochs": EPOCHS},
        "logging": {"number_of_audios_to_show": 0},
    }
    root = make_project(tmp_path / "project", overrides)
    checkpoint = root / "artifacts" / "checkpoints" / "train" / "fold0" / "last.pt"
    with open(tmp_path / "first.log", "w") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "dvc", "repro", "train"],
            cwd=root,
            env=env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: dvc and the stage it runs
        )
        deadline = time.monotonic() + 300
        while not checkpoint.exists():
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    saved = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= saved < EPOCHS, f"the first run got to epoch {saved} of {EPOCHS} before the kill"

    second = dvc(root, "repro", "train", check=False)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert f"resuming after epoch {saved}" in log
    assert f"fold0 epoch {saved}:" not in log  # no epoch trained twice
    assert f"fold0 epoch {saved + 1}:" in log and f"fold0 epoch {EPOCHS}:" in log
    assert (root / "artifacts" / "train" / "fold0" / "model.safetensors").is_file()
    curves = root / "artifacts" / "train" / "dvclive" / "plots" / "metrics" / "fold0"
    loss = pd.read_csv(curves / "train" / "loss.tsv", sep="\t")
    assert len(loss) == EPOCHS and loss.step.is_monotonic_increasing  # the killed run's epochs kept, once
    assert "changed" not in dvc(root, "status", "train").stdout  # the stage and its lock entry are complete


def test_a_code_change_retrains_instead_of_resuming_a_finished_checkpoint(tmp_path):
    overrides = {"dataset": {"selected_folds": [0]}, "logging": {"number_of_audios_to_show": 0}}
    root = make_project(tmp_path / "project", overrides)
    first = dvc(root, "repro", "train", check=False)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    with open(root / "deuterium" / "training.py", "a") as f:  # what a bug fix in the training code does
        f.write("\n# changed\n")
    second = dvc(root, "repro", "train", check=False)
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-3000:]
    assert "Running stage 'train'" in log  # DVC saw the code change
    assert "resuming" not in log and "starting over" in log  # and the stage really trained again
    assert "fold0 epoch 1:" in log
