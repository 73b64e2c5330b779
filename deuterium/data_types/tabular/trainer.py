"""H2O-3 Deep Learning's training, for the tabular data type (the shared loop's epochs, schedules and
stopping rules are not H2O-3's).

What H2O-3 does and this reproduces: fractional epochs (training stops after epochs x rows samples),
ADADELTA (torch.optim.Adadelta with lr 1, rho, epsilon) or a manual rate with rate_annealing
(rate / (1 + annealing x samples)), rate_decay per layer and a momentum ramped from momentum_start to
momentum_stable over momentum_ramp samples (torch.optim.SGD, Nesterov when asked); l1 and l2 on the
weights; max_w2 on each unit's incoming weights after every update; class balancing by resampling;
scoring events (training metrics on at most 10,000 rows, validation on all) with H2O-3's metrics and
early stopping on the moving average of the last stopping_rounds events against the best earlier one;
max_runtime_secs; classification_stop and regression_stop; overwrite_with_best_model; checkpoint and
pretrained_autoencoder; Gedeon variable importances. The loop is hand-written (as the shared one is)
because these rules act between batches; the optimizers, encoders and metrics are library code.

H2O-3 updates after every row (mini_batch_size 1, Hogwild threads); this steps on mini-batches of
tabular.mini_batch_size rows, with ADADELTA's epsilon scaled to the batch (`adadelta_epsilon`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from sklearn import metrics as skm
from torch import nn

from deuterium import config, io, paths
from deuterium.data_types.tabular.columns import decoder_values, row_weights
from deuterium.data_types.tabular.decode import encode
from deuterium.data_types.tabular.model import LOG_LINK, Dropout, TabularNet, apply_max_w2, gedeon
from deuterium.data_types.tabular.settings import ARCHITECTURE, StoppingMetric
from deuterium.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SCORE_TRAINING_SAMPLES = 10_000  # H2O-3's score_training_samples default
STATE_FILE = "tabular_state.json"
CHECKPOINT_FILE = "last.pt"  # a search trial's training state, where the shared loop keeps its own
# every stopping metric but auto (resolved first) and the areas under curves goes down as the model improves
LOWER_IS_BETTER = set(get_args(StoppingMetric)) - {"auto", "AUC", "AUCPR"}


def frame_matrix(columns: list[dict], frame: pd.DataFrame) -> np.ndarray:
    """The graph's features of a whole frame (the decoder's own `encode`, on columns)."""
    return encode(columns, {c: decoder_values(frame[c]) for c in frame.columns}, len(frame))


# ---------------------------------------------------------------------------------- metrics
def h2o_metrics(
    kind: str,
    y: np.ndarray,
    out: np.ndarray,
    exp,
    weights: np.ndarray | None = None,
    multinomial_auc: bool = True,
) -> dict:
    """H2O-3's model metrics. `y`: class index (classification), value (regression) or 0/1 anomaly label
    (anomaly, may be all 0); `out`: probabilities, predictions or reconstruction errors.
    `multinomial_auc`: with more than two classes, also AUC and AUCPR (one against the rest, macro average).
    They cost more than the other metrics together (51 of 63 ms on 10,000 rows of 10 classes), so scoring
    events leave them out unless they are the stopping metric, as H2O-3 does by default (its auc_type
    NONE); the kept model's are added after training."""
    s = exp.tabular
    if kind == "classification":
        labels = list(range(out.shape[1]))
        p = np.clip(out.astype(np.float64), 1e-15, 1)  # H2O-3's logloss clips at 1e-15
        p = p / p.sum(1, keepdims=True)
        picked = p.argmax(1)
        truth = p[np.arange(len(y)), y]
        # Every scoring event computes these twice (training and validation rows): sklearn's log_loss,
        # accuracy_score, balanced_accuracy_score and confusion_matrix took 13-14 ms a call on 10,000 rows
        # of 10 classes, mostly their input checks; logloss as its formula, the other two from one
        # confusion matrix (as sklearn makes them) 4.7-5.3 ms (this 2-core machine, 2026-12-02). A test
        # checks them against sklearn's functions.
        uniform = weights is None or bool(np.all(weights == 1))
        weighted = skm.confusion_matrix(y, picked, labels=labels, sample_weight=None if uniform else weights)
        counts = weighted if uniform else skm.confusion_matrix(y, picked, labels=labels)  # rows, not weights
        support = weighted.sum(1)
        recall = np.diag(weighted)[support > 0] / support[support > 0]  # classes with rows in y
        m = {
            "MSE": float(np.average((1 - truth) ** 2, weights=weights)),
            "logloss": float(-np.average(np.log(truth), weights=weights)),
            "misclassification": float(1 - np.trace(weighted) / weighted.sum()),
            "mean_per_class_error": float(1 - recall.mean()),
            "confusion_matrix": counts.tolist(),
        }
        m["RMSE"] = math.sqrt(m["MSE"])
        if len(np.unique(y)) > 1:
            if out.shape[1] == 2:
                m["AUC"] = float(skm.roc_auc_score(y, p[:, 1], sample_weight=weights))
                m["AUCPR"] = float(skm.average_precision_score(y, p[:, 1], sample_weight=weights))
            elif multinomial_auc and len(np.unique(y)) == out.shape[1]:
                m["AUC"] = float(skm.roc_auc_score(y, p, multi_class="ovr", labels=labels))
                onehot = np.eye(out.shape[1])[y]
                m["AUCPR"] = float(skm.average_precision_score(onehot, p, average="macro"))
        k = min(s.max_hit_ratio_k, out.shape[1])
        if k:
            rank = (p > truth[:, None]).sum(1)  # classes scored above the true one
            m["hit_ratios"] = [float(np.mean(rank < i)) for i in range(1, k + 1)]
        return m
    if kind == "anomaly":
        err = out[:, 0]
        m = {"MSE": float(np.mean(err)), "RMSE": float(np.sqrt(np.mean(err)))}
        if len(np.unique(y)) > 1:
            m["AUC"] = float(skm.roc_auc_score(y, err))
        return m
    pred = out[:, 0]
    mse = float(skm.mean_squared_error(y, pred, sample_weight=weights))
    m = {
        "MSE": mse,
        "RMSE": math.sqrt(mse),
        "MAE": float(skm.mean_absolute_error(y, pred, sample_weight=weights)),
        "R2": float(skm.r2_score(y, pred, sample_weight=weights)) if len(y) > 1 else float("nan"),
        "mean_residual_deviance": _deviance(y, pred, s, weights),
    }
    ok = (y > -1) & (pred > -1)
    m["RMSLE"] = (
        float(np.sqrt(np.average((np.log1p(pred[ok]) - np.log1p(y[ok])) ** 2))) if ok.all() else float("nan")
    )
    return m


def _deviance(y, pred, s, weights) -> float:
    dist = s.distribution
    try:
        if dist == "poisson":
            return float(skm.mean_poisson_deviance(y, np.maximum(pred, 1e-12), sample_weight=weights))
        if dist == "gamma":
            return float(skm.mean_gamma_deviance(y, np.maximum(pred, 1e-12), sample_weight=weights))
        if dist == "tweedie":
            return float(
                skm.mean_tweedie_deviance(
                    y, np.maximum(pred, 1e-12), power=s.tweedie_power, sample_weight=weights
                )
            )
    except ValueError:
        return float("nan")
    if dist == "laplace":
        return float(skm.mean_absolute_error(y, pred, sample_weight=weights))
    if dist == "quantile":
        return float(skm.mean_pinball_loss(y, pred, alpha=s.quantile_alpha, sample_weight=weights))
    return float(skm.mean_squared_error(y, pred, sample_weight=weights))


def stopping_metric(kind: str, s) -> str:
    if s.stopping_metric != "auto":
        return s.stopping_metric
    return {"classification": "logloss", "regression": "mean_residual_deviance", "anomaly": "MSE"}[kind]


def stop_early(values: list[float], rounds: int, tolerance: float, lower_is_better: bool) -> bool:
    """H2O-3's rule: the moving average of the last `rounds` scoring events has not improved on the best
    moving average before them by more than `tolerance` (relative)."""
    if rounds == 0 or len(values) < 2 * rounds:
        return False
    ma = np.convolve(values, np.ones(rounds) / rounds, mode="valid")
    last, earlier = ma[-1], ma[:-rounds]
    if lower_is_better:
        best = earlier.min()
        return not last < best - tolerance * abs(best)
    best = earlier.max()
    return not last > best + tolerance * abs(best)


# ---------------------------------------------------------------------------------- data
@dataclass
class Table:
    x: np.ndarray  # features, as the graph takes them
    y: np.ndarray  # class index, value, or anomaly label
    w: np.ndarray  # row weights


def table(frame: pd.DataFrame, targets: np.ndarray, exp, kind: str) -> Table:
    s = exp.tabular
    x = frame_matrix(s.columns, frame)
    if kind == "classification":
        y = targets.argmax(1).astype(np.int64)
    else:
        y = targets[:, 0].astype(np.float32) if targets.ndim == 2 else targets.astype(np.float32)
    if s.weights_column:
        w = row_weights(frame, s.weights_column).astype(np.float32)
        if (w < 0).any():
            raise DataError(f"{s.weights_column}: weights must not be negative")
    else:
        w = np.ones(len(frame), np.float32)
    return Table(x, y, w)


def balanced_counts(y: np.ndarray, n_classes: int, s) -> np.ndarray:
    """Rows drawn per class each epoch with balance_classes (H2O-3: equal classes, or the
    class_sampling_factors' proportions, scaled down to max_after_balance_size x the rows)."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    if s.class_sampling_factors is not None:
        if len(s.class_sampling_factors) != n_classes:
            raise ConfigError(
                f"tabular.class_sampling_factors has {len(s.class_sampling_factors)} values for {n_classes} classes"
            )
        target = counts * np.asarray(s.class_sampling_factors)
    else:
        target = np.where(counts > 0, counts.max(), 0.0)
    cap = s.max_after_balance_size * len(y)
    if target.sum() > cap:
        target *= cap / target.sum()
    return np.maximum(np.round(target), (counts > 0).astype(float)).astype(int)


def epoch_rows(y: np.ndarray, counts: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if counts is None:
        return rng.permutation(len(y))
    picked = []
    for c, n in enumerate(counts):
        rows = np.flatnonzero(y == c)
        if len(rows):
            picked.append(rng.choice(rows, size=n, replace=n > len(rows)))
    return rng.permutation(np.concatenate(picked))


# ---------------------------------------------------------------------------------- training
@dataclass
class Result:
    history: list[dict] = field(default_factory=list)  # scoring events
    epochs: float = 0.0  # epochs trained in all (with the checkpoint's)
    samples: int = 0
    stopped: str = ""  # why training ended
    class_counts: list[int] | None = None  # rows seen per class (balance_classes)
    seconds: float = 0.0
    kept: int = -1  # the scoring event whose model is kept: the best with overwrite_with_best_model


def _optimizer(model: TabularNet, s, flat: nn.Parameter | None) -> torch.optim.Optimizer:
    """`flat`: the model's parameters as one tensor (`flatten`), which ADADELTA steps over at once."""
    if s.adaptive_rate:
        return torch.optim.Adadelta([flat], lr=1.0, rho=s.rho, eps=adadelta_epsilon(s), foreach=False)
    groups = [
        {"params": list(layer.parameters()), "base_rate": s.rate * s.rate_decay**k}
        for k, layer in enumerate(model.layers)
    ]
    nesterov = s.nesterov_accelerated_gradient and max(s.momentum_start, s.momentum_stable) > 0
    return torch.optim.SGD(
        groups, lr=s.rate, momentum=s.momentum_start if nesterov else s.momentum_start, nesterov=nesterov
    )


def flatten(model: TabularNet) -> tuple[nn.Parameter, int]:
    """One parameter holding all of `model`'s, each of them (and its gradient) a view into it (and its
    gradient, zeroed in place between steps; backward adds into the views). ADADELTA's elementwise update
    is then a handful of operations on one tensor instead of a handful per tensor: torch's Adadelta step
    over the 8 tensors of the booklet's 717-32-32-32-10 net took 0.33 ms, over one 0.15 ms (one thread,
    500 steps, this 2-core machine, 2026-12-02), on MNIST's 4,690 steps a run. The layers' weights come
    first, so l1 and l2 act on one span of it (`_penalize`); returns it and the weights' length.
    `unflatten` gives each parameter its own memory back (safetensors refuses tensors that share it)."""
    weights = [layer.weight for layer in model.layers]
    ids = {id(w) for w in weights}
    params = weights + [p for p in model.parameters() if id(p) not in ids]
    flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for p in params]))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat.data[offset : offset + n].view_as(p)
        p.grad = flat.grad[offset : offset + n].view_as(p)
        offset += n
    return flat, sum(w.numel() for w in weights)


def _draw_dropout_from(model: nn.Module, generator: np.random.Generator | None) -> None:
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator


def unflatten(model: nn.Module) -> None:
    for p in model.parameters():
        p.data = p.data.clone()
        p.grad = None


def _penalize(model: TabularNet, s, flat: nn.Parameter | None, n_weights: int) -> None:
    """l1 and l2 on the weights, added to their gradients (the derivatives of l1 x sum|w| and
    l2 / 2 x sum w^2, as autograd would give them, without their graph in every step). With the parameters
    flattened, on the weights' span of it: two operations, not two per layer (0.10 ms a step on MNIST's
    net with torch._foreach over the 4 layers)."""
    if flat is not None:
        weights, grads = [flat.data[:n_weights]], [flat.grad[:n_weights]]
    else:
        weights = [layer.weight.data for layer in model.layers]
        grads = [layer.weight.grad for layer in model.layers]
    if s.l1:
        torch._foreach_add_(grads, torch._foreach_sign(weights), alpha=s.l1)
    if s.l2:
        torch._foreach_add_(grads, weights, alpha=s.l2)


def adadelta_epsilon(s) -> float:
    """ADADELTA's epsilon for one mini-batch update: tabular.epsilon x mini_batch_size.

    tabular.epsilon is H2O-3's, for an update after every row. ADADELTA's step is
    sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) x g, and E[dx^2] starts at 0 and grows by about (1 - rho) x eps
    per update (while g^2 / E[g^2] averages 1), so the step size is set by the number of updates: stepping
    once per mini_batch_size rows with H2O-3's epsilon takes mini_batch_size times fewer, smaller steps per
    epoch than H2O-3 does. Scaling epsilon by the batch's rows gives the accumulator H2O-3's growth per row
    (with mini_batch_size 1 it is H2O-3's epsilon). Measured with bench/h2o_mnist.py's own steps (the
    booklet's trial run, 60,000 rows, 10 epochs, mini-batches of 32, seeds 2 and 3, 2026-12-02): test error
    0.0963 and 0.0977 with epsilon as given, 0.0869 and 0.0906 scaled. Not better everywhere: on small
    tables it trains faster and the README lists one that it made worse.
    """
    return s.epsilon * s.mini_batch_size


def _set_rate(opt, s, samples: int) -> None:
    if s.adaptive_rate:
        return
    momentum = s.momentum_start + (s.momentum_stable - s.momentum_start) * min(1.0, samples / s.momentum_ramp)
    for g in opt.param_groups:
        g["lr"] = g["base_rate"] / (1 + s.rate_annealing * samples)
        g["momentum"] = momentum


def _loss(kind: str, model: TabularNet, e, x, y, w, s, response_sd: float) -> torch.Tensor:
    """`e`: the batch as the net sees it (model.pre of the features `x`, computed once for all rows).
    `w`: the rows' weights, None when every weight is 1: the mean then, the same loss, without the weighting's
    five operations and their gradients (0.2 ms of a 1.7 ms step on MNIST's net, this 2-core machine)."""
    if kind == "anomaly":
        r = model.net(e) - e
        per_row = r.abs().mean(1) if s.loss == "absolute" else (r**2).mean(1)
    elif kind == "classification":
        logits = model.net(e)
        if s.loss in ("automatic", "cross_entropy"):
            if w is None:
                return nn.functional.cross_entropy(logits, y)
            per_row = nn.functional.cross_entropy(logits, y, reduction="none")
        else:
            r = torch.softmax(logits, 1) - nn.functional.one_hot(y, logits.shape[1]).float()
            per_row = {
                "quadratic": r**2,
                "absolute": r.abs(),
                "huber": nn.functional.huber_loss(r, 0 * r, reduction="none"),
            }.get(s.loss, r**2).sum(1)
    else:
        pred = model.finish(model.net(e), e, x)[:, 0]
        dist = s.distribution
        if dist in LOG_LINK:
            mu, eta = pred.clamp_min(1e-12), torch.log(pred.clamp_min(1e-12))
            if dist == "poisson":
                per_row = mu - y * eta
            elif dist == "gamma":
                per_row = y / mu + eta
            else:
                p = s.tweedie_power
                per_row = -y * torch.exp(eta * (1 - p)) / (1 - p) + torch.exp(eta * (2 - p)) / (2 - p)
        else:
            r = (pred - y) / response_sd
            loss = (
                s.loss
                if s.loss != "automatic"
                else {"laplace": "absolute", "huber": "huber", "quantile": "quantile"}.get(dist, "quadratic")
            )
            if loss == "absolute":
                per_row = r.abs()
            elif loss == "huber":
                delta = torch.quantile(r.detach().abs(), s.huber_alpha).clamp_min(1e-6)
                per_row = nn.functional.huber_loss(
                    r, torch.zeros_like(r), reduction="none", delta=float(delta)
                )
            elif loss == "quantile":
                per_row = torch.maximum(s.quantile_alpha * -r, (s.quantile_alpha - 1) * -r)
            else:
                per_row = r**2
    if w is None:
        return per_row.mean()
    return (per_row * w).sum() / w.sum().clamp_min(1e-12)  # l1 and l2: `_penalize`, on the gradients


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, activate, batch: int = 4096) -> np.ndarray:
    model.eval()
    outs = [activate(model(torch.from_numpy(x[i : i + batch]))) for i in range(0, len(x), batch)]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 1), np.float32)


@torch.no_grad()
def _preprocessed(model: TabularNet, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """model.pre of every row, a chunk of rows at a time: imputation and standardization make temporaries of
    their input's size, a chunk's rather than the whole frame's (MNIST's 60,000 x 784 floats: 188 MB each).
    Written into one tensor made first, not concatenated after: 0.24-0.36 s (median 0.26) against 0.36-0.62 s
    (median 0.39) on MNIST's training frame (6 runs each in turn, one thread, this 2-core machine,
    2026-12-02)."""
    if not len(x):
        return model.pre(x)
    out = torch.empty((len(x), model.pre.width))
    for i in range(0, len(x), batch):
        out[i : i + batch] = model.pre(x[i : i + batch])
    return out


@torch.no_grad()
def _predict_encoded(model: TabularNet, e: torch.Tensor, x: torch.Tensor, activate, batch: int = 4096):
    """`predict` on rows whose model.pre is computed already (a scoring event's rows, every event)."""
    model.eval()
    outs = [
        activate(model.finish(model.net(e[i : i + batch]), e[i : i + batch], x[i : i + batch]))
        for i in range(0, len(e), batch)
    ]
    return torch.cat(outs).numpy() if outs else np.zeros((0, 1), np.float32)


def fit(
    exp,
    kind: str,
    model: TabularNet,
    train: Table,
    valid: Table | None,
    activate,
    seed: int,
    record=lambda key, value, epoch: None,
    start_epochs: float = 0.0,
    after_score=None,
    saved: dict | None = None,
    save=None,
) -> Result:
    """Train `model` in place from `start_epochs` to tabular.epochs (in all); returns what happened.
    `after_score(epochs, valid_predictions, ended)`: called after each scoring event (the search's reports).
    `save(progress)`: called before it with the whole training state (`progress()`'s), which `saved` continues:
    the weights, optimizer, samples, scoring history, best model and random state (a search trial's checkpoint,
    continued by the same trial or, PBT's exploit, by another with its own settings)."""
    # One intra-op thread: a mini-batch of these nets is too small to split, and splitting it cost 13x
    # (10 ECG epochs: 6.1 s with 2 threads, 0.47 s with 1, on the shared 2-core machine, 2026-12-02).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(
            exp, kind, model, train, valid, activate, seed, record, start_epochs, after_score, saved, save
        )
    finally:
        torch.set_num_threads(threads)
        _draw_dropout_from(model, None)
        unflatten(model)


def _fit(
    exp, kind, model, train, valid, activate, seed, record, start_epochs, after_score, saved, save
) -> Result:
    s = exp.tabular
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    _draw_dropout_from(model, rng)  # one random state for row order and dropout: a checkpoint keeps both
    if s.missing_values_handling == "skip":
        keep = ~np.isnan(train.x).any(1)
        if not keep.any():
            raise DataError("missing_values_handling skip: every training row has a missing value")
        train = Table(train.x[keep], train.y[keep], train.w[keep])
    n_classes = model.layers[-1].out_features if kind == "classification" else 0
    counts = (
        balanced_counts(train.y, n_classes, s) if kind == "classification" and s.balance_classes else None
    )
    seen = np.zeros(max(n_classes, 1), np.int64)
    per_epoch = int(counts.sum()) if counts is not None else len(train.y)
    total = int(round(s.epochs * per_epoch))
    samples = int(round(start_epochs * per_epoch))
    if samples >= total and saved is None:
        raise ConfigError(
            f"tabular.epochs {s.epochs:g} is not more than the checkpoint's {start_epochs:g}: "
            "epochs counts all epochs, the checkpoint's too"
        )
    x, y, w = torch.from_numpy(train.x), torch.from_numpy(train.y), torch.from_numpy(train.w)
    weighted = bool((train.w != 1).any())  # else the loss is a plain mean (`_loss`)
    if saved is not None:  # before model.pre runs: its buffers are the checkpoint's
        model.load_state_dict(saved["model"])
    pre = _preprocessed(model, x)  # no parameters, no randomness: once, not per batch
    raw = model.offset_idx >= 0
    response_sd = float(model.response[1])
    flat, n_weights = flatten(model) if s.adaptive_rate else (None, 0)
    opt = _optimizer(model, s, flat)
    score_every = per_epoch / 10 if s.score_each_iteration else per_epoch
    next_score = (math.floor(samples / score_every) + 1) * score_every
    metric = stopping_metric(kind, s)
    lower = metric in LOWER_IS_BETTER or metric == "mean_residual_deviance"
    scored = np.random.default_rng(seed + 1).permutation(len(train.y))[:SCORE_TRAINING_SAMPLES]
    scored_rows = torch.from_numpy(scored)
    scored_x = x.index_select(0, scored_rows)
    scored_pre = pre.index_select(0, scored_rows)  # pre never changes: gathered once, not at every event
    if valid is not None and len(valid.y):
        valid_x = torch.from_numpy(valid.x)
        valid_pre = _preprocessed(model, valid_x)  # the net's input for every scoring event, once
    result = Result()
    best, best_state, best_event, values, valid_preds = None, None, -1, [], None
    rows, position = None, 0  # this epoch's rows and how many of them are trained

    def recorded(event: dict) -> None:
        for part in ("train", "valid"):
            for key, value in event.get(part, {}).items():
                if isinstance(value, float):
                    record(f"{part}/{key}", value, event["epochs"])

    if saved is not None:
        own = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(saved["optimizer"])
        for group, hyper in zip(opt.param_groups, own, strict=True):
            group.update(hyper)  # the donor's moments, this run's rate, rho, epsilon... (PBT's explore)
        same_rows = saved["per_epoch"] == per_epoch  # not so when balance_classes' settings differ
        samples = saved["samples"] if same_rows else int(round(saved["epochs"] * per_epoch))
        if same_rows:
            rows, position, next_score = saved["rows"].numpy(), saved["position"], saved["next_score"]
        else:
            next_score = (math.floor(samples / score_every) + 1) * score_every
        seen = saved["seen"].numpy().copy()
        result.history = json.loads(saved["history"])
        result.stopped = saved["stopped"]
        values = [e.get("valid", e["train"]).get(metric) for e in result.history]
        if saved["metric"] == metric:  # else the best model is judged afresh from here on
            best, best_state, best_event = saved["best"], saved["best_state"], saved["best_event"]
        rng.bit_generator.state = json.loads(saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        started -= saved["seconds"]
        for event in result.history:  # the curves so far, into this run's dvclive folder
            recorded(event)

    def progress() -> dict:
        """Everything the loop needs to go on from this scoring event (torch.load's weights_only types)."""
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "samples": samples,
            "epochs": samples / per_epoch,
            "per_epoch": per_epoch,
            "next_score": next_score,
            "rows": torch.from_numpy(rows),
            "position": position,
            "seen": torch.from_numpy(seen.copy()),
            "history": json.dumps(result.history),
            "stopped": result.stopped,
            "metric": metric,
            "best": best,
            "best_state": best_state,
            "best_event": best_event,
            "rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "seconds": time.perf_counter() - started,
        }

    def score() -> None:
        nonlocal best, best_state, best_event, valid_preds
        event = {"epochs": samples / per_epoch, "samples": samples, "seconds": time.perf_counter() - started}
        scored_preds = _predict_encoded(model, scored_pre, scored_x, activate)
        aucs = metric in ("AUC", "AUCPR")
        event["train"] = h2o_metrics(kind, train.y[scored], scored_preds, exp, train.w[scored], aucs)
        if valid is not None and len(valid.y):
            valid_preds = _predict_encoded(model, valid_pre, valid_x, activate)
            event["valid"] = h2o_metrics(kind, valid.y, valid_preds, exp, valid.w, aucs)
        result.history.append(event)
        recorded(event)
        judged = event.get("valid", event["train"]).get(metric)
        if judged is None:
            raise ConfigError(f"tabular.stopping_metric {metric} is not computed for this problem ({kind})")
        values.append(judged)
        if best is None or (judged < best if lower else judged > best):
            best = judged
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_event = len(result.history) - 1
        model.train()

    model.train()
    while samples < total and not result.stopped:
        if rows is None or position >= len(rows):
            rows, position = epoch_rows(train.y, counts, rng), 0
        while position < len(rows):
            batch = rows[position : position + s.mini_batch_size][: total - samples]
            if not len(batch):
                break
            position += len(batch)
            idx = torch.from_numpy(batch)
            _set_rate(opt, s, samples)
            rows_x = x.index_select(0, idx) if raw else None  # index_select: pre[idx] took 10x as long
            rows_w = w.index_select(0, idx) if weighted else None
            loss = _loss(
                kind, model, pre.index_select(0, idx), rows_x, y.index_select(0, idx), rows_w, s, response_sd
            )
            if flat is not None:
                flat.grad.zero_()  # the gradients are views into it: zeroed in place, not replaced
            else:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            _penalize(model, s, flat, n_weights)
            opt.step()
            apply_max_w2(model.layers, s.max_w2)
            samples += len(batch)
            if kind == "classification":
                seen += np.bincount(train.y[batch], minlength=n_classes)
            if samples >= next_score or samples >= total:
                next_score += score_every
                score()
                result.stopped = _why_stop(result, values, s, kind, metric, lower, started)
                if save is not None:
                    save(progress())
                if after_score is not None:
                    after_score(samples / per_epoch, valid_preds, bool(result.stopped) or samples >= total)
                if result.stopped:
                    break
            if samples >= total:
                break
    if not result.stopped:
        result.stopped = f"trained the {s.epochs:g} epochs asked for"
    if s.overwrite_with_best_model and best_state is not None:
        model.load_state_dict(best_state)
        result.kept = best_event
    if n_classes > 2 and result.history:  # the kept model's multinomial AUC and AUCPR, left out above
        kept = result.history[result.kept]
        parts = [("train", train.y[scored], scored_pre, scored_x, train.w[scored])]
        if "valid" in kept:
            parts.append(("valid", valid.y, valid_pre, valid_x, valid.w))
        for part, truth, e, raw_x, weights in parts:
            full = h2o_metrics(kind, truth, _predict_encoded(model, e, raw_x, activate), exp, weights)
            kept[part].update({k: full[k] for k in ("AUC", "AUCPR") if k in full})
    result.epochs, result.samples = samples / per_epoch, samples
    result.class_counts = seen.tolist() if kind == "classification" else None
    result.seconds = time.perf_counter() - started
    log.info("tabular: %s after %.3g epochs (%.1f s)", result.stopped, result.epochs, result.seconds)
    return result


def _why_stop(result: Result, values, s, kind, metric, lower, started) -> str:
    if stop_early(values, s.stopping_rounds, s.stopping_tolerance, lower):
        return (
            f"early stopping: the moving average of {metric} over the last {s.stopping_rounds} scoring events "
            f"did not improve on the best earlier one by more than {s.stopping_tolerance:g} (relative)"
        )
    if s.max_runtime_secs and time.perf_counter() - started > s.max_runtime_secs:
        return f"max_runtime_secs {s.max_runtime_secs:g} reached"
    train = result.history[-1]["train"]
    if (
        kind == "classification"
        and s.classification_stop >= 0
        and train["misclassification"] <= s.classification_stop
    ):
        return f"classification_stop: training misclassification {train['misclassification']:.4g} <= {s.classification_stop:g}"
    if kind == "regression" and s.regression_stop >= 0 and train["MSE"] <= s.regression_stop:
        return f"regression_stop: training MSE {train['MSE']:.4g} <= {s.regression_stop:g}"
    return ""


# ---------------------------------------------------------------------------------- models from other runs
def read_state(folder: Path) -> dict:
    path = Path(folder) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_checkpoint(model: TabularNet, folder: Path, exp) -> float:
    """tabular.checkpoint: continue that model (same columns and network); returns its epochs trained."""
    folder = Path(folder)
    if not (folder / paths.MODEL_FILE).is_file():
        raise ConfigError(
            f"tabular.checkpoint: {folder} holds no {paths.MODEL_FILE} (a trained model folder)"
        )
    before = config.load(folder / paths.CONFIG_FILE, inherit=False).tabular
    for key in ("hidden", "activation", "columns", "categorical_encoding"):
        if getattr(before, key) != getattr(exp.tabular, key):
            raise ConfigError(f"tabular.checkpoint: {folder} was trained with another tabular.{key}")
    model.load_state_dict(load_file(str(folder / paths.MODEL_FILE)))
    return float(read_state(folder).get("epochs", 0.0))


def load_pretrained_autoencoder(model: TabularNet, folder: Path) -> None:
    """Start the hidden layers from an autoencoder's (H2O-3's pretrained_autoencoder): same inputs and hidden."""
    weights = load_file(str(Path(folder) / paths.MODEL_FILE))
    order = sorted(int(k.split(".")[1]) for k in weights if k.startswith("net.") and k.endswith(".weight"))
    hidden = model.layers[:-1]
    for k, layer in enumerate(hidden):
        w = weights.get(f"net.{order[k]}.weight") if k < len(order) - 1 else None
        if w is None or w.shape != layer.weight.shape:
            raise ConfigError(
                f"tabular.pretrained_autoencoder: layer {k} of {folder} is "
                f"{None if w is None else list(w.shape)}, this model's {list(layer.weight.shape)} "
                "(same columns and hidden sizes needed)"
            )
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(weights[f"net.{order[k]}.bias"])


def importance_table(model: TabularNet, columns: list[dict]) -> pd.DataFrame:
    """Gedeon importances per input column (an encoded column's parts summed), H2O-3's table layout."""
    imp = gedeon(model.layers).numpy()
    from deuterium.data_types.tabular.model import encoded_width

    encoding = model.pre.encoding
    names = [c["name"] for c in columns if c["kind"] == "numeric"] + [
        c["name"] for c in columns if c["kind"] == "categorical"
    ]
    widths = [1] * sum(c["kind"] == "numeric" for c in columns) + [
        encoded_width(c, encoding) for c in columns if c["kind"] == "categorical"
    ]
    bounds = np.cumsum([0, *widths])
    raw = np.array([imp[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    table = pd.DataFrame({"variable": names, "relative_importance": raw})
    table["scaled_importance"] = table.relative_importance / max(table.relative_importance.max(), 1e-12)
    table["percentage"] = table.relative_importance / max(table.relative_importance.sum(), 1e-12)
    return table.sort_values("relative_importance", ascending=False).reset_index(drop=True)


def _architecture(exp) -> str:
    return json.dumps({key: getattr(exp.tabular, key) for key in ARCHITECTURE}, sort_keys=True)


def _load_run(path: Path, resolved: str, exp, name: str, adopt: bool) -> dict | None:
    """A search trial's checkpoint: its own (the same settings and rows) or, with `adopt`, another trial's."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved["config"] == resolved:
        return saved
    if not adopt:
        log.info("%s: checkpoint %s is from other settings or rows; starting over", name, path)
        return None
    theirs, ours = json.loads(saved["architecture"]), json.loads(_architecture(exp))
    differ = [
        f"tabular.{k} {theirs.get(k)!r} (this run: {ours[k]!r})"
        for k in ARCHITECTURE
        if theirs.get(k) != ours[k]
    ]
    if differ:
        raise ConfigError(
            f"{name}: cannot continue checkpoint {path} (PBT's exploit): it was trained with "
            f"{'; '.join(differ)}; a population-based search may vary only settings that keep the network "
            f"and optimizer, not {', '.join('tabular.' + k for k in ARCHITECTURE)}"
        )
    log.info(
        "%s: continuing checkpoint %s (%.3g epochs) with this run's settings", name, path, saved["epochs"]
    )
    return saved


# ---------------------------------------------------------------------------------- the pipeline's entry
@dataclass
class SearchState:
    """What the search reads of deuterium.training.RunState after each epoch."""

    epoch: float  # epochs trained (fractional, as H2O-3's)
    epochs: float  # tabular.epochs
    predictions: np.ndarray | None  # the validation rows' predictions now
    stopped: bool  # training ends after this scoring event (epochs reached or a stopping rule)

    @property
    def validated_step(self) -> float:
        """Which validation `predictions` are (RunState's field): each scoring event validates, so its epoch."""
        return self.epoch


@dataclass
class FoldOutcome:
    """deuterium.training.FoldResult's fields, which deuterium.fitting reads."""

    fold: int
    score: float | None
    predictions: np.ndarray | None
    seed: int | None = None


def train_fold(
    exp,
    problem,
    info,
    train_frame,
    train_targets,
    valid_frame,
    valid_targets,
    fold,
    out_dir,
    checkpoints,
    live,
    seed_index: int = 0,
    stage: str = "train",
    after_epoch=None,
    adopt: bool = False,
):
    """deuterium.training.train_fold's contract, with H2O-3's training: model, config, state and tables
    in out_dir/fold{k}; the scoring history in dvclive under fold{k}/train|valid/<metric>, x = epochs x 1000.

    It returns and saves as deuterium.training does (FoldResult's fields, model.safetensors + config.yaml)
    without importing it: every stage loads the data-type registry, and that import would make each of them
    depend on the shared loop's modules (tests/test_dvc_yaml.py).

    `after_epoch(name, state)`: called after each scoring event (each epoch, or each tenth of one with
    score_each_iteration) with a SearchState, for the hyperparameter search's reports; the whole training state
    is saved first, in checkpoints/<name>/last.pt, as the search's checkpoint. A trial restored from its own
    checkpoint goes on from it; with `adopt` (PBT's exploit) so does one restored from another trial's, with
    its own settings (rate, l1, l2, dropout...) but the same network (ARCHITECTURE). The train stage, without
    `after_epoch`, writes no such checkpoint and is not resumed."""
    s, kind = exp.tabular, problem.task.name
    Path(checkpoints).mkdir(parents=True, exist_ok=True)  # a declared output
    name = f"fold{fold}" if exp.environment.number_of_seeds == 1 else f"fold{fold}/seed{seed_index}"
    ckpt = Path(checkpoints) / name / CHECKPOINT_FILE
    rows = pd.util.hash_pandas_object(train_frame, index=False).to_numpy().tobytes() + train_targets.tobytes()
    resolved = f"{config.dump(exp)}# training rows: {hashlib.sha256(rows).hexdigest()}\n"
    saved = _load_run(ckpt, resolved, exp, name, adopt) if after_epoch is not None or adopt else None
    seed = (s.seed if s.seed is not None else exp.environment.seed) + fold + 1000 * seed_index
    seed = saved["seed"] if saved else seed
    torch.manual_seed(seed)
    model = problem.model(exp, problem.n_outputs(info))
    start = 0.0
    if saved is None and s.checkpoint is not None:  # (a search checkpoint's weights: fit loads them)
        start = load_checkpoint(model, s.checkpoint, exp)
    elif saved is None and s.pretrained_autoencoder is not None:
        load_pretrained_autoencoder(model, s.pretrained_autoencoder)
    train = table(train_frame, train_targets, exp, kind)
    valid = table(valid_frame, valid_targets, exp, kind) if len(valid_frame) else None

    def record(key: str, value: float, epochs: float) -> None:
        live.step = int(round(epochs * 1000))
        live.log_metric(f"{name}/{key}", value)

    def after_score(epochs: float, predictions, ended: bool) -> None:
        after_epoch(name, SearchState(epochs, s.epochs, predictions, ended))

    def save(progress: dict) -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({**progress, "seed": seed, "config": resolved, "architecture": _architecture(exp)}, tmp)
        tmp.replace(ckpt)  # atomic: a kill leaves the previous checkpoint or this one

    hook, saving = (after_score, save) if after_epoch is not None else (None, None)
    result = fit(exp, kind, model, train, valid, problem.activate, seed, record, start, hook, saved, saving)
    live.log_param(f"{name}_seed", seed)
    live.log_param(f"{name}_stopped", result.stopped)
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        str(folder / paths.MODEL_FILE),
    )
    io.write_text(config.dump(exp), folder / paths.CONFIG_FILE)
    state = {
        "epochs": result.epochs,
        "samples": result.samples,
        "stopped": result.stopped,
        "seconds": result.seconds,
        "class_counts_seen": result.class_counts,
        "scoring_history": result.history,
        "kept_epochs": result.history[result.kept]["epochs"] if result.history else None,
    }
    io.write_json(state, folder / STATE_FILE)
    # the kept model's metrics (H2O-3 reports the best model's when it overwrites with it), not the last event's
    kept = result.history[result.kept] if result.history else {}
    io.write_json({k: kept[k] for k in ("train", "valid") if k in kept}, folder / "h2o_metrics.json")
    if s.variable_importances:
        importance_table(model, s.columns).to_csv(folder / "variable_importances.csv", index=False)
    if s.export_weights_and_biases:
        save_file(
            {f"{k}": v.detach().contiguous() for k, v in model.named_parameters()},
            str(folder / "weights_and_biases.safetensors"),
        )
    preds = predict(model, valid.x, problem.activate) if valid is not None else None
    score = None
    if preds is not None:
        score = float(problem.metrics()[exp.prediction.metric].fn(problem.truth(valid_targets), preds))
    return FoldOutcome(fold, score, preds, seed)
