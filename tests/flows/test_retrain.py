"""The retrain flow for real, in the project the pipeline test trained: champion, challenger, registry.

In order: the workspace's model becomes the first champion; data with more 7s (the holdout is mostly
7s), appended to the training data, makes a better model, which is promoted after both models are
scored on the holdout and McNemar's test finds the gain; corrupt data stops at validation; a holdout
recording under another name stops before training; a crashing stage fails the run. The registry is
checked after each.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from flow_support import artifact_of, flow_run_of, git, task_runs_of
from projects import dvc

from deuterium import registry
from deuterium.errors import ConfigError, DataError
from flows.retrain import (
    apply_settings,
    check_experiments_keep_metrics,
    data_settings,
    main,
    promote_workspace,
    retrain,
)

e2e = pytest.mark.e2e  # real dvc, torch and a Prefect server

CHAMPION = registry.CHAMPION_FILE
DECISIONS = CHAMPION.with_name(registry.DECISIONS_FILE)


def exp_refs(project: Path) -> list[str]:
    return git(project, "for-each-ref", "--format=%(refname)", "refs/exps").split()


@pytest.fixture(scope="module")
def project(piped) -> Path:
    project, state = piped
    assert state.is_completed(), state.message
    return project


@e2e
def test_the_workspace_model_becomes_the_first_champion(project, capsys):
    champion = promote_workspace(project, CHAMPION)
    assert champion.source == "workspace" and champion.metric == "Accuracy"
    assert champion.bento == (project / "artifacts/package/bento.txt").read_text().strip()
    assert champion.holdout.dataframe == "data/fsdd/test.csv"
    assert registry.load(project / CHAMPION) == champion
    assert git(project, "status", "--porcelain", "--", "registry") == ""  # committed
    assert main(["champion", "--project", str(project), "--bento"]) == 0
    assert capsys.readouterr().out.strip() == champion.bento
    with pytest.raises(registry.RegistryError, match="already names a champion"):
        promote_workspace(project, CHAMPION)


@e2e
def test_better_data_makes_a_promoted_challenger(project, incoming, bentoml_home):
    before = registry.load(project / CHAMPION)
    params = (project / "params.yaml").read_text()
    state = retrain(new_data=Path("data/incoming"), project=project, retries=0, return_state=True)
    assert state.is_completed(), state.message
    decision = state.result()
    assert decision["promote"], decision
    assert decision["challenger"] > decision["champion"]
    assert decision["champion"] == pytest.approx(before.value, abs=0.05)  # ONNX, as evaluate's torch said

    after = registry.load(project / CHAMPION)
    assert after.source == "retrain" and after.experiment == decision["challenger_experiment"]
    assert after.value == decision["challenger"]
    # appended: the project's training rows and the 44 new 7s (the batch's copies of old rows skipped)
    assert after.train_dataframe == f"artifacts/retrain/{after.experiment}/training/train.csv"
    trained = pd.read_csv(project / after.train_dataframe)
    old = pd.read_csv(project / "data/fsdd/train.csv")
    assert len(trained) == len(old) + 44 and (trained.digit == 7).sum() == (old.digit == 7).sum() + 44
    assert trained.file.str.startswith("fsdd/recordings/").sum() == len(old)
    holdout_rows = len(pd.read_csv(project / "data/fsdd/test.csv"))
    assert (decision["test"], decision["confidence"], decision["n"]) == ("mcnemar_exact", 0.95, holdout_rows)
    assert decision["p_value"] < 0.05
    assert after.rev in git(project, "for-each-ref", "--format=%(objectname)", "refs/exps")
    assert after.bento and after.bento != before.bento
    name, version = after.bento.split(":")
    assert (bentoml_home / "bentos" / name / version / "bento.yaml").is_file()

    last = registry.Decision.model_validate_json((project / DECISIONS).read_text().splitlines()[-1])
    assert (last.challenger, last.test, last.p_value) == (after.value, "mcnemar_exact", decision["p_value"])
    assert last.champion == decision["champion"]  # the champion scored again, beside the challenger
    assert "Promoted" in artifact_of(state, "retrain-decision").data
    # the experiment ran in a temporary folder: the workspace is as it was, the registry committed
    assert (project / "params.yaml").read_text() == params
    assert git(project, "status", "--porcelain", "--untracked-files=no") == ""


@e2e
def test_corrupt_data_stops_before_training_and_keeps_the_champion(project, corrupt):
    champion = (project / CHAMPION).read_bytes()
    refs = exp_refs(project)
    state = retrain(new_data=Path("data/corrupt"), project=project, retries=0, return_state=True)
    assert state.is_failed()
    message = flow_run_of(state).state.message
    assert "validation stopped the run, nothing was trained" in message
    assert "data/corrupt/train.csv:row" in message and "file not found" in message
    assert not any(name.startswith("dvc exp run") for name in task_runs_of(state))
    assert exp_refs(project) == refs
    assert (project / CHAMPION).read_bytes() == champion


@e2e
def test_a_holdout_recording_under_another_name_stops_the_run_before_training(project):
    champion = (project / CHAMPION).read_bytes()
    refs = exp_refs(project)
    folder = project / "data" / "leaky"
    folder.mkdir()
    holdout = pd.read_csv(project / "data/fsdd/test.csv").head(1)
    shutil.copy(project / "data/fsdd/recordings" / holdout.file.iloc[0], folder / "fresh.wav")
    holdout.assign(file="fresh.wav").to_csv(folder / "train.csv", index=False)
    state = retrain(new_data=Path("data/leaky"), project=project, retries=0, return_state=True)
    assert state.is_failed()
    message = flow_run_of(state).state.message
    assert f"fresh.wav is the holdout's {holdout.file.iloc[0]}" in message and "same content" in message
    assert not any(name.startswith("dvc exp run") for name in task_runs_of(state))
    assert exp_refs(project) == refs
    assert (project / CHAMPION).read_bytes() == champion


@e2e
def test_another_holdout_stops_the_run_before_training(project, incoming):
    champion = (project / CHAMPION).read_bytes()
    state = retrain(
        new_data=Path("data/incoming"),
        project=project,
        set_params=["dataset.test_dataframe=data/incoming/train.csv"],
        return_state=True,
    )
    assert state.is_failed()
    assert "the holdout changed since the champion was scored" in flow_run_of(state).state.message
    assert task_runs_of(state) == {}
    assert (project / CHAMPION).read_bytes() == champion


@e2e
def test_a_crashing_stage_fails_the_run_with_its_message_and_keeps_the_champion(project, incoming):
    champion = (project / CHAMPION).read_bytes()
    decisions = (project / DECISIONS).read_bytes()
    state = retrain(
        new_data=Path("data/incoming"),
        project=project,
        set_params=["architecture.pretrained=true"],  # no weights in the cache: the train stage stops
        retries=2,
        retry_delay_seconds=0,
        return_state=True,
    )
    assert state.is_failed()
    assert "architecture.pretrained: no local weights for" in flow_run_of(state).state.message
    (experiment,) = [run for name, run in task_runs_of(state).items() if name.startswith("dvc exp run")]
    assert experiment.run_count == 1  # a stage's own error is not retried
    assert (project / CHAMPION).read_bytes() == champion
    assert (project / DECISIONS).read_bytes() == decisions
    assert "pretrained: true" not in (project / "params.yaml").read_text()


def test_settings_are_applied_as_dvc_exp_run_s_applies_them():
    params = {"dataset": {"data_folder": "a"}, "training": {"epochs": 1}}
    out = apply_settings(
        params, ["training.epochs=3", "dataset.selected_folds=[0, 1]", "architecture.pool=max"]
    )
    assert out == {
        "dataset": {"data_folder": "a", "selected_folds": [0, 1]},
        "training": {"epochs": 3},
        "architecture": {"pool": "max"},
    }
    with pytest.raises(ConfigError, match="expected key.path=value"):
        apply_settings({}, ["training.epochs"])
    with pytest.raises(ConfigError, match="'epochs' is not a section"):
        apply_settings({"training": {"epochs": 1}}, ["training.epochs.x=1"])


def test_new_data_is_a_dataframe_or_a_folder_and_the_holdout_keeps_its_files(tmp_path):
    dataset = {"data_folder": "data/fsdd/recordings", "test_dataframe": "data/fsdd/test.csv"}
    (tmp_path / "data" / "new").mkdir(parents=True)
    (tmp_path / "data" / "more.csv").write_text("file,digit\n")
    with pytest.raises(DataError, match="needs one of train.csv"):
        data_settings(tmp_path, Path("data/new"), None, dataset)
    (tmp_path / "data" / "new" / "train.csv").write_text("file,digit\n")
    assert data_settings(tmp_path, Path("data/new"), None, dataset) == {
        "dataset.train_dataframe": "data/new/train.csv",
        "dataset.data_folder": "data/new",
        "dataset.data_folder_test": "data/fsdd/recordings",
    }
    assert data_settings(tmp_path, Path("data/more.csv"), None, dataset) == {
        "dataset.train_dataframe": "data/more.csv"
    }
    with pytest.raises(DataError, match="no such dataframe file or data folder"):
        data_settings(tmp_path, Path("data/none"), None, dataset)


def test_a_git_ignored_metrics_file_stops_retrain_before_any_work(tmp_path):
    stage = {"cmd": "echo", "metrics": [{"metrics.json": {"cache": False}}]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": stage}}))
    git(tmp_path, "init", "-q")
    dvc(tmp_path, "init", "-q")
    assert check_experiments_keep_metrics(tmp_path) == Path("metrics.json")
    (tmp_path / ".gitignore").write_text("/metrics.json\n")
    with pytest.raises(ConfigError, match="git ignores metrics.json"):
        check_experiments_keep_metrics(tmp_path)
