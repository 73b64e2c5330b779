"""Several label columns, end to end through ONNX: multi-label classification (one 0/1 column per class, sigmoid
outputs) and multi-target regression (one output per numeric column)."""

import json

import numpy as np
import onnx
import pandas as pd
import pytest
from projects import make_project

from deuterium import scoring
from deuterium.data_types.audio import io as audio_io

MULTI_LABEL = {
    "dataset": {
        "label_columns": ["george", "even", "small"],
        "validation_strategy": "k_fold",
        "selected_folds": [0],
    },
    "training": {"loss_function": "classification", "epochs": 2},
    "prediction": {"metric": "F2"},
}
MULTI_TARGET = {
    "problem_type": "audio_regression",
    "dataset": {"label_columns": ["digit", "index"], "selected_folds": [0]},
    "training": {"loss_function": "mse"},
    "prediction": {"metric": "MAE"},
}


def run_stages(root):
    """Every stage in the project's folder (its params name data relative to it), then back."""
    from stages import evaluate, export, pseudo_label, split, train

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        _stages(root, evaluate, export, pseudo_label, split, train)
    return root


def _stages(root, evaluate, export, pseudo_label, split, train):
    split.main(root / "params.yaml", root / "split")
    train.main(root / "params.yaml", root / "split", root / "train", root / "checkpoints")
    pseudo_label.main(
        root / "params.yaml", root / "split", root / "train", root / "pseudo", root / "checkpoints"
    )
    evaluate.main(
        root / "params.yaml",
        root / "split",
        root / "pseudo",
        root / "evaluate",
        root / "metrics.json",
        root / "plots",
    )
    export.main(root / "params.yaml", root / "split", root / "pseudo", root / "export")


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("multi_label"), MULTI_LABEL, git=False)
    for name in ("train", "test"):
        path = root / "data/fsdd" / f"{name}.csv"
        frame = pd.read_csv(path)
        frame["george"] = (frame.speaker == "george").astype(int)
        frame["even"] = (frame.digit % 2 == 0).astype(int)
        frame["small"] = (frame.digit < 3).astype(int)
        frame.to_csv(path, index=False)
    return run_stages(root)


@pytest.fixture(scope="module")
def multi_target(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("multi_target"), MULTI_TARGET, git=False)
    return run_stages(root)


def test_multi_label_trains_sigmoid_outputs_and_exports_them(multi_label):
    info = json.loads((multi_label / "split/data_info.json").read_text())
    assert info["multi_label"] and info["labels"] == ["george", "even", "small"]
    graph = onnx.load(str(multi_label / "export/model.onnx"))
    assert "Sigmoid" in {n.op_type for n in graph.graph.node} and "Softmax" not in {
        n.op_type for n in graph.graph.node
    }
    parity = json.loads((multi_label / "export/parity.json").read_text())
    assert parity["max_abs_diff"] <= 1e-4
    preds = pd.read_parquet(multi_label / "evaluate/test_predictions.parquet")
    probs = preds[["prob_george", "prob_even", "prob_small"]].to_numpy()
    assert not np.allclose(probs.sum(1), 1)  # independent per-class probabilities, not a softmax

    scorer = scoring.Scorer(multi_label / "export")
    assert scorer.pre.multi_label and scorer.pre.labels == ["george", "even", "small"]
    waves = [
        audio_io.load(multi_label / "data/fsdd/recordings" / f, scorer.pre.input["sample_rate"])
        for f in preds.file
    ]
    assert np.abs(scorer.raw(waves) - probs).max() < 1e-4
    answers = scorer.predict(waves)
    assert set(answers[0]) == {"labels", "probabilities"} and set(answers[0]["probabilities"]) == set(
        info["labels"]
    )
    assert [";".join(a["labels"]) for a in answers] == list(preds.predicted_labels)


def test_multi_label_metrics(multi_label):
    report = json.loads((multi_label / "metrics.json").read_text())
    assert report["metric"] == "F2"
    for part in (report["validation"]["overall"], report["test"]):
        for name in ("Accuracy", "F1", "F2", "F05", "Precision", "Recall", "LogLoss", "MCC"):
            assert np.isfinite(part[name]), name
    assert not (multi_label / "plots/confusion.csv").exists()


def test_multi_target_regression_predicts_every_column_through_onnx(multi_target):
    preds = pd.read_parquet(multi_target / "evaluate/test_predictions.parquet")
    assert {"predicted_digit", "predicted_index"} <= set(preds.columns)
    report = json.loads((multi_target / "metrics.json").read_text())
    assert report["metric"] == "MAE" and report["test"]["MAE"] > 0
    assert json.loads((multi_target / "export/parity.json").read_text())["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(multi_target / "export/model.onnx"))
    assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 2

    scorer = scoring.Scorer(multi_target / "export")
    assert scorer.pre.target_names == ["digit", "index"]
    waves = [
        audio_io.load(multi_target / "data/fsdd/recordings" / f, scorer.pre.input["sample_rate"])
        for f in preds.file
    ]
    answers = scorer.predict(waves)
    assert set(answers[0]["predictions"]) == {"digit", "index"}
    got = np.array([[a["predictions"]["digit"], a["predictions"]["index"]] for a in answers])
    assert np.abs(got - preds[["predicted_digit", "predicted_index"]].to_numpy()).max() < 1e-4
