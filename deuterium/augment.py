"""Batch augmentations, applied in the training loop on the training device (the `augmentation` section).

Mixup (Zhang et al. 2018) on the model's input (waveforms, pixels): each clip of the batch is blended with another clip of
the same batch, x = w * x_i + (1 - w) * x_j, with a weight w ~ Beta(mix_concentration,
mix_concentration) per clip, and the targets are combined by `mix_target`: `ratio` blends them with
the same weight; `max` and `min` take the larger or smaller of the two per output (for multi-hot
targets: the union or the intersection of the classes). A batch is mixed with probability
`mix_probability`, `mix_iterations` times over.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deuterium.settings import MixSettings


def mix(wave: Tensor, target: Tensor, aug: MixSettings) -> tuple[Tensor, Tensor]:
    """(inputs [batch, ...], targets [batch, outputs]) -> the mixed pair; unchanged when mixing is disabled
    (`mix_audio`, `mix_image`). Integer inputs (uint8 pixels) are blended in float and rounded back.

    Draws from torch's global generator (seeded per run) on the CPU, so a seed gives the same mixes on
    any device; the blending runs where the batch is.
    """
    if not aug.mixup or len(wave) < 2:
        return wave, target
    dtype = wave.dtype
    if not dtype.is_floating_point:
        wave = wave.float()
    beta = torch.distributions.Beta(aug.mix_concentration, aug.mix_concentration)
    for _ in range(aug.mix_iterations):
        if torch.rand(()).item() >= aug.mix_probability:
            continue
        partner = torch.randperm(len(wave)).to(wave.device)
        weight = beta.sample((len(wave),)).to(device=wave.device, dtype=wave.dtype)
        w = weight.view(-1, *([1] * (wave.dim() - 1)))
        wave = w * wave + (1 - w) * wave[partner]
        other = target[partner]
        if aug.mix_target == "ratio":
            t = weight.to(target.dtype).view(-1, *([1] * (target.dim() - 1)))
            target = t * target + (1 - t) * other
        elif aug.mix_target == "max":
            target = torch.maximum(target, other)
        else:
            target = torch.minimum(target, other)
    if not dtype.is_floating_point:
        wave = wave.round().clamp(0, 255).to(dtype)
    return wave, target
