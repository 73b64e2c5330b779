"""Training throughput of the default audio experiment, and how much of each step waits for data.

    python -m bench.train_throughput [--params params.yaml] [--device cpu|cuda] [--amp] [--batches 24]

Runs the real training loop (deuterium.training.fit) over `--batches` batches of params.yaml's
experiment, several ways in one process, and prints for each: samples/s, the share of the step time
spent waiting on the DataLoader iterator (decoding, cropping, collating: the accelerator idles
meanwhile), the GPU's utilization (nvidia-smi, sampled) and the ratios to the baseline row and to the in-memory row:

  decode every epoch  the data path before decode-once: every item decoded (and resampled) each time
                      (environment.decode_cache_megabytes 0)
  baseline            params.yaml as it is (its device, precision and number_of_workers; the clips
                      decoded once into the cache, crops and augmentations drawn from it)
  in-memory batches   the same crops decoded once beforehand: the model's own speed, no data wait
  workers=N           --workers data-loader processes (when the baseline has another number)
  amp, amp in-memory  with --amp: float16 autocast on the GPU

With --epoch every training row is used (a whole epoch, not --batches) and each row also prints its
seconds per epoch. Compare ratios within one run only: the machine may be shared. Tests never run this.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deuterium import config, fitting, io, problems, training  # noqa: E402
from deuterium.data_types import decoded as decoded_cache  # noqa: E402


class TimedLoader:
    """A DataLoader that records, per batch, the wait inside next() and the whole step (yield to yield)."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.waits: list[float] = []
        self.steps: list[float] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        it = iter(self.loader)
        last = time.perf_counter()
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            now = time.perf_counter()
            self.waits.append(now - start)
            if len(self.waits) > 1:
                self.steps.append(now - last)  # the previous batch's step, its wait for this batch included
            last = now
            yield batch


class GpuSampler(threading.Thread):
    """GPU utilization (%) from nvidia-smi every 0.2 s while running; empty without nvidia-smi."""

    def __init__(self):
        super().__init__(daemon=True)
        self.values: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        while not self.done.wait(0.2):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                self.values.append(float(out.stdout.split()[0]))


def measure(exp, problem, n_outputs: int, dataset, batches: int, warmup: int, dev: torch.device) -> dict:
    t = exp.training
    loader = TimedLoader(training._loader(exp, dataset, t.batch_size, dev, seed=0))
    model = problem.model(exp, n_outputs).to(dev)
    opt = training.optimizer(exp, model)
    steps = math.ceil(len(loader) / t.grad_accumulation)
    loop = training.Loop(
        loader=loader,
        loss_fn=problem.loss(exp),
        opt=opt,
        sched=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: training.lr_factor(exp, s, steps)),
        scaler=torch.amp.GradScaler(enabled=exp.environment.mixed_precision_training and dev.type == "cuda"),
        dev=dev,
        live=fitting._Silent(),
        prefix="bench",
        seed=0,
        augment=problem.batch_augmenter(exp),  # the data type's batch augmentations, as training runs them
        ema=training._moving_average(model, t.ema_decay, None),  # training.ema_decay, as training runs it
    )
    gpu = GpuSampler()
    gpu.start()
    training.fit(exp, model, loop, training.RunState(batch_size=t.batch_size))
    gpu.done.set()
    waits, step_times = loader.waits[warmup + 1 : batches], loader.steps[warmup:]
    total = sum(step_times)
    return {
        "samples_per_s": len(step_times) * t.batch_size / total,
        "data_wait": sum(waits) / total,
        "step_ms": 1000 * statistics.median(step_times),
        "gpu_util": statistics.mean(gpu.values) if gpu.values else None,
    }


def with_settings(exp, **environment):
    return exp.model_copy(update={"environment": exp.environment.model_copy(update=environment)})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=None, help="default: params.yaml's"
    )
    parser.add_argument("--amp", action="store_true", help="also float16 autocast (GPU only)")
    parser.add_argument("--batches", type=int, default=24, help="measured batches per row")
    parser.add_argument("--warmup", type=int, default=4, help="batches left out at the start of each row")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers for the workers row")
    parser.add_argument("--epoch", action="store_true", help="measure a whole epoch of the training rows")
    args = parser.parse_args()

    exp = config.load(args.params)
    t = exp.training
    exp = exp.model_copy(
        update={
            "training": t.model_copy(update={"epochs": 1, "grad_accumulation": 1, "drop_last_batch": True}),
            "logging": exp.logging.model_copy(update={"log_grad_norm": False}),
        }
    )
    if args.device:
        exp = with_settings(exp, device=args.device)
    exp = with_settings(exp, mixed_precision_training=False)
    problem = problems.of(exp)
    frame = io.read_frame(exp.dataset.train_dataframe)
    info = problem.label_info(frame, exp)
    n_outputs = problem.n_outputs(info)
    dev = training.distributed.init(exp.environment)
    rows = len(frame) if args.epoch else (args.batches + args.warmup + 1) * exp.training.batch_size
    frame = frame.sample(n=min(rows, len(frame)), random_state=0).reset_index(drop=True)
    targets = problem.encode(frame, exp, info)
    batches = len(frame) // exp.training.batch_size
    if not args.epoch:
        batches = min(args.batches + args.warmup + 1, batches)
    # before decode-once, measured first, while the process's cache is still empty and kept so: every
    # item is decoded (and resampled) when it is drawn
    decoded_cache.CACHE.clear()
    decoded_cache.configure(0)
    each_time = Subset(problem.dataset(frame, exp, targets, 0), range(batches * exp.training.batch_size))
    results = {"decode every epoch": measure(exp, problem, n_outputs, each_time, batches, args.warmup, dev)}
    decoded_cache.configure(exp.environment.decode_cache_megabytes)
    dataset = problem.dataset(frame, exp, targets, 0)  # fills the cache (not timed: once per run)
    dataset = Subset(dataset, range(batches * exp.training.batch_size))
    decoded = [dataset[i] for i in range(len(dataset))]
    in_memory = TensorDataset(torch.stack([w for w, _ in decoded]), torch.stack([y for _, y in decoded]))

    plans = [
        ("baseline", exp, dataset),
        ("in-memory batches", exp, in_memory),
    ]
    if args.workers != exp.environment.number_of_workers:
        plans.append((f"workers={args.workers}", with_settings(exp, number_of_workers=args.workers), dataset))
    if args.amp:
        amp = with_settings(exp, mixed_precision_training=True)
        plans += [("amp", amp, dataset), ("amp, in-memory batches", amp, in_memory)]

    print(
        f"{exp.architecture.backbone}, batch {exp.training.batch_size}, "
        f"{problem.data.name} input {problem.data.preprocessing(exp)}, {dev} "
        f"({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
        f"{batches - args.warmup - 1} measured batches a row"
    )
    per_epoch = "s/epoch" if args.epoch else ""
    print(
        f"{'':26}{'samples/s':>11}{'step ms':>9}{'data wait':>11}{'GPU util':>10}{'vs baseline':>13}"
        f"{'vs in-memory':>14}{per_epoch:>9}"
    )
    results |= {name: measure(s, problem, n_outputs, d, batches, args.warmup, dev) for name, s, d in plans}
    base, memory = results["baseline"]["samples_per_s"], results["in-memory batches"]["samples_per_s"]
    for name, r in results.items():
        util = f"{r['gpu_util']:.0f}%" if r["gpu_util"] is not None else "n/a"
        epoch = f"{len(frame) / r['samples_per_s']:9.1f}" if args.epoch else ""
        print(
            f"{name:26}{r['samples_per_s']:11.1f}{r['step_ms']:9.1f}{100 * r['data_wait']:10.1f}%"
            f"{util:>10}{r['samples_per_s'] / base:12.2f}x{r['samples_per_s'] / memory:13.2f}x{epoch}"
        )


if __name__ == "__main__":
    main()
