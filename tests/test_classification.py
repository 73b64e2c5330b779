"""Audio classification's labels, activation and metrics: single-label (one class column) and multi-label
(several 0/1 columns)."""

import numpy as np
import pandas as pd
import pytest
import torch
from projects import tiny_params
from sklearn import metrics as skm

from deuterium import config, losses, problems
from deuterium.errors import ConfigError, DataError

MULTI = {
    "dataset": {"label_columns": ["speech", "music", "noise"]},
    "training": {"loss_function": "classification"},
}


def bound(overrides=None):
    exp = config.parse(tiny_params(overrides or {}))
    return exp, problems.of(exp)


def test_f2_and_f05_weigh_recall_and_precision():
    _, problem = bound()
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # class 1 predicted often: high recall, low precision for it
    p = np.eye(2)[[0, 1, 1, 1, 1, 1, 1, 1]] * 0.9 + 0.05
    labels = p.argmax(1)
    metrics = problem.metrics()
    for name, beta in (("F2", 2), ("F05", 0.5), ("F1", 1)):
        assert metrics[name].fn(y, p) == pytest.approx(skm.fbeta_score(y, labels, beta=beta, average="macro"))
    assert metrics["F2"].fn(y, p) != metrics["F05"].fn(y, p)
    for metric in ("F2", "F05"):
        config.parse(tiny_params({"prediction": {"metric": metric}}))  # accepted by the schema


def test_several_label_columns_are_multi_label():
    exp, problem = bound(MULTI)
    frame = pd.DataFrame({"speech": [1, 0, 1], "music": [1, 0, 0], "noise": [0, 0, 1]})
    info = problem.label_info(frame, exp)
    assert info == {
        "labels": ["speech", "music", "noise"],
        "target_names": ["speech", "music", "noise"],
        "multi_label": True,
    }
    assert problem.n_outputs(info) == 3
    assert np.array_equal(problem.encode(frame, exp, info), frame.to_numpy(dtype=np.float32))
    with pytest.raises(DataError, match="music: row 2 is 2"):
        problem.encode(frame.assign(music=[1, 2, 0]), exp, info)


def test_multi_label_uses_sigmoid_and_bce():
    exp, problem = bound(MULTI)
    logits = torch.tensor([[3.0, 2.0, -4.0]])
    assert torch.allclose(
        problem.activate(logits), torch.sigmoid(logits)
    )  # not a softmax: rows need not sum to 1
    assert isinstance(problem.loss(exp), losses.BCE)
    single_exp, single = bound()
    assert torch.allclose(single.activate(logits), torch.softmax(logits, 1))
    assert isinstance(single.loss(single_exp), torch.nn.CrossEntropyLoss)


def test_multi_label_metrics_and_prediction_columns():
    exp, problem = bound(MULTI)
    info = {
        "labels": ["speech", "music", "noise"],
        "target_names": ["speech", "music", "noise"],
        "multi_label": True,
    }
    targets = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]], dtype=np.float32)
    preds = np.array([[0.9, 0.8, 0.1], [0.2, 0.1, 0.7], [0.6, 0.4, 0.3], [0.1, 0.9, 0.2]], dtype=np.float32)
    truth = problem.truth(targets)
    assert np.array_equal(truth, targets.astype(int))
    scores = {name: m.fn(truth, preds) for name, m in problem.metrics().items()}
    assert scores["Accuracy"] == 0.75  # rows whose every class is right
    assert scores["ROC_AUC"] == pytest.approx(skm.roc_auc_score(targets, preds, average="macro"))
    assert scores["F1"] == pytest.approx(skm.f1_score(targets, preds >= 0.5, average="macro"))
    assert all(np.isfinite(v) for v in scores.values())
    columns = problem.prediction_columns(preds, info)
    assert list(columns.predicted_labels) == ["speech;music", "noise", "speech", "music"]
    assert list(columns.columns[1:]) == ["prob_speech", "prob_music", "prob_noise"]
    assert problem.plot(targets, preds, info) == {}  # no confusion matrix for several classes per row


def test_one_label_column_with_bce_is_sigmoid_over_one_hot_classes():
    exp, problem = bound({"training": {"loss_function": "bce"}})
    assert not problem.task.multi_label(exp) and problem.task.sigmoid(exp)
    with pytest.raises(ConfigError, match="exactly one label column"):
        problem.task._column(
            exp.model_copy(update={"dataset": exp.dataset.model_copy(update={"label_columns": []})})
        )
