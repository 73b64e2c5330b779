"""H2O-3 Deep Learning's network: the table's preprocessing, then a feed-forward net, all in one module so
the ONNX graph holds it (features float32 [batch, columns] in, as TabularDecoder makes them).

Written by hand: it is a few layers, and the behaviours that make it H2O-3's (maxout units of two
channels, per-layer dropout only for *_with_dropout, mean imputation and standardization from the
training frame, the categorical encodings, a log link for poisson/gamma/tweedie, a standardized response
for the identity link, the autoencoder's per-row reconstruction error as output) are not in a library
model. Missing values never reach the layers: NaN is replaced by the column's training mean.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

LOG_LINK = ("poisson", "gamma", "tweedie")


def encoded_width(spec: dict, encoding: str) -> int:
    if spec["kind"] != "categorical":
        return 1
    if encoding in ("label_encoder", "eigen"):
        return 1
    if encoding == "binary":
        return max(1, math.ceil(math.log2(spec["n_codes"] + 1)))
    return spec["n_codes"]  # one_hot_internal (auto): every level and the missing level


class Preprocess(nn.Module):
    """Raw features -> the net's input: impute, standardize, encode categoricals. Also used by the
    autoencoder as its target."""

    def __init__(self, columns: list[dict], encoding: str, standardize: bool):
        super().__init__()
        self.encoding = "one_hot_internal" if encoding == "auto" else encoding
        num = [i for i, c in enumerate(columns) if c["kind"] == "numeric"]
        self.register_buffer("num_idx", torch.tensor(num, dtype=torch.long))
        means = [columns[i]["mean"] for i in num]
        sds = [columns[i]["sd"] if standardize else 1.0 for i in num]
        self.register_buffer("mean", torch.tensor(means, dtype=torch.float32))
        self.register_buffer("centre", torch.tensor(means if standardize else [0.0] * len(num)))
        self.register_buffer("scale", torch.tensor([1 / s if s > 0 else 1.0 for s in sds]))
        self.cats = [(i, c) for i, c in enumerate(columns) if c["kind"] == "categorical"]
        for k, (_, c) in enumerate(self.cats):
            codes = torch.arange(c["n_codes"], dtype=torch.float32)
            if self.encoding == "binary":
                bits = encoded_width(c, "binary")
                table = torch.stack([((torch.arange(c["n_codes"]) + 1) >> b) & 1 for b in range(bits)], 1)
                self.register_buffer(f"cat{k}", table.float())
            elif self.encoding == "eigen":
                self.register_buffer(f"cat{k}", torch.tensor(c["eigen"], dtype=torch.float32)[:, None])
            elif self.encoding == "label_encoder":
                self.register_buffer(f"cat{k}", ((codes - c["code_mean"]) / c["code_sd"])[:, None])
            else:  # one-hot: compared with the codes, not rows of an identity matrix (levels^2 floats in
                # the ONNX graph: 256 MB for a column of 8,000 levels); derived, so not saved with the weights
                self.register_buffer(f"cat{k}", torch.arange(c["n_codes"]), persistent=False)
        self.width = len(num) + sum(encoded_width(c, self.encoding) for _, c in self.cats)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights saved before one-hot was a comparison hold each column's identity matrix: not read."""
        if self.encoding == "one_hot_internal":
            for k in range(len(self.cats)):
                state_dict.pop(f"{prefix}cat{k}", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        v = x.index_select(1, self.num_idx)  # 10x faster than x[:, num_idx] on CPU (4096 x 784)
        v = torch.where(torch.isnan(v), self.mean, v)
        parts = [(v - self.centre) * self.scale]
        for k, (i, c) in enumerate(self.cats):
            code = x[:, i].long().clamp(0, c["n_codes"] - 1)
            table = getattr(self, f"cat{k}")
            if self.encoding == "one_hot_internal":
                parts.append((code[:, None] == table).to(torch.float32))
            else:
                parts.append(table[code])  # a row of the level's encoding
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # one part: not copied


class Dropout(nn.Module):
    """Inverted dropout (each unit kept with probability 1 - p, scaled so its expectation is unchanged), its
    mask drawn from `generator`, a numpy Generator the trainer sets (the one its epochs' row order comes
    from, so a checkpoint's random state reproduces both), or from torch's when none is set.

    Hand-written for speed: the input layer's mask is most of a training step's arithmetic on MNIST
    (128 x 717 values per step). torch's CPU dropout draws it with `bernoulli_` (0.68-0.71 ms per 128 x 784
    batch), `rand_like >= p` with torch's Mersenne Twister 0.36-0.77 ms with the multiply; numpy's PCG64
    making 16-bit integers with `integers` takes 0.17 ms for the 128 x 717 draws alone, its raw 64-bit
    output cut into four 16-bit draws each 0.07 ms (one thread, 2,000-3,000 calls each, this 2-core
    machine, 2026-12-02). With 16 bits p is rounded to a multiple of 1/65,536 and the scale is that
    rounded keep rate's inverse, so the expectation stays exact. The identity in eval mode, so the ONNX
    graph has no trace of it."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)
        self.drop = min(round(self.p * 65536), 65535)  # of the 65,536 16-bit draws, those that drop the unit
        self.generator: np.random.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.generator is None:
            keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
            return x * keep
        bits = uniform_16_bits(self.generator, x.numel()).reshape(tuple(x.shape))
        # a float mask: torch's multiply of a float tensor by a bool one is slower
        keep = (bits >= self.drop).astype(np.float32)
        keep *= np.float32(65536 / (65536 - self.drop))
        return x * torch.from_numpy(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


def uniform_16_bits(generator: np.random.Generator, n: int) -> np.ndarray:
    """`n` independent uniform 16-bit integers: the bit generator's 64-bit outputs, each cut in four. PCG64's
    output bits are uniform and independent (its design), so the quarters are too; the generator's state
    moves on as for any of its draws, so a checkpoint of it reproduces these."""
    return generator.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n]


class Maxout(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], -1, 2).amax(dim=2)


class TabularNet(nn.Module):
    """`layers` are the Linear layers in order (hidden..., output); `layers[i].weight` is [out, in], so a
    row is one unit's incoming weights (what max_w2 bounds)."""

    def __init__(
        self, s, n_outputs: int, autoencoder: bool = False, response: tuple[float, float] = (0.0, 1.0)
    ):
        super().__init__()
        columns = s.columns or []
        self.pre = Preprocess(columns, s.categorical_encoding, s.standardize)
        offsets = [i for i, c in enumerate(columns) if c["kind"] == "offset"]
        self.offset_idx = offsets[0] if offsets else -1
        self.autoencoder = autoencoder
        self.log_link = s.distribution in LOG_LINK and not autoencoder
        self.register_buffer("response", torch.tensor(response, dtype=torch.float32))
        maxout = s.activation.startswith("maxout")
        act = {"tanh": nn.Tanh, "rectifier": nn.ReLU, "maxout": Maxout}[s.activation.split("_with")[0]]
        blocks: list[nn.Module] = [Dropout(s.input_dropout_ratio)]
        width = self.pre.width
        for h, p in zip(s.hidden, s.dropout_ratios, strict=True):
            layer = nn.Linear(width, h * (2 if maxout else 1))
            blocks += [layer, act(), Dropout(p)]
            width = h
        out = nn.Linear(width, self.pre.width if autoencoder else n_outputs)
        blocks.append(out)
        self.net = nn.Sequential(*blocks)
        init_weights(self.layers, s.initial_weight_distribution, s.initial_weight_scale)

    @property
    def layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        e = self.pre(x)
        return self.finish(self.net(e), e, x)

    def finish(self, out: Tensor, e: Tensor, x: Tensor | None) -> Tensor:
        """The net's output -> what the graph answers: the reconstruction error (autoencoder), the
        prediction in the response's units (regression: offset, link), or the logits."""
        if self.autoencoder:
            return ((out - e) ** 2).mean(dim=1, keepdim=True)
        offset = 0.0
        if self.offset_idx >= 0 and x is not None:
            offset = torch.nan_to_num(x[:, self.offset_idx : self.offset_idx + 1])
        if self.log_link:
            return torch.exp(out + offset)
        return out * self.response[1] + self.response[0] + offset


@torch.no_grad()
def init_weights(layers, distribution: str, scale: float) -> None:
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        if distribution == "uniform_adaptive":  # H2O-3: U(-r, r), r = sqrt(6 / (fan_in + fan_out))
            r = math.sqrt(6 / (fan_in + fan_out))
            layer.weight.uniform_(-r, r)
        elif distribution == "uniform":
            layer.weight.uniform_(-scale, scale)
        else:
            layer.weight.normal_(0, scale)
        layer.bias.zero_()


@torch.no_grad()
def apply_max_w2(layers, max_w2: float) -> None:
    """H2O-3's max_w2: rescale each unit's incoming weights so their squared sum is at most max_w2."""
    if max_w2 >= 3.4e38:
        return
    for layer in layers:
        w2 = (layer.weight**2).sum(dim=1, keepdim=True)
        layer.weight.mul_(torch.where(w2 > max_w2, torch.sqrt(max_w2 / w2), torch.ones_like(w2)))


@torch.no_grad()
def gedeon(layers) -> Tensor:
    """Gedeon's (1997) input importances: each layer's |weights| normalised per unit, multiplied through
    the net to the outputs; summed over outputs and scaled to a maximum of 1 (H2O-3 uses this method)."""
    q = None
    for layer in layers:
        a = layer.weight.abs()
        a = a / a.sum(dim=1, keepdim=True).clamp_min(1e-12)  # [out, in], rows sum to 1
        q = a if q is None else a @ _merge_maxout(q, a.shape[1])
    imp = q.sum(dim=0)
    return imp / imp.max().clamp_min(1e-12)


def _merge_maxout(q: Tensor, width: int) -> Tensor:
    """Maxout layers have two channels per unit: the next layer sees `width` units, the previous q 2x."""
    if q.shape[0] == width:
        return q
    return q.view(width, 2, -1).mean(dim=1)
