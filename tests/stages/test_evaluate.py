import json

import pandas as pd


def test_metrics_per_fold_overall_and_test(pipeline):
    report = json.loads(pipeline.metrics.read_text())
    assert report["metric"] == "Accuracy" and report["greater_is_better"] is True
    for part in ("overall", "fold0", "fold1"):
        assert 0 <= report["validation"][part]["Accuracy"] <= 1
        assert report["validation"][part]["LogLoss"] > 0
    assert 0 <= report["test"]["Accuracy"] <= 1


def test_test_predictions_and_confusion_plot(pipeline):
    preds = pd.read_parquet(pipeline.evaluate / "test_predictions.parquet")
    test = pd.read_csv(pipeline.root / "data/fsdd/test.csv")
    assert list(preds.file) == list(test.file)
    assert set(preds.predicted_label) <= {str(d) for d in range(10)}
    confusion = pd.read_csv(pipeline.plots / "confusion.csv")
    assert len(confusion) == len(test)
    accuracy = (confusion.actual == confusion.predicted).mean()
    assert accuracy == json.loads(pipeline.metrics.read_text())["test"]["Accuracy"]
