"""H2O-3 Deep Learning against this project's tabular trainer on small tables it was not tuned on.

    python -m bench.h2o_small_tables [--seeds 1 2 3] [--set mini_batch_size=1 ...] [--h2o-threads -1]

scikit-learn's bundled tables (no download): breast cancer (569 rows, 2 classes), wine (178 rows, 3
classes) and diabetes (442 rows, regression). Each seed draws a 70/30 split (stratified for classes); both
train with their defaults (H2O-3's: rectifier, 200,200, 10 epochs, ADADELTA; ours the same, in batches of
`tabular.mini_batch_size`), no validation frame, the same seed, and are judged on the 30%: classification
error, or RMSE. Prints each table's figures per seed and the mean ratio ours / H2O-3 (below 1: ours is
better). `--set` changes one of our `tabular` settings (YAML values) to try another default. Timed as
bench/h2o_mnist.py times (training alone). Tests never run this.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import yaml
from sklearn import datasets
from sklearn.model_selection import train_test_split

from bench.h2o_mnist import fit_ours

TABLES = {
    "breast_cancer": (datasets.load_breast_cancer, "classification"),
    "wine": (datasets.load_wine, "classification"),
    "diabetes": (datasets.load_diabetes, "regression"),
}


def split(name: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    load, kind = TABLES[name]
    frame = load(as_frame=True).frame.rename(columns={"target": "response"})
    if kind == "classification":
        frame["response"] = "c" + frame["response"].astype(str)
    strata = frame["response"] if kind == "classification" else None
    train, test = train_test_split(frame, test_size=0.3, random_state=seed, stratify=strata)
    return train.reset_index(drop=True), test.reset_index(drop=True), kind


def score(kind: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    if kind == "classification":
        return float(np.mean(predicted != truth))
    return float(np.sqrt(np.mean((predicted.astype(float) - truth.astype(float)) ** 2)))


def run_ours(
    train: pd.DataFrame, test: pd.DataFrame, kind: str, seed: int, settings: dict
) -> tuple[float, float]:
    params = {
        "problem_type": f"tabular_{kind}",
        "dataset": {"train_dataframe": "train.csv", "data_folder": ".", "label_columns": ["response"]},
        "tabular": {**settings, "seed": seed},
    }
    out, table, seconds, _ = fit_ours(params, train, test, kind, seed, validate=False)
    if kind == "classification":
        return score(kind, table.y, out.argmax(1)), seconds
    return score(kind, test["response"].to_numpy(), out[:, 0]), seconds


def run_h2o(train: pd.DataFrame, test: pd.DataFrame, kind: str, seed: int) -> tuple[float, float]:
    import h2o
    from h2o.estimators import H2ODeepLearningEstimator

    with tempfile.TemporaryDirectory() as tmp:
        frames = {}
        for part, frame in (("train", train), ("test", test)):
            path = os.path.join(tmp, f"{part}.csv")
            frame.to_csv(path, index=False)
            types = {"response": "enum"} if kind == "classification" else None
            frames[part] = h2o.import_file(path, col_types=types)
    model = H2ODeepLearningEstimator(seed=seed)
    x = [c for c in train.columns if c != "response"]
    started = time.perf_counter()
    model.train(x=x, y="response", training_frame=frames["train"])
    seconds = time.perf_counter() - started
    predicted = model.predict(frames["test"]).as_data_frame(use_multi_thread=False)["predict"]
    if kind == "classification":
        return score(kind, test["response"].to_numpy(), predicted.astype(str).to_numpy()), seconds
    return score(kind, test["response"].to_numpy(), predicted.to_numpy()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--set", nargs="*", default=[], help="our tabular settings, key=value (YAML)")
    parser.add_argument("--h2o-threads", type=int, default=-1, help="H2O-3's nthreads (-1: all cores)")
    args = parser.parse_args()
    settings = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    import h2o

    h2o.init(nthreads=args.h2o_threads, max_mem_size="4G", verbose=False)
    h2o.no_progress()
    try:
        for name in TABLES:
            ours, theirs = [], []
            for seed in args.seeds:
                train, test, kind = split(name, seed)
                ours.append(run_ours(train, test, kind, seed, settings))
                theirs.append(run_h2o(train, test, kind, seed))
                what = "error" if kind == "classification" else "RMSE"
                print(
                    f"{name} seed {seed}: {what} ours {ours[-1][0]:.4f} ({ours[-1][1]:.1f} s), "
                    f"H2O-3 {theirs[-1][0]:.4f} ({theirs[-1][1]:.1f} s)"
                )
            mean_ours, mean_h2o = np.mean([o[0] for o in ours]), np.mean([t[0] for t in theirs])
            ratio = f"ratio {mean_ours / mean_h2o:.3f}" if mean_h2o > 0 else "no ratio (H2O-3's is 0)"
            print(f"{name}: mean {what} ours {mean_ours:.4f}, H2O-3 {mean_h2o:.4f}, {ratio}")
    finally:
        h2o.cluster().shutdown()


if __name__ == "__main__":
    main()
