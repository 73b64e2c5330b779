"""The training loop: plain PyTorch, one fold at a time, resumable, logged with dvclive."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from rich.progress import Progress
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from deuterium import config, inference, io, paths, runtime
from deuterium.problems.base import ProblemType
from deuterium.settings import ExperimentBase

log = logging.getLogger(__name__)


@dataclass
class FoldResult:
    fold: int
    score: float | None  # the chosen metric on the fold's validation rows (None without validation rows)
    predictions: np.ndarray | None


def optimizer(exp: ExperimentBase, model: nn.Module) -> torch.optim.Optimizer:
    t = exp.training
    kwargs = {"lr": t.learning_rate, "weight_decay": t.weight_decay}
    if t.optimizer == "SGD":
        return torch.optim.SGD(model.parameters(), momentum=0.9, nesterov=True, **kwargs)
    return getattr(torch.optim, t.optimizer)(model.parameters(), **kwargs)


def lr_factor(exp: ExperimentBase, step: int, steps_per_epoch: int) -> float:
    """Linear warmup over warmup_epochs, then the schedule over the remaining steps."""
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
        return 0.1 ** int(progress * 3)  # three equal phases: 1, 0.1, 0.01
    return 1.0


def _checkpoint_path(checkpoints: Path, fold: int) -> Path:
    return paths.fold_dir(checkpoints, fold) / "last.pt"


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
) -> FoldResult:
    seed = runtime.seed_everything(
        exp.environment.seed if exp.environment.seed < 0 else exp.environment.seed + fold
    )
    dev = runtime.device(exp.environment)
    model = problem.model(exp, problem.n_outputs(info)).to(dev)
    loader = DataLoader(
        problem.dataset(train_frame, exp, train_targets, seed),
        batch_size=min(exp.training.batch_size, len(train_frame)),
        shuffle=True,
        drop_last=exp.training.drop_last_batch and len(train_frame) > exp.training.batch_size,
        num_workers=exp.environment.number_of_workers,
        pin_memory=dev.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    opt = optimizer(exp, model)
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(exp, s, steps))
    scaler = torch.amp.GradScaler(enabled=exp.environment.mixed_precision_training and dev.type == "cuda")
    loss_fn = problem.loss(exp)
    metric_name = exp.prediction.metric
    metric = problem.metrics()[metric_name]
    resolved = config.dump(exp)

    start_epoch = 0
    ckpt = _checkpoint_path(checkpoints, fold)
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        if state.get("config") == resolved:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start_epoch = int(state["epoch"])
            log.info("fold %d: resuming after epoch %d from %s", fold, start_epoch, ckpt)
        else:
            log.info("fold %d: checkpoint %s is from other settings; starting over", fold, ckpt)

    files = problem.files(valid_frame, exp) if len(valid_frame) else []
    preds, score = None, None
    live.log_param(f"fold{fold}_seed", seed)
    with Progress(transient=True) as progress:
        for epoch in range(start_epoch, exp.training.epochs):
            model.train()
            task = progress.add_task(f"fold {fold} epoch {epoch + 1}/{exp.training.epochs}", total=steps)
            total_loss, seen = 0.0, 0
            for wave, target in loader:
                wave, target = wave.to(dev, non_blocking=True), target.to(dev, non_blocking=True)
                with runtime.autocast(dev, exp.environment.mixed_precision_training):
                    loss = loss_fn(model(wave).float(), target)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if exp.training.gradient_clip > 0:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), exp.training.gradient_clip)
                scaler.step(opt)
                scaler.update()
                sched.step()
                total_loss += loss.item() * len(wave)
                seen += len(wave)
                progress.advance(task)
            progress.remove_task(task)
            live.step = epoch + 1
            live.log_metric(f"fold{fold}/train/loss", total_loss / max(seen, 1))
            live.log_metric(f"fold{fold}/train/learning_rate", opt.param_groups[0]["lr"])
            if files:
                preds = _predict(exp, problem, [model], files, dev)
                score = float(metric.fn(problem.truth(valid_targets), preds))
                live.log_metric(f"fold{fold}/valid/{metric_name}", score)
                log.info(
                    "fold %d epoch %d: loss %.4f, valid %s %.4f",
                    fold,
                    epoch + 1,
                    total_loss / max(seen, 1),
                    metric_name,
                    score,
                )
            else:
                log.info("fold %d epoch %d: loss %.4f", fold, epoch + 1, total_loss / max(seen, 1))
            _save_checkpoint(ckpt, model, opt, sched, epoch + 1, resolved)

    if files and preds is None:  # resumed after the last epoch: predictions were not kept
        preds = _predict(exp, problem, [model], files, dev)
        score = float(metric.fn(problem.truth(valid_targets), preds))
    save_model(model, exp, paths.fold_dir(out_dir, fold))
    return FoldResult(fold, score, preds)


def _predict(exp, problem, models, files, dev) -> np.ndarray:
    return inference.predict_files(
        models,
        problem.activate,
        files,
        exp.audio.sample_rate,
        exp.inference_chunk_samples,
        exp.inference_batch_size,
        dev,
        exp.environment.mixed_precision_inference,
        "validating",
    )


def _save_checkpoint(path: Path, model, opt, sched, epoch: int, resolved: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch,
            "config": resolved,
        },
        tmp,
    )
    tmp.replace(path)


def save_model(model: nn.Module, exp: ExperimentBase, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (paths.MODEL_FILE + ".tmp")
    save_file(weights, str(tmp))
    tmp.replace(folder / paths.MODEL_FILE)
    io.write_text(config.dump(exp), folder / paths.CONFIG_FILE)
