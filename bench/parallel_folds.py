"""Folds one at a time against folds at once (environment.parallel_folds), in one run of this process.

    python -m bench.parallel_folds [--params params.yaml] [--steps 150] [--split artifacts/split]

Trains every selected fold of the experiment twice with the real training code (bench.ablation's
run_variant, so `dvc repro split` first), shortened to about --steps optimizer steps a fold: first one fold
after another, each with all of torch's threads (`parallel_folds: 1`), then all at once in their own
processes with a share of the threads each (`parallel_folds: auto`). Prints each way's wall time and
out-of-fold metric and the ratio of the times. The two ways train with different thread counts, so their
metrics differ by float rounding, not by method. Run it on a quiet machine with all its threads (not under
OMP_NUM_THREADS=1, which makes `auto` one at a time).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ablation import run_variant, with_overrides  # noqa: E402
from deuterium import paths  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--steps", type=int, default=150, help="optimizer steps a fold (training.epochs: auto)"
    )
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = with_overrides(
        yaml.safe_load(args.params.read_text()),
        {"training.epochs": "auto", "training.epochs_auto_steps": args.steps, "training.epochs_auto_min": 1},
    )
    rows = {}
    for name, value in (("one at a time", 1), ("at once", "auto")):
        rows[name] = run_variant(
            with_overrides(base, {"environment.parallel_folds": value}), args.split, None
        )
    print(
        f"\n{torch.get_num_threads()} threads, about {args.steps} steps a fold, {rows['at once']['epochs']} epochs"
    )
    print("| | wall time | out of fold | folds |\n|---|---|---|---|")
    for name, row in rows.items():
        folds = " ".join(f"{v:.3f}" for v in row["folds"].values())
        print(f"| {name} | {row['seconds']:.0f} s | {row['overall']:.4f} | {folds} |")
    ratio = rows["at once"]["seconds"] / rows["one at a time"]["seconds"]
    print(f"at once / one at a time: {ratio:.2f}x the wall time")


if __name__ == "__main__":
    main()
