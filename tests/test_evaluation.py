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


def _problem(name: str, label_columns: list[str] | None = None):
    from deuterium import config, problems

    if label_columns is None:
        return problems.get(name)
    exp = config.parse(
        {
            "problem_type": name,
            "dataset": {"train_dataframe": "t.csv", "data_folder": ".", "label_columns": label_columns},
        }
    )
    return problems.of(exp)


def _case(kind: str, rng):
    """(problem, targets, predictions) of 12 rows of each problem type's task."""
    import numpy as np

    n = 12
    if kind == "classification":  # 3 classes, one-hot targets, probabilities
        y = np.arange(n) % 3
        p = rng.dirichlet(np.ones(3), n)
        return _problem("tabular_classification"), np.eye(3)[y], p
    if kind == "multi_label":
        y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]] * 3, dtype=float)
        return _problem("audio_classification", ["a", "b", "c"]), y, rng.uniform(size=(n, 3))
    if kind == "regression":
        y = rng.normal(size=(n, 1)) + 3
        return _problem("tabular_regression"), y, y + rng.normal(scale=0.5, size=(n, 1))
    y = (np.arange(n) % 4 == 0).astype(float)[:, None]  # anomaly: 1 for an anomaly, the score is the error
    return _problem("tabular_anomaly"), y, rng.uniform(size=(n, 1)) + y


@pytest.mark.parametrize("kind", ["classification", "multi_label", "regression", "anomaly"])
def test_a_rows_weight_counts_it_that_many_times_in_every_metric(kind):
    """H2O-3's weights_column: weight k is the row k times, weight 0 is no row. Every metric of every task,
    weighted, equals the unweighted metric of the rows repeated by their weights."""
    import numpy as np

    rng = np.random.default_rng(0)
    problem, targets, preds = _case(kind, rng)
    weights = np.array([1, 2, 0, 3, 1, 1, 0, 2, 1, 4, 1, 1], dtype=float)
    repeated = np.repeat(np.arange(len(weights)), weights.astype(int))
    weighted = evaluation.scores(problem, targets, preds, weights)
    copies = evaluation.scores(problem, targets[repeated], preds[repeated])
    assert set(weighted) == set(problem.metrics()) == set(copies)
    assert weighted == pytest.approx(copies, abs=1e-6)
    assert evaluation.scores(problem, targets, preds, np.ones(len(weights))) == pytest.approx(
        evaluation.scores(problem, targets, preds), abs=1e-6
    )
    assert weighted != pytest.approx(evaluation.scores(problem, targets, preds), abs=1e-6)  # they matter
