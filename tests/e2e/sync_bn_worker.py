"""Run by torchrun in tests/e2e/test_distributed.py: batch norm statistics with and without sync_batch_normalization.

Each of the 2 processes normalises its own half of one batch; rank 0 writes what the layers learned.
"""

import json
import sys

import torch
from timm.layers import BatchNormAct2d
from torch import nn

from deuterium import distributed
from deuterium.settings import EnvironmentSettings

dev = distributed.init(EnvironmentSettings(device="cpu", number_of_gpus=2))
rank = distributed.rank()
batch = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0)) + torch.arange(8.0).view(
    8, 1, 1, 1
)
half = batch[4 * rank : 4 * (rank + 1)]
probe = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(1))  # loss = sum(output * probe)
out = {"global": batch.mean(dim=(0, 2, 3)).tolist(), "local": half.mean(dim=(0, 2, 3)).tolist()}
for sync in (False, True):
    # momentum 1: the running mean is the last batch's mean; timm's norm+act layer and torch's plain one
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=1.0), BatchNormAct2d(3, momentum=1.0, act_layer=nn.ReLU))
    net = distributed.wrap(model, dev, sync)
    net.train()
    (net(half) * probe[4 * rank : 4 * (rank + 1)]).sum().backward()
    layers = distributed.unwrap(net)
    out[f"sync={sync}"] = {
        "classes": [type(m).__name__ for m in layers],
        "running_mean": layers[0].running_mean.tolist(),
        "grad": layers[1].weight.grad.tolist(),
    }
# one process on the whole batch; DDP averages the processes' gradients, hence the halved loss
reference = nn.Sequential(nn.BatchNorm2d(3, momentum=1.0), BatchNormAct2d(3, momentum=1.0, act_layer=nn.ReLU))
((reference(batch) * probe).sum() / 2).backward()
out["reference"] = {
    "running_mean": reference[0].running_mean.tolist(),
    "grad": reference[1].weight.grad.tolist(),
}
if rank == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
distributed.shutdown()
