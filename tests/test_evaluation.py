"""The cross-validation metrics summary: each metric's mean and sd across the folds, as H2O-3 prints it."""

import pytest

from deuterium import evaluation


def test_the_summary_is_the_mean_and_sample_sd_of_the_folds():
    validation = {
        "overall": {"Accuracy": 0.5, "ROC_AUC": 0.5},  # not a fold: left out
        "fold0": {"Accuracy": 0.8, "ROC_AUC": 0.9},
        "fold1": {"Accuracy": 0.9},  # ROC_AUC undefined in this fold
        "fold2": {"Accuracy": 1.0, "ROC_AUC": 0.7},
    }
    summary = evaluation.cross_validation_summary(validation)
    assert summary["folds"] == 3
    assert summary["mean"] == {"Accuracy": pytest.approx(0.9)}
    assert summary["sd"] == {"Accuracy": pytest.approx(0.1)}  # n - 1, as H2O-3: sqrt(0.02 / 2)
    assert evaluation.cross_validation_summary({"overall": {}, "fold0": {"Accuracy": 0.8}}) == {}


def test_metrics_files_are_strict_json(tmp_path):
    """A metric that is not a number (RMSLE of negative values) is null, not Python's NaN, which jq,
    JavaScript and strict JSON parsers refuse; numpy scalars are numbers, not their str()."""
    import json

    import numpy as np

    from deuterium import io

    io.write_json(
        {"RMSLE": float("nan"), "R2": np.float32(0.5), "hit_ratios": [1.0, np.inf]}, tmp_path / "m.json"
    )
    text = (tmp_path / "m.json").read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))
    assert strict == {"RMSLE": None, "R2": 0.5, "hit_ratios": [1.0, None]}
