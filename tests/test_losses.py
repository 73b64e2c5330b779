"""training.loss_function: each name gives the loss H2O Hydrogen Torch documents for it."""

import pandas as pd
import pytest
import torch
from projects import tiny_params
from timm.loss import BinaryCrossEntropy
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


def test_label_smoothing_moves_the_targets_towards_uniform_for_every_loss():
    exp = config.parse(tiny_params({"training": {"label_smoothing": 0.1}}))
    smoothed = problems.get("audio_classification").loss(exp)
    # cross-entropy: torch's own label_smoothing
    assert smoothed(LOGITS, ONE_HOT) == pytest.approx(
        F.cross_entropy(LOGITS, ONE_HOT, label_smoothing=0.1).item()
    )
    # the sigmoid losses: timm's BinaryCrossEntropy rule, (1 - s) * target + s / classes
    bce = losses.classification("bce", multi_label=False, label_smoothing=0.1)
    timm_bce = BinaryCrossEntropy(smoothing=0.1)(LOGITS, ONE_HOT.argmax(1))
    assert bce(LOGITS, ONE_HOT) == pytest.approx(timm_bce.item())
    # a confident, right row no longer costs nothing: the loss has its minimum at finite logits
    right = torch.tensor([[20.0, -20.0, -20.0]])
    assert smoothed(right, ONE_HOT[:1]) > 1.0 > 100 * F.cross_entropy(right, ONE_HOT[:1])
    with pytest.raises(Exception, match="label_smoothing"):
        config.parse(tiny_params({"training": {"label_smoothing": 1.0}}))


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


REGRESSION = {
    "problem_type": "audio_regression",
    "training": {"loss_function": "mse"},
    "prediction": {"metric": "MAE"},
}


def test_regression_targets_are_standardized_by_the_training_rows():
    exp = config.parse(tiny_params(REGRESSION))
    problem = problems.of(exp)
    frame = pd.DataFrame({"digit": [1.0, 3.0, None, 5.0], "file": ["a", "b", "c", "d"]})
    info = problem.label_info(frame, exp)
    assert info["target_mean"] == [3.0] and info["target_sd"] == pytest.approx([(8 / 3) ** 0.5])
    constant = problem.label_info(frame.assign(digit=2.0), exp)
    assert constant["target_mean"] == [2.0] and constant["target_sd"] == [1.0]  # sd 0 would divide by 0
    scale = problem.target_scale(exp, info)
    assert scale == ([3.0], info["target_sd"])
    off = exp.model_copy(update={"training": exp.training.model_copy(update={"standardize_targets": False})})
    assert problem.target_scale(off, info) is None
    assert problem.target_scale(exp, {"target_names": ["digit"]}) is None  # data info of an older version
    # the loss is taken on standardized values: MSE / sd^2, whatever the units
    pred, target = torch.tensor([[1.0], [4.0]]), torch.tensor([[2.0], [1.0]])
    sd = info["target_sd"][0]
    assert problem.loss(exp, scale)(pred, target) == pytest.approx(5.0 / sd**2, rel=1e-6)
    assert problem.loss(exp, ([300.0], [sd * 100]))(pred * 100, target * 100) == pytest.approx(
        5.0 / sd**2, rel=1e-5
    )


def test_the_model_answers_in_the_targets_units():
    exp = config.parse(tiny_params(REGRESSION))
    problem = problems.of(exp)
    x = torch.randn(2, 4000)
    torch.manual_seed(0)
    plain = problem.model(exp, 1).eval()
    torch.manual_seed(0)
    scaled = problem.model(exp, 1, ([5000.0], [250.0])).eval()
    with torch.no_grad():
        assert torch.allclose(scaled(x), plain(x) * 250 + 5000)
    assert set(scaled.state_dict()) - set(plain.state_dict()) == {"output_scale.scale"}
    tabular = problems.get("tabular_regression")
    assert not tabular.data.takes_target_scale  # its net standardizes the response itself
