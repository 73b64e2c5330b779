"""The training loop: plain PyTorch, one fold (and seed) at a time, resumable, logged with dvclive.

`train_fold` builds a run (data, model, optimizer, what a checkpoint restores); `fit` is the loop.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from rich.progress import Progress
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from deuterium import augment, config, distributed, inference, insights, io, paths, previous, runtime
from deuterium.data_types import decoded
from deuterium.errors import ConfigError
from deuterium.problems import ProblemType
from deuterium.settings import ExperimentBase

log = logging.getLogger(__name__)

TRAIN_METRIC_ROWS = 1000  # calculate_train_metric scores at most this many training rows
PROGRESS_BARS = True  # off in the processes of folds trained at once: their bars would overwrite each other


@dataclass
class FoldResult:
    fold: int
    score: float | None  # the chosen metric on the fold's validation rows (None without validation rows)
    predictions: np.ndarray | None
    seed: int | None = None  # the seed this run trained with
    step: int | None = None  # the run's last step in its curves


def run_name(fold: int, seed_index: int = 0, number_of_seeds: int = 1) -> str:
    """Folder and curve prefix of one run: `fold0`, or `fold0/seed1` with several seeds per fold."""
    return f"fold{fold}" if number_of_seeds == 1 else f"fold{fold}/seed{seed_index}"


def param_groups(model: nn.Module, exp: ExperimentBase) -> list[dict]:
    """All parameters at learning_rate, except differential_learning_rate_layers at differential_learning_rate;
    weight decay on neither biases nor normalization weights (timm's rule: no decay for 0- and 1-d tensors)."""
    t = exp.training
    special: dict[int, nn.Parameter] = {}
    for name in t.differential_learning_rate_layers:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            layers = ", ".join(n for n, _ in model.named_children())
            raise ConfigError(
                f"training.differential_learning_rate_layers: {name!r} is not a layer of the model; "
                f"its layers are {layers} (sub-layers with dots, e.g. backbone.conv1)"
            ) from None
        special.update((id(p), p) for p in layer.parameters())
    groups = []
    for params, lr in (
        ([p for p in model.parameters() if id(p) not in special], None),
        (list(special.values()), t.differential_learning_rate),
    ):
        decay = [p for p in params if p.ndim > 1]
        flat = [p for p in params if p.ndim <= 1]
        for part, wd in ((decay, t.weight_decay), (flat, 0.0)):
            if part:
                groups.append({"params": part, "weight_decay": wd, **({"lr": lr} if lr is not None else {})})
    return groups


TIMM_OPTIMIZERS = {
    "Adam": "adam",
    "AdamW": "adamw",
    "RMSprop": "rmsprop",
    "Adadelta": "adadelta",
    "Adagrad": "adagrad",
}


def optimizer(exp: ExperimentBase, model: nn.Module) -> torch.optim.Optimizer:
    """timm's optimizer factory over our parameter groups (SGD: `sgd` is Nesterov momentum, `momentum` plain)."""
    from timm.optim import create_optimizer_v2

    t = exp.training
    name = ("sgd" if t.nesterov else "momentum") if t.optimizer == "SGD" else TIMM_OPTIMIZERS[t.optimizer]
    extra = {"momentum": t.momentum} if t.optimizer in ("SGD", "RMSprop") else {}
    return create_optimizer_v2(
        param_groups(model, exp), opt=name, lr=t.learning_rate, weight_decay=0.0, **extra
    )


def lr_factor(exp: ExperimentBase, step: int, steps_per_epoch: int) -> float:
    """Linear warmup over warmup_epochs, then the schedule over the remaining steps.

    step: multiplied by step_decay every step_size_epochs epochs (counted from the start of training), or
    at 1/3 and 2/3 of the steps after warmup when step_size_epochs is 0."""
    t = exp.training
    total = max(1, t.epochs * steps_per_epoch)
    warmup = round(t.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if t.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if t.schedule == "linear":
        return max(0.0, 1 - progress)
    if t.schedule == "step":
        if t.step_size_epochs:
            return t.step_decay ** int(step / (t.step_size_epochs * steps_per_epoch) + 1e-9)
        return t.step_decay ** int(progress * 3)  # three equal phases: 1, decay, decay²
    return 1.0


@dataclass
class RunState:
    """Where a run stands; a checkpoint holds all of it, so a killed run resumes exactly."""

    epoch: int = 0  # epochs completed
    epochs: int = 0  # epochs this run trains in all (training.epochs; `auto` resolved)
    step: int = 0  # training batches done: the x axis of the curves
    batch_size: int = 0
    score: float | None = None  # the latest validation score and predictions
    predictions: np.ndarray | None = None
    validated_step: int | None = None  # the step of that validation
    best_score: float | None = None
    best_step: int | None = None
    best_predictions: np.ndarray | None = None
    best_weights: dict[str, torch.Tensor] | None = None  # kept with save_best_checkpoint
    history: list[list] = field(default_factory=list)  # [step, name, value] as logged; replayed on resume
    reference: float | None = None  # early stopping: the score the next ones must beat by min_delta
    stale: int = 0  # validations since the metric last improved by more than early_stopping_min_delta
    stopped: bool = False  # early stopping ended the run


@dataclass
class Loop:
    """What `fit` runs besides the model; train_fold builds it (a test may build one around a toy model)."""

    loader: DataLoader
    loss_fn: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    dev: torch.device
    live: Live
    prefix: str  # curve names start with it: fold0/...
    seed: int
    metric_name: str = "metric"
    greater_is_better: bool = True
    validate: Callable[[nn.Module], tuple[float, np.ndarray]] | None = None  # model -> (score, predictions)
    train_metric: Callable[[nn.Module], float] | None = None
    checkpoint: Callable[[RunState], None] = lambda state: None  # called after every epoch
    description: str = "training"
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # the data type's batch augmentations
    ema: nn.Module | None = None  # training.ema_decay: timm's ModelEmaV3, updated after each optimizer step


def training_length(exp: ExperimentBase, rows: int) -> ExperimentBase:
    """`exp` with training.epochs a number: as given, or for `auto` the epochs that make about
    epochs_auto_steps optimizer steps over `rows` training rows (batch_size x grad_accumulation rows a
    step), within [epochs_auto_min, epochs_auto_max]. A dataset half the size gets twice the epochs, so
    a small dataset still trains for as many updates as a large one."""
    t = exp.training
    if t.epochs != "auto":
        return exp
    per_step = t.batch_size * t.grad_accumulation
    steps = max(1, rows // per_step if t.drop_last_batch and rows > per_step else math.ceil(rows / per_step))
    epochs = min(t.epochs_auto_max, max(t.epochs_auto_min, math.ceil(t.epochs_auto_steps / steps)))
    log.info(
        "training.epochs auto: %d epochs (%d steps of %d rows an epoch over %d rows; target %d steps)",
        epochs,
        steps,
        per_step,
        rows,
        t.epochs_auto_steps,
    )
    return exp.model_copy(update={"training": t.model_copy(update={"epochs": epochs})})


def rows_fingerprint(
    problem: ProblemType, exp: ExperimentBase, *parts: tuple[pd.DataFrame, np.ndarray]
) -> str:
    """What a run trains and validates on: the rows' cells and targets, and the size and modification time
    of every file they name. A file's content changed under the same name (the data redone)
    must not let a checkpoint of the old ones stand in. The files' stat, not their bytes: a dataset of
    many gigabytes would be read again by every fold before training; the decode cache keys on the
    same. A file missing here is the dataset's to report when it is read."""
    digest = hashlib.sha256()
    for frame, targets in parts:
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        digest.update(np.ascontiguousarray(targets).tobytes())
        if len(frame) and problem.data.column(exp):
            for path in problem.files(frame, exp):
                try:
                    st = os.stat(path)
                except OSError:
                    digest.update(b"missing\0")
                    continue
                digest.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def train_fold(
    exp: ExperimentBase,
    problem: ProblemType,
    info: dict,
    train_frame: pd.DataFrame,
    train_targets: np.ndarray,
    valid_frame: pd.DataFrame,
    valid_targets: np.ndarray,
    fold: int,
    out_dir: Path,
    checkpoints: Path,
    live: Live,
    seed_index: int = 0,
    stage: str = "train",
    after_epoch: Callable[[str, RunState], None] | None = None,
    adopt: bool = False,
) -> FoldResult:
    """Train one fold (and seed). `after_epoch(name, state)` runs after each epoch's checkpoint is saved (the
    search reports to Ray Tune there). `adopt`: a checkpoint written under other settings is continued with
    these ones (PBT's exploit: a better trial's weights and optimizer moments, this trial's hyperparameters)."""
    exp = training_length(exp, len(train_frame))
    env, t = exp.environment, exp.training
    name = run_name(fold, seed_index, env.number_of_seeds)
    decoded.configure(env.decode_cache_megabytes)
    # a checkpoint resumes only the same settings on the same rows and files with the same code: DVC
    # reruns this stage after any of those changed, and then a finished checkpoint must not stand in for it
    rows = rows_fingerprint(problem, exp, (train_frame, train_targets), (valid_frame, valid_targets))
    code = code_fingerprint(stage)
    resolved = f"{config.dump(exp)}# rows and files: {rows}\n# code: {code}\n"
    dev = distributed.init(env)
    main = distributed.is_main()
    ckpt = checkpoints / name / "last.pt"
    saved = _load_checkpoint(ckpt, resolved, name, adopt)
    adopted = bool(saved) and saved["config"] != resolved
    seed = saved["seed"] if saved else _run_seed(env.seed, fold, seed_index)
    runtime.seed_everything(seed)
    scale = problem.target_scale(exp, info)
    model = problem.model(exp, problem.n_outputs(info), scale).to(dev)
    previous.load_weights(model, exp, fold)  # use_previous_experiment_weights (a checkpoint still wins)
    loss_fn = problem.loss(exp, scale).to(dev)
    dataset = problem.dataset(train_frame, exp, train_targets, seed)
    state = _restore(saved, model) if saved else RunState()
    ema = _moving_average(model, t.ema_decay, saved)
    state.epochs = t.epochs
    if not saved or adopted:  # an adopted run trains on with this trial's own batch size
        state.batch_size = min(t.batch_size, len(train_frame))
        if t.automatically_adjust_batch_size:
            fitted = _fit_batch_size(model, loss_fn, dataset[0], state.batch_size, dev, exp)
            state.batch_size = distributed.smallest(fitted)
    loader = _loader(exp, dataset, state.batch_size, dev, seed)
    opt = optimizer(exp, model)
    steps = math.ceil(len(loader) / t.grad_accumulation)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(exp, s, steps))
    scaler = torch.amp.GradScaler(enabled=env.mixed_precision_training and dev.type == "cuda")
    if saved:
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if adopted:  # the donor's moments, our learning rate, weight decay... and the schedule at our epoch
            state.step = state.epoch * len(loader)
            for group, own in zip(opt.param_groups, hyper, strict=True):
                group.update(own)
            sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
            sched.last_epoch = state.epoch * steps
            for group, base in zip(opt.param_groups, sched.base_lrs, strict=True):
                group["lr"] = base * lr_factor(exp, sched.last_epoch, steps)
        for step, key, value in state.history:  # the curves so far, into this run's fresh dvclive folder
            live.step = step
            live.log_metric(key, value)
    metric = problem.metrics()[exp.prediction.metric]
    files = problem.files(valid_frame, exp) if len(valid_frame) and main else []
    truth = problem.truth(valid_targets)
    loop = Loop(
        loader=loader,
        loss_fn=loss_fn,
        opt=opt,
        sched=sched,
        scaler=scaler,
        dev=dev,
        live=live,
        prefix=name,
        seed=seed,
        metric_name=exp.prediction.metric,
        greater_is_better=metric.greater_is_better,
        description=name.replace("/", " "),
        ema=ema,
    )
    augmenter = problem.batch_augmenter(exp)
    loop.augment = augmenter.to(dev) if isinstance(augmenter, nn.Module) else augmenter
    if files:
        loop.validate = lambda net: _score(exp, problem, net, files, truth, metric.fn, dev)
    if files and t.calculate_train_metric:
        rows = np.random.default_rng(seed).permutation(len(train_frame))[:TRAIN_METRIC_ROWS]
        train_files = problem.files(train_frame.iloc[rows], exp)
        train_truth = problem.truth(train_targets[rows])
        loop.train_metric = lambda net: _score(exp, problem, net, train_files, train_truth, metric.fn, dev)[0]
    if main:

        def checkpoint(st: RunState) -> None:
            _save_checkpoint(ckpt, model, opt, sched, scaler, st, seed, resolved, ema)
            if after_epoch is not None:
                after_epoch(name, st)

        loop.checkpoint = checkpoint
        live.log_param(f"{name}_seed", seed)
        live.log_param(f"{name}_batch_size", state.batch_size)
        live.log_param(f"{name}_train_rows", len(train_frame))
        live.log_param(f"{name}_epochs", t.epochs)
    log.info(
        "%s: %d training rows, %d process(es) x %d batches of %d per epoch%s",
        name,
        len(train_frame),
        distributed.world_size(),
        len(loader),
        state.batch_size,
        f", resuming after epoch {state.epoch}" if saved else "",
    )
    net = distributed.wrap(model, dev, env.sync_batch_normalization)
    state = fit(exp, net, loop, state)

    model = distributed.unwrap(net)
    if t.save_best_checkpoint and state.best_weights is not None:
        model.load_state_dict(state.best_weights)
        score, preds = state.best_score, state.best_predictions
        log.info("%s: keeping step %d, the best (%s %.4f)", name, state.best_step, loop.metric_name, score)
    else:
        if ema is not None:
            model.load_state_dict(ema.module.state_dict())  # the average is what validation scored
        score, preds = state.score, state.predictions
    if main:
        save_model(model, exp, out_dir / name)
        if preds is not None and exp.logging.samples_to_show:
            insights.log_worst(live, name, exp, problem, info, files, valid_targets, preds)
    return FoldResult(fold, score, preds, seed, state.step)


def fit(exp: ExperimentBase, model: nn.Module, loop: Loop, state: RunState) -> RunState:
    """Train from `state` to the last epoch: accumulation, clipping, AMP, validation every evaluation_epochs."""
    t = exp.training
    batches = len(loop.loader)
    total = t.epochs * batches
    every = max(1, round(t.evaluation_epochs * batches))
    net = distributed.unwrap(model)
    judged = net if loop.ema is None else loop.ema.module  # what is validated and kept

    def record(key: str, value: float) -> None:
        if distributed.is_main():
            state.history.append([state.step, f"{loop.prefix}/{key}", float(value)])
            loop.live.step = state.step
            loop.live.log_metric(f"{loop.prefix}/{key}", float(value))

    def evaluate() -> None:
        if loop.validate is not None:
            score, preds = loop.validate(judged)
            state.score, state.predictions, state.validated_step = score, preds, state.step
            record(f"valid/{loop.metric_name}", score)
            _early_stopping(state, score, t, loop.greater_is_better)
            if state.stopped:
                record("train/early_stopped", 1)
                log.info(
                    "%s step %d: early stopping, %s has not improved by more than %g in %d validations",
                    loop.prefix,
                    state.step,
                    loop.metric_name,
                    t.early_stopping_min_delta,
                    state.stale,
                )
            if _better(score, state.best_score, loop.greater_is_better):
                state.best_score, state.best_step, state.best_predictions = score, state.step, preds
                if t.save_best_checkpoint:
                    state.best_weights = {k: v.detach().cpu().clone() for k, v in judged.state_dict().items()}
            if loop.train_metric is not None:
                record(f"train/{loop.metric_name}", loop.train_metric(judged))
            log.info("%s step %d: valid %s %.4f", loop.prefix, state.step, loop.metric_name, score)
        # rank 0 validates alone; every process must stop together, or the others wait in an all-reduce
        state.stopped = bool(distributed.broadcast(state.stopped))

    if state.stopped:
        return state  # a resumed run that early stopping had ended
    if state.step == 0 and t.evaluate_before_training:
        evaluate()
    with Progress(transient=True, disable=not (distributed.is_main() and PROGRESS_BARS)) as progress:
        for epoch in range(state.epoch, t.epochs):
            _start_epoch(loop, epoch)
            model.train()
            task = progress.add_task(f"{loop.description} epoch {epoch + 1}/{t.epochs}", total=batches)
            total_loss, seen = 0.0, 0
            for i, (x, target) in enumerate(loop.loader):
                x, target = x.to(loop.dev, non_blocking=True), target.to(loop.dev, non_blocking=True)
                if loop.augment is not None:
                    x = loop.augment(x)
                x, target = augment.mix(x, target, exp.augmentation)
                group_start = i - i % t.grad_accumulation
                group = min(t.grad_accumulation, batches - group_start)  # an epoch's last may be short
                last = i - group_start + 1 == group
                sync = contextlib.nullcontext() if last or model is net else model.no_sync()
                with sync:
                    with runtime.autocast(loop.dev, exp.environment.mixed_precision_training):
                        loss = loop.loss_fn(model(x).float(), target)
                    loop.scaler.scale(loss / group).backward()
                if last:
                    _optimizer_step(exp, net, loop, record)
                state.step += 1
                total_loss += loss.item() * len(x)
                seen += len(x)
                progress.advance(task)
                if state.step % every == 0 and state.step < total:
                    evaluate()
                    model.train()
                    if state.stopped:
                        break
            progress.remove_task(task)
            record("train/loss", total_loss / max(seen, 1))
            record("train/learning_rate", loop.opt.param_groups[0]["lr"])
            record("train/epoch", epoch + 1)
            log.info("%s epoch %d: loss %.4f", loop.prefix, epoch + 1, total_loss / max(seen, 1))
            state.epoch = epoch + 1
            if state.step == total:
                evaluate()
            loop.checkpoint(state)
            if state.stopped:
                break
    return state


def _optimizer_step(exp: ExperimentBase, net: nn.Module, loop: Loop, record) -> None:
    clip, show = exp.training.gradient_clip, exp.logging.log_grad_norm
    if clip > 0 or show:
        loop.scaler.unscale_(loop.opt)  # norms and clipping in real units, not AMP-scaled ones
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if clip > 0:
        before = nn.utils.clip_grad_norm_(net.parameters(), clip)
    if show:
        if clip == 0:
            before = nn.utils.get_total_norm(grads)
        after = nn.utils.get_total_norm(grads) if clip > 0 else before
        record("train/grad_norm", before.item())
        record("train/grad_norm_clipped", after.item())
    loop.scaler.step(loop.opt)
    loop.scaler.update()
    loop.opt.zero_grad(set_to_none=True)
    loop.sched.step()
    if loop.ema is not None:
        loop.ema.update(net, step=loop.sched.last_epoch)  # the decay's warmup counts optimizer steps


def _start_epoch(loop: Loop, epoch: int) -> None:
    """Every source of randomness restarts from (seed, epoch): an epoch replays the same after a resume."""
    seed = runtime.epoch_seed(loop.seed, epoch)
    runtime.seed_everything(seed)
    if loop.loader.generator is not None:
        loop.loader.generator.manual_seed(seed)  # the shuffling order and the workers' base seed
    if isinstance(loop.loader.sampler, DistributedSampler):
        loop.loader.sampler.set_epoch(epoch)  # it shuffles from (seed, epoch) itself
    if hasattr(loop.loader.dataset, "set_epoch"):
        loop.loader.dataset.set_epoch(epoch)


def _loader(exp: ExperimentBase, dataset, batch_size: int, dev: torch.device, seed: int) -> DataLoader:
    t = exp.training
    n = len(dataset)
    sampler = None
    if distributed.active():
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=False)
        n = len(sampler)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=t.drop_last_batch and n > batch_size,
        num_workers=exp.environment.number_of_workers,
        worker_init_fn=runtime.seed_worker,
        pin_memory=dev.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


def _fit_batch_size(model: nn.Module, loss_fn: nn.Module, example, batch_size: int, dev, exp) -> int:
    """automatically_adjust_batch_size: halve the batch size until a training step fits in memory."""
    sample, target = example
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}  # batch norm statistics: untouched

    def step(size: int) -> None:
        try:
            x = sample.unsqueeze(0).repeat(size, *([1] * sample.dim())).to(dev)
            y = target.unsqueeze(0).repeat(size, *([1] * target.dim())).to(dev)
            with runtime.autocast(dev, exp.environment.mixed_precision_training):
                loss = loss_fn(model(x).float(), y)
            loss.backward()
        finally:
            model.zero_grad(set_to_none=True)

    model.train()
    size = runtime.fit_batch_size(step, batch_size)
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
    if size < batch_size:
        log.warning("training.batch_size %d does not fit in memory; training with %d", batch_size, size)
    return size


def _early_stopping(state: RunState, score: float, t, greater_is_better: bool) -> None:
    """Count validations without an improvement over the reference by more than early_stopping_min_delta.

    The reference moves only on such an improvement (Keras' rule), so steady gains each smaller than the
    delta still stop the run."""
    delta = t.early_stopping_min_delta * (1 if greater_is_better else -1)
    if state.reference is None or _better(score, state.reference + delta, greater_is_better):
        state.reference, state.stale = score, 0
    else:
        state.stale += 1
    if t.early_stopping_patience and state.stale >= t.early_stopping_patience:
        state.stopped = True


def _better(score: float, best: float | None, greater_is_better: bool) -> bool:
    if best is None:
        return True
    return score > best if greater_is_better else score < best


def _moving_average(model: nn.Module, decay: float, saved: dict | None) -> nn.Module | None:
    """training.ema_decay: timm's ModelEmaV3 of `model` (parameters and batch norm statistics), its decay
    warming up from 0, so a short run averages over fewer steps; a checkpoint's average is restored."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=decay, use_warmup=True)
    if saved and saved.get("ema") is not None:
        ema.module.load_state_dict(saved["ema"])
    return ema


def _run_seed(seed: int, fold: int, seed_index: int) -> int:
    """Each fold and each of its seeds gets its own seed; -1 draws one (logged, and kept by the checkpoint)."""
    drawn = runtime.seed_everything(seed) if seed < 0 else seed
    return int(distributed.broadcast(drawn + fold + 1000 * seed_index if seed >= 0 else drawn))


def _score(exp, problem, net, files, truth, fn, dev) -> tuple[float, np.ndarray]:
    preds = _predict(exp, problem, [net], files, dev)
    return float(fn(truth, preds)), preds


def _predict(exp, problem, models, files, dev) -> np.ndarray:
    """Validation predictions; the inputs come from the decode cache after the first validation."""
    return inference.predict_files(
        models,
        problem.activate,
        files,
        decoded.CachedDecoder(problem.decoder(exp)),
        exp.inference_batch_size,
        dev,
        exp.environment.mixed_precision_inference,
        "validating",
    )


VERSIONED = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
)  # whose versions change what trains (torch pins the rest)


@functools.cache
def code_fingerprint(stage: str = "train", dvc_yaml: Path = Path("dvc.yaml")) -> str:
    """What a checkpoint may be resumed by: the same stage command, the same code it depends on and the
    same library versions. Read from dvc.yaml's entry for `stage` (its `cmd` and the files and folders of
    its `deps`, outside artifacts/ and data/, which the resolved config and the rows' hash cover), so a
    change that makes DVC rerun the stage also makes the checkpoint stale, and a change outside its
    dependencies (the service's code) does not. Without dvc.yaml (a stage run outside DVC): every .py
    file of the project's packages."""
    import importlib.metadata

    digest = hashlib.sha256()
    for name in VERSIONED:
        try:
            digest.update(f"{name}=={importlib.metadata.version(name)}\n".encode())
        except importlib.metadata.PackageNotFoundError:
            continue
    entry = _stage_entry(dvc_yaml, stage)
    if entry is None:
        root = Path(__file__).resolve().parents[1]
        paths = [root / "deuterium", root / "stages"]
    else:
        digest.update(str(entry.get("cmd", "")).encode())
        paths = [
            dvc_yaml.parent / d
            for d in (next(iter(dep)) if isinstance(dep, dict) else dep for dep in entry.get("deps", []))
            if not str(d).startswith(("artifacts", "data", "$"))
        ]
    for path in sorted(paths):
        files = (
            sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            if path.is_dir()
            else [path]
        )
        for source in files:
            if source.is_file():
                digest.update(source.as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def _stage_entry(dvc_yaml: Path, stage: str) -> dict | None:
    import yaml

    if not dvc_yaml.is_file():
        return None
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    return stages.get(stage)


def _load_checkpoint(path: Path, resolved: str, name: str, adopt: bool = False) -> dict | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if adopt and state.get("config") != resolved:
        log.info(
            "%s: continuing checkpoint %s (epoch %d) with this run's settings", name, path, state["epoch"]
        )
    elif state.get("config") != resolved:
        log.info("%s: checkpoint %s is from other settings, rows or code; starting over", name, path)
        return None
    return state


def _restore(saved: dict, model: nn.Module) -> RunState:
    model.load_state_dict(saved["model"])
    array = lambda t: None if t is None else t.numpy()  # noqa: E731
    return RunState(
        epoch=int(saved["epoch"]),
        step=int(saved["step"]),
        batch_size=int(saved["batch_size"]),
        score=saved["score"],
        predictions=array(saved["predictions"]),
        validated_step=saved.get("validated_step"),
        best_score=saved["best_score"],
        best_step=saved["best_step"],
        best_predictions=array(saved["best_predictions"]),
        best_weights=saved["best_weights"],
        history=saved["history"],
        reference=saved.get("reference"),
        stale=int(saved.get("stale", 0)),
        stopped=bool(saved.get("stopped", False)),
    )


def _save_checkpoint(
    path: Path, model, opt, sched, scaler, state: RunState, seed: int, resolved: str, ema=None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "batch_size": state.batch_size,
            "seed": seed,
            "score": state.score,
            "predictions": tensor(state.predictions),
            "validated_step": state.validated_step,
            "best_score": state.best_score,
            "best_step": state.best_step,
            "best_predictions": tensor(state.best_predictions),
            "best_weights": state.best_weights,
            "history": state.history,
            "reference": state.reference,
            "stale": state.stale,
            "stopped": state.stopped,
            "config": resolved,
            "ema": None if ema is None else ema.module.state_dict(),
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a kill leaves the previous checkpoint or this one, never half of one


def save_model(model: nn.Module, exp: ExperimentBase, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (paths.MODEL_FILE + ".tmp")
    save_file(weights, str(tmp))
    tmp.replace(folder / paths.MODEL_FILE)
    io.write_text(config.dump(exp), folder / paths.CONFIG_FILE)
