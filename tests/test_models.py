"""The shared model parts: pooling, and pretrained weights from the local cache only.

Every registered problem type running a batch, exporting and scoring: tests/data_types/test_plugin.py."""

import pytest
import torch
from projects import tiny_params

from deuterium import config, problems
from deuterium.errors import ConfigError


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
    """Loading settings refuses it (test_config); a copy made with model_copy is not validated again."""
    exp = config.parse(tiny_params())
    arch = exp.architecture.model_copy(update={"backbone": "resnet_huge_9000"})
    exp = exp.model_copy(update={"architecture": arch})
    with pytest.raises(ConfigError, match=r"'resnet_huge_9000' is not a timm model; similar: \['"):
        problems.get(exp.problem_type).model(exp, 10)
