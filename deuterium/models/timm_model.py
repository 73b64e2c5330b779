"""A data type's front end (in the graph: log-mel, resize and normalize) -> timm backbone -> pooling -> dropout -> head."""

from __future__ import annotations

import difflib
import os

import timm
import torch
from torch import Tensor, nn

from deuterium.errors import ConfigError
from deuterium.models.pooling import Pool
from deuterium.settings import ArchitectureSettings


def unknown_backbone(name: str) -> str | None:
    """Why `name` is no timm model, with the closest names (a hyphen for an underscore, a missing
    suffix); None when it is one."""
    known = timm.list_models()
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=6, cutoff=0.75)
    close += [m for m in timm.list_models(f"*{name.split('_')[0]}*")[:6] if m not in close]
    return f"architecture.backbone {name!r} is not a timm model" + (
        f"; similar: {close[:8]}" if close else ""
    )


def backbone(arch: ArchitectureSettings, in_chans: int = 1) -> nn.Module:
    if why := unknown_backbone(arch.backbone):
        raise ConfigError(why)
    if arch.pretrained:
        os.environ["HF_HUB_OFFLINE"] = "1"  # weights come from the local cache or not at all
    try:
        return timm.create_model(
            arch.backbone, pretrained=arch.pretrained, in_chans=in_chans, num_classes=0, global_pool=""
        )
    except Exception as err:  # timm/hub raise many types when weights are not cached and there is no network
        if arch.pretrained:
            raise ConfigError(
                f"architecture.pretrained: no local weights for {arch.backbone!r} in the Hugging Face/torch cache "
                f"and nothing may be downloaded at run time ({type(err).__name__}). Put the weights in the cache "
                "(HF_HOME / TORCH_HOME) or set architecture.pretrained: false."
            ) from None
        raise


class OutputScale(nn.Module):
    """x * sd + mean per output. A module of its own so a float16 export keeps it float32 (precision.py):
    a mean in the thousands is past float16's precision, and past its range above 65,504."""

    def __init__(self, mean: list[float], sd: list[float]):
        super().__init__()
        self.register_buffer("scale", torch.tensor([mean, sd], dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x.float() * self.scale[1] + self.scale[0]


class TimmModel(nn.Module):
    """`frontend` turns the graph's input into an image of `in_chans` channels for the backbone. The
    attribute names (frontend, backbone, head) are what differential_learning_rate_layers and
    use_previous_experiment_weights refer to."""

    def __init__(self, frontend: nn.Module, in_chans: int, arch: ArchitectureSettings, n_outputs: int):
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone(arch, in_chans)
        self.pool = Pool(arch.pool)
        self.dropout = nn.Dropout(arch.dropout)
        self.head = nn.Linear(self.pool.widen(self.backbone.num_features), n_outputs)
        self.output_scale: OutputScale | None = None

    def set_output_scale(self, mean: list[float], sd: list[float]) -> None:
        """Answer head * sd + mean: the head learns standardized targets (a regression's), the graph answers
        in the targets' units."""
        self.output_scale = OutputScale(mean, sd)

    def standardized(self, x: Tensor) -> Tensor:
        """The head's output, before the output scale (export.ScoringModule scales the folds' mean)."""
        features = self.backbone.forward_features(self.frontend(x))  # [batch, num_features, h, w]
        return self.head(self.dropout(self.pool(features)))

    def forward(self, x: Tensor) -> Tensor:
        out = self.standardized(x)
        return out if self.output_scale is None else self.output_scale(out)
