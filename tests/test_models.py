"""Every registered problem type builds a model that runs a batch of raw audio (timm-style registry test)."""

import pytest
import torch
from projects import tiny_params

from deuterium import config, problems
from deuterium.errors import ConfigError

REGRESSION = {
    "problem_type": "audio_regression",
    "training": {"loss_function": "mse"},
    "prediction": {"metric": "MAE"},
}
OVERRIDES = {"audio_classification": {}, "audio_regression": REGRESSION}


@pytest.mark.parametrize("name", problems.names())
def test_every_problem_type_runs_a_batch(name):
    exp = config.parse(tiny_params(OVERRIDES[name]))
    problem = problems.get(name)
    model = problem.model(exp, 3)
    out = problem.activate(model(torch.randn(2, exp.audio.chunk_samples)))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    loss = problem.loss(exp)(
        model(torch.randn(2, exp.audio.chunk_samples)), torch.softmax(torch.randn(2, 3), 1)
    )
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("pool", ["average", "max", "gem", "cat_average_max", "mean_average_max"])
def test_every_pool(pool):
    exp = config.parse(tiny_params({"architecture": {"pool": pool}}))
    model = problems.get(exp.problem_type).model(exp, 10)
    assert model(torch.randn(2, 4000)).shape == (2, 10)


def test_pretrained_without_cached_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    exp = config.parse(tiny_params({"architecture": {"pretrained": True}}))
    with pytest.raises(ConfigError, match="no local weights"):
        problems.get(exp.problem_type).model(exp, 10)


def test_unknown_backbone_suggests_timm_names():
    exp = config.parse(tiny_params({"architecture": {"backbone": "resnet_huge_9000"}}))
    with pytest.raises(ConfigError, match="not a timm model"):
        problems.get(exp.problem_type).model(exp, 10)
