"""The whole pipeline through real `dvc repro`, in a fresh git repo with a tiny config."""

import json

import pytest
import yaml
from projects import PIPELINE_OUTPUTS, dvc, make_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory, bentoml_home):
    # the default parallel_folds, so the two folds train at once on a machine with two threads or more
    root = make_project(tmp_path_factory.mktemp("repro"), {"environment": {"parallel_folds": "auto"}})
    result = dvc(root, "repro", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def ran(result) -> set[str]:
    text = result.stdout + result.stderr
    return {line.split("'")[1] for line in text.splitlines() if line.startswith("Running stage")}


def test_every_stage_writes_its_outputs(project):
    for out in PIPELINE_OUTPUTS:
        assert (project / out).is_file(), out
    metrics = json.loads((project / "metrics.json").read_text())
    assert "Accuracy" in metrics["test"]
    assert (project / "dvc.lock").is_file()


def test_second_repro_reruns_nothing(project):
    result = dvc(project, "repro")
    assert ran(result) == set()
    status = dvc(project, "status")
    assert "up to date" in status.stdout


def test_a_training_param_reruns_train_and_what_follows_only(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["training"]["learning_rate"] = 0.003
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(project, "repro")
    assert "validate" not in ran(result) and "split" not in ran(result)
    assert {"train", "pseudo_label", "evaluate", "export"} <= ran(result)


def test_invalid_params_stop_before_any_work(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["training"]["epochz"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0
    assert "training.epochz: unknown key" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_no_test_set_and_a_regression_target_named_label_run_to_the_end(tmp_path_factory):
    """A new user's common case: no separate test set; and label names that look like ours."""
    import pandas as pd
    from projects import init_repo

    overrides = {
        "problem_type": "audio_regression",
        "dataset": {"label_columns": ["label"], "test_dataframe": None},
        "training": {"loss_function": "mse"},
        "prediction": {"metric": "MAE"},
    }
    root = make_project(tmp_path_factory.mktemp("nolabels"), overrides, git=False)
    train = pd.read_csv(root / "data/fsdd/train.csv")
    train["label"] = train["digit"]
    train.to_csv(root / "data/fsdd/train.csv", index=False)
    init_repo(root)
    result = dvc(root, "repro", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((root / "metrics.json").read_text())
    assert "MAE" in metrics["validation"]["overall"] and "test" not in metrics
    assert (root / "artifacts/evaluate").is_dir() and (root / "artifacts/export/model.onnx").is_file()
