"""DistributedDataParallel through torchrun: one process per GPU, or gloo processes on the CPU.

`environment.number_of_gpus` > 1 makes a training stage start itself again under torchrun
(`relaunch`); each process then joins the group (`init`), trains on its share of every epoch's
rows and averages gradients with the others. Rank 0 alone validates, logs, checkpoints and saves.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import torch
import torch.distributed as dist
from timm.layers import BatchNormAct2d, convert_sync_batchnorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from deuterium import runtime
from deuterium.errors import ConfigError, DeuteriumError
from deuterium.settings import EnvironmentSettings

log = logging.getLogger(__name__)


class DistributedError(DeuteriumError):
    """A torchrun worker failed."""


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def relaunch(env: EnvironmentSettings, module: str, argv: list[str]) -> bool:
    """Run `python -m module *argv` under torchrun with number_of_gpus processes and wait for it.

    Returns False (nothing done) with one GPU or inside a torchrun worker already.
    """
    n = env.number_of_gpus
    if n == 1 or "LOCAL_RANK" in os.environ:
        return False
    if runtime.device(env).type == "cuda" and n > torch.cuda.device_count():
        raise ConfigError(
            f"environment.number_of_gpus is {n} but this machine has {torch.cuda.device_count()} GPU(s)"
        )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    cmd += ["-m", module, *argv]
    log.info("starting %d training processes: %s", n, " ".join(cmd[1:]))
    code = subprocess.run(cmd, check=False).returncode
    if code != 0:
        raise DistributedError(
            f"a torchrun training process failed (exit code {code}); its messages are above"
        )
    return True


def init(env: EnvironmentSettings) -> torch.device:
    """Join the process group when started by torchrun; the device this process trains on."""
    dev = runtime.device(env)
    if world_size() == 1:
        return dev
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not active():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if not is_main():
            logging.getLogger().setLevel(logging.WARNING)  # one copy of the progress lines, from rank 0
        log.info("distributed training: %d processes (%s)", world_size(), dist.get_backend())
    return dev


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def broadcast(value):
    """Rank 0's value on every rank (a drawn random seed, a fitted batch size)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def smallest(value: int) -> int:
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def wrap(model: nn.Module, dev: torch.device, sync_batch_normalization: bool) -> nn.Module:
    """The model as DistributedDataParallel (batch norm statistics shared over processes on request)."""
    if not active():
        return model
    if sync_batch_normalization and dev.type == "cuda":
        model = convert_sync_batchnorm(model)  # timm's: its norm + activation layers too
    elif sync_batch_normalization:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.__class__ = _gloo_synced(type(m))
    # find_unused_parameters: timm backbones keep layers (a classifier's conv_head...) forward_features skips
    return DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True
    )


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class _AllReduceSum(torch.autograd.Function):
    """A sum over processes that gradients flow back through (each process gets the summed gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _sync_normalize(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm with the statistics of every process's batch: sums all-reduced over gloo, gradients too."""
    c, dims = x.shape[1], [0, *range(2, x.dim())]
    count = x.new_tensor([x.numel() / c])
    stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
    n = stats[-1]
    mean = stats[:c] / n
    var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean.detach() * m)
            bn.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)
    shape = [1, c] + [1] * (x.dim() - 2)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    return y * bn.weight.view(shape) + bn.bias.view(shape) if bn.affine else y


_GLOO_SYNCED: dict[type, type] = {}


def _gloo_synced(cls: type) -> type:
    """A subclass of a batch norm class that syncs over CPU processes while training.

    torch's SyncBatchNorm (and DDP's check for it) accept GPU modules only.
    """
    if cls not in _GLOO_SYNCED:

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not (self.training and active()):
                return cls.forward(self, x)
            y = _sync_normalize(self, x)
            if isinstance(self, BatchNormAct2d):  # timm's norm + activation layer
                y = self.act(self.drop(y))
            return y

        _GLOO_SYNCED[cls] = type(f"GlooSync{cls.__name__}", (cls,), {"forward": forward})
    return _GLOO_SYNCED[cls]
