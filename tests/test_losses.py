"""training.loss_function: each name gives the loss H2O Hydrogen Torch documents for it."""

import pytest
import torch
from projects import tiny_params
from torch.nn import functional as F

from deuterium import config, losses, problems

LOGITS = torch.tensor([[4.0, -2.0, 0.0], [0.5, 0.2, -0.3]])
ONE_HOT = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # row 0 easy and right, row 1 hard and wrong


def loss_for(problem_type: str, name: str):
    overrides = {"problem_type": problem_type, "training": {"loss_function": name}}
    if problem_type == "audio_regression":
        overrides["prediction"] = {"metric": "MAE"}
    exp = config.parse(tiny_params(overrides))
    return problems.get(problem_type).loss(exp)


def test_classification_losses_by_name():
    ce = F.cross_entropy(LOGITS, ONE_HOT)
    bce = F.binary_cross_entropy_with_logits(LOGITS, ONE_HOT)
    assert loss_for("audio_classification", "cross_entropy")(LOGITS, ONE_HOT) == pytest.approx(ce.item())
    assert loss_for("audio_classification", "bce")(LOGITS, ONE_HOT) == pytest.approx(bce.item())
    # `classification` picks cross-entropy for one class per row
    assert loss_for("audio_classification", "classification")(LOGITS, ONE_HOT) == pytest.approx(ce.item())


def test_classification_is_bce_for_multi_label():
    multi_hot = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    got = losses.classification("classification", multi_label=True)(LOGITS, multi_hot)
    assert got == pytest.approx(F.binary_cross_entropy_with_logits(LOGITS, multi_hot).item())


def test_focal_losses_discount_easy_rows():
    for name, plain in (("softmax_focal", "cross_entropy"), ("sigmoid_focal", "bce")):
        focal, base = loss_for("audio_classification", name), loss_for("audio_classification", plain)
        right, wrong = torch.tensor([[5.0, -5.0, -5.0]]), torch.tensor([[0.5, 0.2, -0.3]])
        easy = focal(right, ONE_HOT[:1]) / base(right, ONE_HOT[:1])
        hard = focal(wrong, ONE_HOT[1:]) / base(wrong, ONE_HOT[1:])
        assert easy < 0.01 and hard > 10 * easy, name  # a confident, right row counts for almost nothing
    p = torch.softmax(LOGITS, 1)
    by_hand = -(ONE_HOT * (1 - p) ** 2 * p.log()).sum(1).mean()
    assert loss_for("audio_classification", "softmax_focal")(LOGITS, ONE_HOT) == pytest.approx(by_hand.item())


def test_regression_losses_by_name():
    pred, target = torch.tensor([[1.0], [4.0]]), torch.tensor([[2.0], [1.0]])
    assert loss_for("audio_regression", "mae")(pred, target) == pytest.approx(2.0)
    assert loss_for("audio_regression", "mse")(pred, target) == pytest.approx(5.0)
    assert loss_for("audio_regression", "rmse")(pred, target) == pytest.approx(5.0**0.5, rel=1e-6)
