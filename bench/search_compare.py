"""Random search against population-based training at the same budget of epochs, on the default experiment.

    python -m bench.search_compare [--trials 4] [--epochs 6] [--data-sample 0.25] [--seeds 0] [--out bench_search.json]

Both searches draw from the same space (the learning rate, weight decay and dropout of search.yaml's default)
with `--trials` trials of `--epochs` epochs on fold 0 of params.yaml's experiment: random search without
early stopping (so it spends the whole budget: trials x epochs), PBT with a population of `--trials`, which
copies and perturbs every 2 epochs (so the same budget, spent differently). `--data-sample` thins the rows
(dataset.data_sample) to keep it affordable on a small CPU. Prints and writes, per strategy and seed, the
best validation metric a finished trial reached, its settings and the wall time.

The work happens in a temporary project: params.yaml with the data paths made absolute and the overrides
above, the split stage run there, artifacts left under it. Tests never run this.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deuterium import cli, io, paths, search  # noqa: E402  (cli first: telemetry off before ray)

SPACE = {
    "training.learning_rate": {"low": 0.0003, "high": 0.01, "distribution": "loguniform"},
    "training.weight_decay": [0.0, 0.01, 0.05],
    "architecture.dropout": {"low": 0.0, "high": 0.3},
}
DATA_KEYS = (
    "train_dataframe",
    "data_folder",
    "test_dataframe",
    "validation_dataframe",
    "unlabeled_dataframe",
)


def project(workdir: Path, params_path: Path, epochs: int, data_sample: float) -> Path:
    """A temporary project: the experiment with absolute data paths, fold 0, fewer epochs and rows."""
    from stages import split

    params = yaml.safe_load(params_path.read_text())
    for key in DATA_KEYS:
        value = params["dataset"].get(key)
        if value:
            params["dataset"][key] = str((params_path.parent / value).resolve())
    params["dataset"].update(selected_folds=[0], data_sample=data_sample)
    params["training"]["epochs"] = epochs
    params["training"]["evaluation_epochs"] = 1.0  # each epoch reports, as when the README table was run
    params.setdefault("logging", {})
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(ROOT / "dvc.yaml", workdir / "dvc.yaml")  # which settings the train stage reads
    split.main(workdir / "params.yaml", workdir / paths.SPLIT)
    return workdir


def compare(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="search-compare-"))
    root = project(workdir, args.params.resolve(), args.epochs, args.data_sample)
    common = {"max_trials": args.trials, "trials_at_once": args.trials_at_once, "space": SPACE}
    strategies = {
        "random": {"strategy": "random", "early_stopping": {"enabled": False}},
        "pbt": {"strategy": "pbt", "pbt": {"perturbation_interval": 2, "quantile_fraction": 0.25}},
    }
    out = {
        "budget_epochs": args.trials * args.epochs,
        "trials": args.trials,
        "epochs": args.epochs,
        "data_sample": args.data_sample,
        "fold": 0,
        "runs": [],
    }
    for seed in args.seeds:
        for name, settings in strategies.items():
            the_search = search.SearchSettings.model_validate({**common, **settings, "seed": seed})
            started = time.monotonic()
            rows = search.run(
                the_search,
                root / "params.yaml",
                root / paths.SPLIT,
                root / "artifacts" / f"{name}-{seed}",
                num_cpus=args.num_cpus,
            )
            metric = io.read_json(root / "artifacts" / f"{name}-{seed}" / search.LEADERBOARD_JSON)["metric"]
            finished = [r for r in rows if r["status"] == "finished"]
            best = finished[0] if finished else None
            run = {
                "strategy": name,
                "seed": seed,
                "metric": metric,
                "best": None if best is None else best[metric],
                "best_settings": None if best is None else best["settings"],
                "finished": len(finished),
                "failed": sum(r["status"] == "failed" for r in rows),
                "epochs_trained": sum(r["epochs_trained"] for r in rows),  # the budget really spent
                "wall_s": round(time.monotonic() - started, 1),
            }
            out["runs"].append(run)
            print(json.dumps(run), flush=True)
    out["workdir"] = str(workdir)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data-sample", type=float, default=0.25)
    parser.add_argument("--trials-at-once", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("bench_search.json"))
    args = parser.parse_args()
    result = cli.run(compare, args)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
