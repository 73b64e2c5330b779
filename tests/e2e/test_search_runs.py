"""Searches with Ray Tune on the default audio experiment, made tiny (tests/projects.py): random search with
ASHA, PBT with its exploit and explore, a crashing trial, and --apply followed by the train stage."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from projects import make_image_project, make_project

from deuterium import config, evaluation, fitting, io, paths, problems, search

pytestmark = pytest.mark.e2e

TRIAL = {
    "dataset": {"selected_folds": [0]},
    "training": {"epochs": 2},
    "logging": {"number_of_audios_to_show": 0},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import ray

    from stages import split

    root = make_project(tmp_path_factory.mktemp("search"), TRIAL, git=False)
    cwd = os.getcwd()
    os.chdir(root)
    split.main(root / "params.yaml", root / paths.SPLIT)
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    yield root
    ray.shutdown()
    os.chdir(cwd)
    shutil.rmtree(temp, ignore_errors=True)


def run(project: Path, name: str, **settings) -> list[dict]:
    the_search = search.SearchSettings.model_validate({"trials_at_once": 2, **settings})
    return search.run(
        the_search, project / "params.yaml", project / paths.SPLIT, project / "artifacts" / name
    )


@pytest.fixture(scope="module")
def random_search(project):
    space = {
        "training.learning_rate": {"low": 0.0005, "high": 0.02, "distribution": "loguniform"},
        "architecture.dropout": [0.0, 0.2],
    }
    rows = run(project, "random", strategy="random", max_trials=8, seed=0, metric="LogLoss", space=space)
    return rows


def test_random_search_of_8_trials_finishes_with_a_leaderboard(project, random_search):
    rows = random_search
    assert len(rows) == 8
    assert {r["status"] for r in rows} <= {"finished", "stopped"}  # stopped: by ASHA, after its grace period
    assert rows[0]["status"] == "finished"
    assert any(
        r["status"] == "stopped" and r["epochs"] == 1 for r in rows
    )  # ASHA stopped one behind at epoch 1
    finished = [r["LogLoss"] for r in rows if r["status"] == "finished"]
    assert finished == sorted(finished)  # LogLoss: lower is better, best first
    assert len({r["training.learning_rate"] for r in rows}) == 8  # drawn, not repeated
    assert {r["architecture.dropout"] for r in rows} == {0.0, 0.2}
    board = pd.read_csv(project / "artifacts/random" / search.LEADERBOARD_CSV)
    assert list(board.columns[:4]) == ["trial", "status", "training.learning_rate", "architecture.dropout"]
    assert {"LogLoss", "epochs", "time_s"} <= set(board.columns)


def test_apply_then_the_train_stage_gives_the_trials_metric(project, random_search):
    from stages import train

    best = search.best(project / "artifacts/random")
    search.apply(best["settings"], project / "params.yaml")
    exp = config.load(project / "params.yaml")
    assert exp.training.learning_rate == best["settings"]["training.learning_rate"]
    train.main(
        project / "params.yaml", project / paths.SPLIT, project / paths.TRAIN, project / paths.CHECKPOINTS
    )

    problem = problems.of(exp)
    info = io.read_json(project / paths.SPLIT / paths.DATA_INFO_FILE)
    folds = io.read_frame(project / paths.SPLIT / paths.FOLDS_FILE)
    oof = pd.read_parquet(project / paths.TRAIN / paths.OOF_FILE)
    rows = folds.set_index("row_id").loc[oof.row_id].reset_index()
    truth = problem.truth(problem.encode(rows, exp, info))
    preds = fitting.predictions_from(oof, problem.output_columns(info))
    logloss = float(problem.metrics()["LogLoss"].fn(truth, preds))
    print(f"train stage LogLoss {logloss!r}, the trial's {best['LogLoss']!r}")  # shown with -s
    assert np.isclose(logloss, best["LogLoss"], rtol=1e-4), (logloss, best["LogLoss"])


def test_pbt_copies_better_trials_and_perturbs_their_settings(project):
    space = {
        "training.learning_rate": {"low": 0.0005, "high": 0.02, "distribution": "loguniform"},
        "architecture.dropout": [0.0, 0.1, 0.2],
    }
    rows = run(
        project,
        "pbt",
        strategy="pbt",
        max_trials=4,
        seed=1,
        space=space,
        pbt={"perturbation_interval": 1, "quantile_fraction": 0.5},
    )
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows)
    events = io.read_json(project / "artifacts/pbt" / search.PBT_LOG)  # Ray's pbt_global.txt
    exploits = [e for e in events if e["trial"] != e["copied_from"]]
    explores = [e for e in exploits if e["new_settings"] != e["old_settings"]]
    assert exploits and explores
    for event in explores:  # perturbed within the space
        assert 0.0005 <= event["new_settings"]["training.learning_rate"] <= 0.02
        assert event["new_settings"]["architecture.dropout"] in (0.0, 0.1, 0.2)


def test_a_crashing_trial_is_marked_failed_and_the_search_goes_on(project):
    rows = run(
        project,
        "crash",
        strategy="grid",
        trials_at_once=1,
        folds="all",  # both folds, one after the other
        space={"training.differential_learning_rate_layers": [["no_such_layer"], []]},
    )
    by_value = {str(r["training.differential_learning_rate_layers"]): r for r in rows}
    assert by_value["['no_such_layer']"]["status"] == "failed"
    assert "no_such_layer" in by_value["['no_such_layer']"]["error"]
    assert by_value["[]"]["status"] == "finished" and by_value["[]"]["Accuracy"] is not None
    assert by_value["[]"]["epochs"] == 4  # 2 epochs of each fold, reported one by one


def test_a_trial_validating_every_other_epoch_reports_only_its_validations(project):
    """With training.evaluation_epochs 2 the epochs between validations report nothing (not the previous
    validation's score again), and the leaderboard still counts every epoch trained."""
    rows = run(
        project,
        "every_other",
        strategy="grid",
        trials_at_once=1,
        space={"training.evaluation_epochs": [2.0], "training.epochs": [3]},
    )
    assert [r["status"] for r in rows] == ["finished"], [r["error"] for r in rows]
    assert rows[0]["epochs_trained"] == 3  # epochs 1 and 2, then 3
    results = [
        json.loads(line)
        for path in (project / "artifacts/every_other/ray").glob("*/result.json")
        for line in path.read_text().splitlines()
    ]
    # epoch 2's validation, then the last epoch's (which always validates) as the out-of-fold report
    assert [(r["run"], r["epoch"], r["epochs_trained"]) for r in results] == [("fold0", 2, 2), ("oof", 3, 1)]


def test_max_runtime_stops_the_search_and_marks_what_it_cut(project, caplog):
    import time

    grid = [0.001, 0.002, 0.004, 0.008]
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="deuterium.search"):
        rows = run(
            project,
            "budget",
            strategy="grid",
            trials_at_once=1,
            max_runtime=3,  # less than one trial takes (its worker's start alone)
            early_stopping={"enabled": False},
            space={"training.learning_rate": grid},
        )
    took = time.monotonic() - started
    assert sorted(r["training.learning_rate"] for r in rows) == grid  # every planned trial has a row
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= {search.OUT_OF_TIME, search.NOT_STARTED}, statuses
    assert statuses.count(search.NOT_STARTED) >= 3, statuses  # one at a time: the others never began
    assert all(r["Accuracy"] is None for r in rows if r["status"] == search.NOT_STARTED)
    said = [r.getMessage() for r in caplog.records if "max_runtime 3 s reached" in r.getMessage()]
    assert said and f"{statuses.count(search.NOT_STARTED)} not started" in said[0], caplog.text
    print(f"a search of 4 trials with max_runtime 3 s took {took:.1f} s: {statuses}")
    with pytest.raises(search.DeuteriumError, match="no trial finished"):
        search.best(project / "artifacts/budget")


def tabular_project(root: Path) -> Path:
    """A tiny table (x1 decides the class, x2 is noise) as a tabular_classification project, split in 2 folds."""
    from projects import REPO

    from stages import split

    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")  # the settings the train stage reads
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=120)
    frame = pd.DataFrame({"x1": x1, "x2": rng.normal(size=120), "label": np.where(x1 > 0, "yes", "no")})
    frame.to_csv(root / "train.csv", index=False)
    params = {
        "problem_type": "tabular_classification",
        "dataset": {
            "train_dataframe": "train.csv",
            "data_folder": ".",
            "label_columns": ["label"],
            "number_of_folds": 2,
            "selected_folds": "all",
        },
        "prediction": {"metric": "LogLoss"},
        "tabular": {"hidden": [8], "epochs": 4, "seed": 1, "stopping_rounds": 0, "mini_batch_size": 8},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    split.main(root / "params.yaml", root / paths.SPLIT)
    return root


def test_random_search_of_a_data_type_with_its_own_trainer(project, tmp_path, monkeypatch):
    """Tabular trains with H2O-3's loop (DataType.trainer), which reports every scoring event to the search:
    ASHA can stop a trial, and --apply then the train stage gives the best trial's metric."""
    from stages import train

    root = tmp_path / "tabular"
    root.mkdir()
    monkeypatch.chdir(root)  # the data paths are relative to the project
    tabular_project(root)
    space = {"tabular.l2": [0.0, 0.5], "tabular.input_dropout_ratio": {"low": 0.0, "high": 0.5}}
    the_search = {"strategy": "random", "max_trials": 4, "seed": 0, "space": space}
    rows = run(root, "tabular", **the_search, early_stopping={"grace_period": 1})
    statuses = [r["status"] for r in rows]
    assert len(rows) == 4 and set(statuses) <= {"finished", "stopped"}, [r["error"] for r in rows]
    assert rows[0]["status"] == "finished" and rows[0]["epochs"] == 8  # 4 epochs x 2 folds, one report each
    assert all(r["epochs"] < 8 for r in rows if r["status"] == "stopped")  # stopped by ASHA at a rung
    best = search.best(root / "artifacts/tabular")
    search.apply(best["settings"], root / "params.yaml")
    train.main(root / "params.yaml", root / paths.SPLIT, root / paths.TRAIN, root / paths.CHECKPOINTS)
    exp = config.load(root / "params.yaml")
    problem = problems.of(exp)
    info = io.read_json(root / paths.SPLIT / paths.DATA_INFO_FILE)
    folds = io.read_frame(root / paths.SPLIT / paths.FOLDS_FILE)
    oof = pd.read_parquet(root / paths.TRAIN / paths.OOF_FILE)
    rows_ = folds.set_index("row_id").loc[oof.row_id].reset_index()
    truth = problem.encode(rows_, exp, info)
    preds = fitting.predictions_from(oof, problem.output_columns(info))
    logloss = evaluation.scores(problem, truth, preds)["LogLoss"]
    assert logloss == best["LogLoss"], (logloss, best["LogLoss"])


def test_pbt_of_a_data_type_with_its_own_trainer(project, tmp_path, monkeypatch):
    """Tabular's loop saves its whole state at every scoring event: PBT's exploit continues a better trial's
    with this trial's (perturbed) rate and l2; varying the network is refused before any trial."""
    root = tmp_path / "tabular"
    root.mkdir()
    monkeypatch.chdir(root)
    tabular_project(root)
    space = {
        "tabular.rate": {"low": 0.001, "high": 0.1, "distribution": "loguniform"},
        "tabular.l2": {"low": 0.0, "high": 0.01},
    }
    the_search = {"strategy": "pbt", "max_trials": 4, "seed": 1, "space": space, "folds": [0]}
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tabular"] |= {"adaptive_rate": False, "epochs": 3}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rows = run(root, "tabular_pbt", **the_search, pbt={"perturbation_interval": 1, "quantile_fraction": 0.5})
    assert len(rows) == 4 and all(r["status"] == "finished" for r in rows), [r["error"] for r in rows]
    events = io.read_json(root / "artifacts/tabular_pbt" / search.PBT_LOG)
    exploits = [e for e in events if e["trial"] != e["copied_from"]]
    explores = [e for e in exploits if e["new_settings"] != e["old_settings"]]
    assert exploits and explores, events
    for event in explores:
        assert 0.001 <= event["new_settings"]["tabular.rate"] <= 0.1
    # every report, after an exploit too, is one epoch on from the last: the taker trained on from the
    # donor's epoch (a fresh start would report epoch 1 at a later iteration)
    results = [
        json.loads(line)
        for path in (root / "artifacts/tabular_pbt/ray").glob("*/result.json")
        for line in path.read_text().splitlines()
    ]
    assert results and all(r["epoch"] == r["training_iteration"] for r in results), [
        (r["trial_id"], r["training_iteration"], r["epoch"]) for r in results
    ]

    with pytest.raises(search.ConfigError, match=r"search space: tabular.hidden: a pbt search may not vary"):
        run(root, "tabular_wider", **{**the_search, "space": {**space, "tabular.hidden": [[8], [16]]}})
    assert not (root / "artifacts/tabular_wider").exists()  # refused before any trial


def test_a_grid_search_of_images(project, tmp_path, monkeypatch):
    """Images train with the shared loop, as audio does: a grid of the search runs on an image experiment
    (configs/mnist_image.yaml made tiny) with nothing image-specific in the search."""
    from stages import prepare, split

    root = make_image_project(tmp_path / "images", overrides={"dataset": {"selected_folds": [0]}})
    monkeypatch.chdir(root)  # the data paths are relative to the project
    prepare.main(root / "params.yaml", root / paths.PREPARE)
    split.main(root / "params.yaml", root / paths.SPLIT)
    rows = run(root, "images", strategy="grid", space={"training.learning_rate": [0.001, 0.01]})
    assert [r["status"] for r in rows] == ["finished", "finished"], [r["error"] for r in rows]
    assert sorted(r["training.learning_rate"] for r in rows) == [0.001, 0.01]
    assert all(0 <= r["Accuracy"] <= 1 and r["epochs"] == 1 for r in rows)


def test_ctrl_c_ends_a_search_without_applying_or_writing_a_leaderboard(tmp_path):
    """Ray Tune's own Ctrl-C handler ended the run 'gracefully': the half-run search was written as the
    leaderboard, --apply rewrote params.yaml with its best, and the exit status was 0. Now nothing is
    written or applied, and the exit status is 130, as for a stage."""
    import signal
    import subprocess
    import sys
    import time

    from projects import REPO, in_own_group

    from deuterium import cli

    root = tmp_path / "tabular"
    root.mkdir()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        tabular_project(root)
    finally:
        os.chdir(cwd)
    before = (root / "params.yaml").read_text()
    the_search = {
        "strategy": "grid",
        "early_stopping": {"enabled": False},
        "space": {"tabular.epochs": [100000]},
    }
    (root / "s.yaml").write_text(yaml.safe_dump(the_search))
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    args = [sys.executable, "-m", "deuterium.search", "--search", "s.yaml", "--apply", "--num-cpus", "1"]
    proc = in_own_group(args, root, env, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 180:  # until the trial reports (its first scoring event)
            line = proc.stdout.readline()
            if not line or "Checkpoint successfully created" in line:
                break
        assert line, "the search ended before its trial reported"
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 130, out[-3000:]
    assert cli.INTERRUPTED in out
    assert (root / "params.yaml").read_text() == before
    assert not (root / paths.SEARCH / search.LEADERBOARD_CSV).exists()
