"""Ablation: the out-of-fold figure of an experiment with one change at a time, measured in one run.

    python -m bench.ablation [--params params.yaml] [--variants bench/ablation_audio.yaml] [--only a,b]
                             [--folds 0,1,2] [--out bench/results/ablation.json]

Each variant is a name and the settings it changes (dotted keys, as `dvc exp run -S` takes them), read
from the --variants YAML file. Every variant trains the same folds from the split stage's
artifacts/split (run `dvc repro split` first) with the real training code (deuterium.fitting.fit_folds),
and the table gives each variant's out-of-fold metric per fold and overall, its epochs and its wall time.
Results are appended to --out as each variant finishes, so a long run that is stopped keeps what it
measured, and each variant's out-of-fold predictions are written beside it (<out stem>.<variant>.oof.parquet). Run it on a quiet machine: the wall times are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deuterium import config, evaluation, fitting, io, paths, problems  # noqa: E402


def with_overrides(params: dict, overrides: dict) -> dict:
    """params with each dotted key set (a copy); a key missing on the way is created, as `-S` does."""
    out = json.loads(json.dumps(params))
    for dotted, value in overrides.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def run_variant(params: dict, split_dir: Path, folds: list[int] | None) -> dict:
    if folds is not None:
        params = with_overrides(params, {"dataset.selected_folds": folds})
    exp = config.parse(params, "variant")
    problem = problems.of(exp)
    info = io.read_json(split_dir / paths.DATA_INFO_FILE)
    exp = problem.data.resolve(exp, info)
    frame = io.read_frame(split_dir / paths.FOLDS_FILE)
    targets = problem.encode(frame, exp, info)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        oof = fitting.fit_folds(exp, problem, info, frame, targets, Path(tmp) / "models", Path(tmp) / "ckpt")
        seconds = time.perf_counter() - start
        # fold{k}/config, or fold{k}/seed{s}/config with environment.number_of_seeds above 1
        resolved = config.load(next((Path(tmp) / "models").rglob(paths.CONFIG_FILE)), inherit=False)
    preds = fitting.predictions_from(oof, problem.output_columns(info))
    report = evaluation.oof_report(problem, oof, frame, targets, preds)
    metric = exp.prediction.metric
    return {
        "oof": oof,
        "metric": metric,
        "overall": report["overall"][metric],
        "folds": {k: v[metric] for k, v in report.items() if k != "overall"},
        "epochs": resolved.training.epochs,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--variants", type=Path, default=ROOT / "bench" / "ablation_audio.yaml")
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--folds", default=None, help="comma-separated fold numbers (default: the params')")
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ablation.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = yaml.safe_load(args.params.read_text())
    variants = yaml.safe_load(args.variants.read_text()) or {}
    names = args.only.split(",") if args.only else list(variants)
    folds = [int(k) for k in args.folds.split(",")] if args.folds else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    for name in names:
        result = run_variant(with_overrides(base, variants[name] or {}), args.split, folds)
        # each row's out-of-fold prediction, to compare variants row by row (or average them) later
        io.write_frame(result.pop("oof"), args.out.with_name(f"{args.out.stem}.{name}.oof.parquet"))
        row = {"variant": name, "changes": variants[name] or {}, **result}
        results.append(row)
        args.out.write_text(json.dumps(results, indent=1))
        folds_shown = " ".join(f"{v:.3f}" for v in result["folds"].values())
        print(
            f"| {name} | {result['overall']:.4f} | {folds_shown} | {result['epochs']} | {result['seconds']:.0f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
