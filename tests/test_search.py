"""The search definition is checked before any trial; --apply edits params.yaml and keeps its comments."""

import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from projects import REPO, env

from deuterium import config, search
from deuterium.errors import ConfigError


@pytest.fixture()
def project(tmp_path) -> Path:
    for name in ("params.yaml", "dvc.yaml", "search.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def plan_of(project: Path, **settings):
    base = yaml.safe_load((REPO / "search.yaml").read_text())
    return search.plan(search.SearchSettings.model_validate(base | settings), project / "params.yaml")


def test_the_shipped_search_is_valid(project):
    the_plan = plan_of(project)
    assert the_plan.metric == "Accuracy" and the_plan.mode == "max"  # the experiment's own metric
    assert the_plan.folds == [0, 1, 2]  # the train stage's folds (selected_folds: all)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"space": {"training.learning_rate": []}}, "training.learning_rate: an empty list"),
        (
            {"space": {"training.learning_rate": {"low": 0.1, "high": 0.01}}},
            "training.learning_rate: low 0.1 is greater than high 0.01",
        ),
        ({"space": {"training.learnin_rate": [0.1]}}, "training.learnin_rate: not a setting"),
        ({"space": {"training.learning_rate": [0.001, -1]}}, "training.learning_rate: value -1 refused"),
        (
            {"space": {"architecture.dropout": {"low": 0.0, "high": 7}}},
            "architecture.dropout: value 7 refused",
        ),
        ({"space": {"dataset.number_of_folds": [2, 3]}}, "dataset.number_of_folds: the split stage reads it"),
        (
            {"space": {"export.onnx_device": ["cpu", "gpu"]}},
            "export.onnx_device: the train stage does not read",
        ),
        (
            {"space": {"training.epochs": {"low": 1, "high": 3}}, "strategy": "grid"},
            "training.epochs: a grid",
        ),
        (
            {"space": {"training.epochs": {"low": 1, "high": 2.5, "distribution": "int"}}},
            "training.epochs: an int",
        ),
        (
            {"space": {"training.learning_rate": {"low": 0, "high": 1, "distribution": "loguniform"}}},
            "low > 0",
        ),
        ({"space": {}}, "search space: empty"),
        (
            {"space": {"training": {"learning_rate": [0.001, 0.01]}}},
            "training: a setting's dotted name, such as training.learning_rate: the space is flat",
        ),
        ({"metric": "BLEU"}, "search metric: 'BLEU'"),
    ],
)
def test_a_bad_space_fails_with_one_line_naming_the_key(project, settings, named):
    with pytest.raises(ConfigError) as err:
        plan_of(project, **settings)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_a_value_audio_parameters_auto_chooses_is_not_searched(project):
    """Under auto the split stage's choice replaced each trial's sample rate: identical trials, no word."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["audio"]["audio_parameters"] = "auto"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for key, values in (("audio.sample_rate", [8000, 16000]), ("audio.training_chunk_seconds", [0.5, 1.0])):
        with pytest.raises(ConfigError, match=rf"{key}: audio.audio_parameters auto chooses it"):
            plan_of(project, space={key: values})
    assert plan_of(project, space={"audio.mel_frequency_bins": [32, 64]}).keys == ["audio.mel_frequency_bins"]


def test_an_unknown_key_of_search_yaml_is_named(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text("strategy: random\nmax_trails: 3\n")
    with pytest.raises(ConfigError, match=r"search.yaml: max_trails: unknown key"):
        search.load(path)
    path.write_text("strategy: hyperband\n")
    with pytest.raises(ConfigError, match=r"search.yaml: strategy: Input should be"):
        search.load(path)


def test_a_grid_larger_than_max_trials_is_refused(project):
    with pytest.raises(ConfigError, match="6 trials, more than max_trials 4"):
        plan_of(
            project,
            strategy="grid",
            max_trials=4,
            space={"training.epochs": [1, 2, 3], "architecture.pool": ["max", "gem"]},
        )


def test_the_command_fails_before_any_trial_with_one_line(project):
    bad = yaml.safe_load((project / "search.yaml").read_text())
    bad["space"]["training.batch_size"] = [16, 0]
    (project / "search.yaml").write_text(yaml.safe_dump(bad))
    done = subprocess.run(
        [sys.executable, "-m", "deuterium.search"], cwd=project, env=env(), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip().splitlines() == [done.stderr.strip()]
        and "training.batch_size: value 0 refused" in done.stderr
    )
    assert not (project / "artifacts").exists()  # no folds needed, no Ray started, nothing written


def test_apply_sets_the_settings_and_keeps_comments(project):
    params = project / "params.yaml"
    before = params.read_text()
    search.apply(
        {"training.learning_rate": 0.0042, "architecture.dropout": 0.25, "training.momentum": 0.8}, params
    )
    after = params.read_text()
    assert "  learning_rate: 0.0042\n" in after
    assert "dropout: 0.25" in after
    exp = config.load(params)
    assert (exp.training.learning_rate, exp.architecture.dropout, exp.training.momentum) == (
        0.0042,
        0.25,
        0.8,
    )
    comments = [line.split("#", 1)[1] for line in before.splitlines() if "#" in line]
    assert all(c in after for c in comments)  # every comment is still there
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    assert [d for d in diff if d.startswith("- ")] == ["-   dropout: 0.1", "-   learning_rate: 0.002"]
    assert [d for d in diff if d.startswith("+ ")] == [
        "+   dropout: 0.25",
        "+   learning_rate: 0.0042",
        "+   momentum: 0.8",
    ]


def test_the_leaderboard_ranks_finished_then_stopped_then_failed():
    the_plan = search.Plan(
        strategy="random", keys=["training.learning_rate"], metric="MAE", mode="min", folds=[0], epochs=2
    )
    trials = {
        "a": {
            "config": {"training.learning_rate": 0.1},
            "result": {"score": 0.5, "completed": True},
            "error": None,
        },
        "b": {
            "config": {"training.learning_rate": 0.2},
            "result": {"score": 0.2, "completed": False},
            "error": None,
        },
        "c": {"config": {"training.learning_rate": 0.3}, "result": {}, "error": "ConfigError: boom"},
        "d": {
            "config": {"training.learning_rate": 0.4},
            "result": {"score": 0.4, "completed": True},
            "error": None,
        },
    }
    rows = search.leaderboard(trials, the_plan)
    assert [(r["trial"], r["status"]) for r in rows] == [
        ("d", "finished"),
        ("a", "finished"),
        ("b", "stopped"),
        ("c", "failed"),
    ]


def test_manual_trials_are_checked_and_listed(project):
    trials = [
        {"training.learning_rate": 0.001},
        {"training.learning_rate": 0.003, "architecture.pool": "gem"},
    ]
    the_plan = plan_of(project, strategy="manual", space={}, trials=trials)
    assert the_plan.grid == trials
    assert the_plan.keys == ["architecture.pool", "training.learning_rate"]
    with pytest.raises(ConfigError, match="architecture.pool: value 'median' refused"):
        plan_of(project, strategy="manual", space={}, trials=[{"architecture.pool": "median"}])


def test_pbt_may_not_vary_the_network_of_a_problem_type_with_its_own_training_loop(project):
    shutil.copy(REPO / "configs" / "ecg_autoencoder.yaml", project / "params.yaml")
    space = {"tabular.l2": [0.0, 0.001], "tabular.epochs": {"low": 10, "high": 50}}
    assert plan_of(project, strategy="random", space=space).keys == ["tabular.l2", "tabular.epochs"]
    assert plan_of(project, strategy="pbt", space=space).keys == ["tabular.l2", "tabular.epochs"]
    wider = {
        **space,
        "tabular.hidden": [[50, 20, 50], [60, 20, 60]],
        "tabular.activation": ["tanh", "rectifier"],
    }
    assert plan_of(project, strategy="random", space=wider).keys == list(wider)
    with pytest.raises(ConfigError) as err:
        plan_of(project, strategy="pbt", space=wider)
    assert str(err.value).startswith(
        "search space: tabular.hidden, tabular.activation: a pbt search may not vary tabular_anomaly's network"
    )
    assert "\n" not in str(err.value)


def test_settings_a_data_types_own_trainer_does_not_read_are_refused(project):
    """A table's trials over training.learning_rate or architecture.dropout were all the same model (the
    tabular trainer reads H2O-3's settings under tabular), and --check called the space valid."""
    shutil.copy(REPO / "configs" / "ecg_autoencoder.yaml", project / "params.yaml")
    for key, values in (("training.learning_rate", [0.0001, 0.5]), ("architecture.dropout", [0.0, 0.5])):
        with pytest.raises(ConfigError) as err:
            plan_of(project, strategy="grid", space={key: values})
        assert str(err.value).startswith(f"search space: {key}: the tabular data type does not read it (")
        assert str(err.value).endswith("so trials would not differ")
    space = {"training.train_validation_data": [True, False], "tabular.l2": [0.0, 0.001]}
    assert plan_of(project, strategy="grid", space=space).keys == list(space)  # read: searchable
    shutil.copy(REPO / "params.yaml", project / "params.yaml")  # the shared loop reads them
    assert plan_of(project, strategy="grid", space={"architecture.dropout": [0.0, 0.5]}).keys == [
        "architecture.dropout"
    ]


def test_epochs_auto_gives_trials_a_horizon_of_epochs_auto_max(project):
    assert config.load(project / "params.yaml").training.epochs == "auto"  # the shipped default
    assert plan_of(project).epochs == config.load(project / "params.yaml").training.epochs_auto_max
    assert plan_of(project, space={"training.epochs": [4, 6]}).epochs == 6


def test_pbt_trains_the_first_selected_fold_unless_told(project):
    assert plan_of(project, strategy="pbt").folds == [0]
    assert plan_of(project, strategy="pbt", folds="all").folds == [0, 1, 2]
    with pytest.raises(ConfigError, match=r"search folds: \[5\] out of range"):
        plan_of(project, folds=[5])


def test_pbt_explore_stays_inside_a_range():
    explore = search._clip_to_space(
        {
            "training.learning_rate": {"low": 0.001, "high": 0.01, "distribution": "loguniform"},
            "training.epochs": {"low": 1, "high": 4, "distribution": "int"},
        }
    )
    assert explore({"training.learning_rate": 0.012, "training.epochs": 5}) == {
        "training.learning_rate": 0.01,
        "training.epochs": 4,
    }


def test_trials_max_runtime_cut_or_never_started_are_marked_last():
    the_plan = search.Plan(
        strategy="grid", keys=["training.learning_rate"], metric="MAE", mode="min", folds=[0], epochs=2
    )
    planned = [{"training.learning_rate": v} for v in (0.1, 0.2, 0.3)]
    trials = {
        "a": {"config": {"settings": planned[0]}, "result": {"score": 0.5, "completed": True}, "error": None},
        "b": {
            "config": {"settings": planned[1]},
            "result": {"score": 0.1, "completed": False},
            "error": None,
            "out_of_time": True,
        },
    }
    rows = search.leaderboard(trials, the_plan, planned)
    assert [(r["trial"], r["status"], r["training.learning_rate"]) for r in rows] == [
        ("a", "finished", 0.1),
        ("b", search.OUT_OF_TIME, 0.2),
        ("", search.NOT_STARTED, 0.3),
    ]
    random_plan = the_plan.model_copy(update={"strategy": "random"})
    rows = search.leaderboard(trials, random_plan, [{}] * 4)  # random: 2 draws never made
    assert [r["status"] for r in rows][2:] == [search.NOT_STARTED] * 2
