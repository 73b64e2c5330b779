"""`python -m deuterium.search --apply` then a real `dvc repro`, in a fresh git + DVC repo: the out-of-fold
metric in metrics.json is the best trial's metric on the leaderboard."""

import json
import subprocess
import sys

import pytest
import yaml
from projects import dvc, env, make_project

from deuterium import io, paths, search

pytestmark = pytest.mark.e2e


def test_apply_then_dvc_repro_gives_the_best_trials_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the train stage's threads, as each trial's (one CPU)
    overrides = {
        "dataset": {"selected_folds": "all"},  # both folds: the trial's metric is over their pooled rows
        # the best epoch's model, judged by the experiment's metric (Accuracy), not the search's (ROC_AUC)
        "training": {"epochs": 3, "save_best_checkpoint": True},
        "logging": {"number_of_audios_to_show": 0},
    }
    project = make_project(tmp_path / "project", overrides)
    done = dvc(project, "repro", "split", check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (project / "search.yaml").write_text(
        yaml.safe_dump(
            {
                "strategy": "grid",
                "space": {"training.learning_rate": [0.003, 0.008]},
                "metric": "ROC_AUC",  # not the experiment's, and not a mean of the folds' own AUCs
                "trials_at_once": 2,
                "early_stopping": {"enabled": False},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "deuterium.search", "--apply", "--num-cpus", "2"],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    best = search.best(project / paths.SEARCH)
    assert best["status"] == "finished"
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["training"]["learning_rate"] == best["training.learning_rate"]

    done = dvc(project, "repro", "evaluate", check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    overall = json.loads((project / "metrics.json").read_text())["validation"]["overall"]
    board = io.read_json(project / paths.SEARCH / search.LEADERBOARD_JSON)
    print(f"dvc repro ROC_AUC {overall['ROC_AUC']!r}; leaderboard {[t['ROC_AUC'] for t in board['trials']]}")
    # the same code, rows, seeds and thread count (OMP_NUM_THREADS, one CPU per trial): the same numbers;
    # metrics.json rounds to 6 places, and so does the trial's score
    assert overall["ROC_AUC"] == best["ROC_AUC"]
