"""Classification losses by their params.yaml names (targets are probability rows: one-hot, multi-hot or soft),
and `Standardized`, which any loss takes under a regression's target scale."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class BCE(nn.Module):
    """Binary cross-entropy with logits, each class its own yes/no question."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target)


class SigmoidFocal(nn.Module):
    """Focal loss on per-class sigmoids (Lin et al. 2017): easy, confident rows count for little."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # imported here: torchvision.ops brings torch._dynamo into every stage process otherwise
        from torchvision.ops import sigmoid_focal_loss

        return sigmoid_focal_loss(logits, target, alpha=self.alpha, gamma=self.gamma, reduction="mean")


class SoftmaxFocal(nn.Module):
    """Cross-entropy over the softmax with each class term weighted by (1 - p)^gamma."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = torch.log_softmax(logits, dim=1)
        weight = (1 - log_p.exp()).pow(self.gamma)
        return -(target * weight * log_p).sum(dim=1).mean()


class Smoothed(nn.Module):
    """`loss` on label-smoothed targets: each row's probabilities times (1 - smoothing), plus smoothing / K
    for each of the K classes. For cross-entropy that is torch's own `label_smoothing`; for the sigmoid
    losses it is timm's `BinaryCrossEntropy(smoothing=...)`. Written once here so that every loss, and soft
    (mixup) targets, take the same rule."""

    def __init__(self, loss: nn.Module, smoothing: float):
        super().__init__()
        self.loss, self.smoothing = loss, smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.loss(logits, target * (1 - self.smoothing) + self.smoothing / target.shape[1])


def classification(name: str, multi_label: bool, label_smoothing: float = 0.0) -> nn.Module:
    """`classification` is H2O Hydrogen Torch's automatic choice: BCE for multi-label, cross-entropy otherwise."""
    if name == "classification":
        name = "bce" if multi_label else "cross_entropy"
    loss = {
        "cross_entropy": nn.CrossEntropyLoss,  # takes the (soft) probability targets as they are
        "bce": BCE,
        "sigmoid_focal": SigmoidFocal,
        "softmax_focal": SoftmaxFocal,
    }[name]()
    return Smoothed(loss, label_smoothing) if label_smoothing else loss


class Standardized(nn.Module):
    """`loss` on (prediction / sd, target / sd): the same loss whatever the targets' units, so the learning
    rate and gradient clipping mean the same on any data (the means cancel in the difference)."""

    def __init__(self, loss: nn.Module, sd: list[float]):
        super().__init__()
        self.loss = loss
        self.register_buffer("inverse_sd", 1 / torch.tensor(sd, dtype=torch.float32))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.loss(pred * self.inverse_sd, target * self.inverse_sd)
