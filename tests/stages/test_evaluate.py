import json

import pandas as pd
import pytest


def test_metrics_per_fold_overall_and_test(pipeline):
    report = json.loads(pipeline.metrics.read_text())
    assert report["metric"] == "Accuracy" and report["greater_is_better"] is True
    for part in ("overall", "fold0", "fold1"):
        assert 0 <= report["validation"][part]["Accuracy"] <= 1
        assert report["validation"][part]["LogLoss"] > 0
    assert 0 <= report["test"]["Accuracy"] <= 1
    summary = report["cross_validation_summary"]  # H2O-3's: mean and sd across the folds
    folds = [report["validation"][f"fold{k}"]["Accuracy"] for k in (0, 1)]
    assert summary["folds"] == 2 and summary["mean"]["Accuracy"] == pytest.approx(sum(folds) / 2, abs=1e-6)
    assert summary["sd"]["Accuracy"] == pytest.approx(abs(folds[0] - folds[1]) / 2**0.5, abs=1e-6)


def test_test_predictions_and_confusion_plot(pipeline):
    preds = pd.read_parquet(pipeline.evaluate / "test_predictions.parquet")
    test = pd.read_csv(pipeline.root / "data/fsdd/test.csv")
    assert list(preds.file) == list(test.file)
    assert set(preds.predicted_label) <= {str(d) for d in range(10)}
    confusion = pd.read_csv(pipeline.plots / "confusion.csv")
    assert len(confusion) == len(test)
    accuracy = (confusion.actual == confusion.predicted).mean()
    assert accuracy == json.loads(pipeline.metrics.read_text())["test"]["Accuracy"]


def test_prediction_columns_never_overwrite_the_users_columns():
    import pandas as pd

    from deuterium import fitting

    frame = pd.DataFrame({"file": ["a.wav"], "predicted_label": ["mine"], "prob_a": [0.5]})
    preds = pd.DataFrame({"predicted_label": ["a"], "prob_a": [0.9]})
    out = fitting.beside(frame, preds)
    assert list(out.columns) == [
        "file",
        "predicted_label",
        "prob_a",
        "predicted_label_predicted",
        "prob_a_predicted",
    ]
    assert out.predicted_label[0] == "mine" and out.prob_a_predicted[0] == 0.9


def test_output_columns_are_read_by_name_not_by_pattern():
    """A regression target named `label` is output `predicted_label`, classification's decided-label name."""
    import pandas as pd

    from deuterium import fitting

    oof = pd.DataFrame({"row_id": [0, 1], "fold": [0, 0], "predicted_label": [3.5, 7.0]})
    assert fitting.predictions_from(oof, ["predicted_label"]).tolist() == [[3.5], [7.0]]


def test_a_metric_that_cannot_be_computed_says_why():
    import numpy as np
    import pytest
    from projects import tiny_params

    from deuterium import config, evaluation, problems

    exp = config.parse(tiny_params({"prediction": {"metric": "ROC_AUC"}}))
    problem = problems.of(exp)
    targets = np.eye(3, dtype=np.float32)[[0, 0, 0]]  # one class only: ROC AUC is undefined
    preds = np.full((3, 3), 1 / 3, dtype=np.float32)
    assert "ROC_AUC" not in evaluation.scores(problem, targets, preds)
    assert "Only one class" in evaluation.why_not(problem, targets, preds, "ROC_AUC")
    with pytest.raises(KeyError):
        evaluation.why_not(problem, targets, preds, "nope")
