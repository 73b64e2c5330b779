"""H2O-3 Deep Learning against this project's tabular trainer on MNIST, same settings, same machine, one run.

    python -m bench.h2o_mnist [--rows N] [--epochs 10] [--seed 1] [--batch 128] [--h2o-threads -1]

The H2O Deep Learning booklet's trial run: 784 pixel columns, activation rectifier with dropout (hidden
dropout 0.5, H2O-3's default), hidden 32,32,32, input dropout ratio 0.2, l1 1e-5, 10 epochs, ADADELTA,
the test set as validation frame (so both score it every epoch). Both train on the 60,000 training rows
(or the first --rows) and are judged on the 10,000 test rows. Timed: training alone (H2O-3: the
`train` call on frames already in the cluster; ours: encoding the frames and `fit`), not the JVM's start
or the upload, nor torch's one-time import of torch._dynamo. Prints test error and wall time of both,
and their ratios. Tests never run this.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deuterium import config, problems
from deuterium.data_types.tabular import trainer
from deuterium.prepare import MNIST_SPLITS, _read_split

MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist"
TRIAL = {
    "activation": "rectifier_with_dropout",
    "hidden": [32, 32, 32],
    "input_dropout_ratio": 0.2,
    "l1": 1e-5,
}


def frames(rows: int | None) -> dict[str, pd.DataFrame]:
    out = {}
    for split, names in MNIST_SPLITS.items():
        images, labels = _read_split(MNIST, *names)
        n = rows if split == "train" and rows else len(images)
        pixels = images[:n].reshape(n, -1)
        frame = pd.DataFrame(pixels, columns=[f"C{i + 1}" for i in range(pixels.shape[1])])
        frame["C785"] = labels[:n].astype(int).astype(str)
        out[split] = frame
    return out


def run_h2o(
    data: dict[str, pd.DataFrame], epochs: float, seed: int, threads: int
) -> tuple[float, float, float]:
    import h2o
    from h2o.estimators import H2ODeepLearningEstimator

    h2o.init(nthreads=threads, max_mem_size="6G", verbose=False)
    h2o.no_progress()
    with tempfile.TemporaryDirectory() as tmp:
        hf = {}
        for split, frame in data.items():
            path = os.path.join(tmp, f"{split}.csv")
            frame.to_csv(path, index=False)
            hf[split] = h2o.import_file(path, col_types={"C785": "enum"})
    model = H2ODeepLearningEstimator(
        activation="RectifierWithDropout",
        hidden=TRIAL["hidden"],
        input_dropout_ratio=TRIAL["input_dropout_ratio"],
        l1=TRIAL["l1"],
        epochs=epochs,
        sparse=True,  # the booklet's trial run
        seed=seed,
    )
    x = [c for c in data["train"].columns if c != "C785"]
    started = time.perf_counter()
    model.train(x=x, y="C785", training_frame=hf["train"], validation_frame=hf["test"])
    seconds = time.perf_counter() - started
    epochs = float(model.scoring_history()["epochs"].iloc[-1])  # fewer than asked when it stopped early
    predicted = model.predict(hf["test"]).as_data_frame(use_multi_thread=False)["predict"].astype(str)
    error = float(np.mean(predicted.to_numpy() != data["test"]["C785"].to_numpy()))
    h2o.cluster().shutdown()
    return error, seconds, epochs


def fit_ours(
    params: dict, train: pd.DataFrame, test: pd.DataFrame, kind: str, seed: int, validate: bool
) -> tuple[np.ndarray, trainer.Table, float, str]:
    """Our tabular trainer as the train stage runs it, on frames in memory: (the model's outputs on the test
    frame, the test frame's table, seconds of training, why it stopped). `validate`: the test frame is the
    validation frame (scored every epoch). Also used by bench/h2o_small_tables.py."""
    exp = config.parse(params)
    problem = problems.of(exp)
    # A process's first optimizer imports torch._dynamo (about 2 s here): a one-time start-up cost, like
    # H2O-3's JVM start, which its timer leaves out too. (The train stage has imported it with timm.)
    torch.optim.Adadelta([torch.zeros(1, requires_grad=True)])
    started = time.perf_counter()
    exp = problem.data.resolve(exp, {"tabular": problem.data.choose(problem.files(train, exp), exp)})
    info = problem.label_info(train, exp)
    torch.manual_seed(seed)  # as the train stage does: the initial weights follow the seed
    model = problem.model(exp, problem.n_outputs(info))
    tables = [trainer.table(f, problem.encode(f, exp, info), exp, kind) for f in (train, test)]
    valid = tables[1] if validate else None
    result = trainer.fit(exp, kind, model, tables[0], valid, problem.activate, seed)
    seconds = time.perf_counter() - started
    return trainer.predict(model, tables[1].x, problem.activate), tables[1], seconds, result.stopped


def run_ours(data: dict[str, pd.DataFrame], epochs: float, seed: int, batch: int) -> tuple[float, float, str]:
    params = {
        "problem_type": "tabular_classification",
        "dataset": {"train_dataframe": "train.parquet", "data_folder": ".", "label_columns": ["C785"]},
        "tabular": {**TRIAL, "epochs": epochs, "seed": seed, "mini_batch_size": batch},
    }
    probs, test, seconds, why = fit_ours(params, data["train"], data["test"], "classification", seed, True)
    error = float(np.mean(probs.argmax(1) != test.y))
    return error, seconds, why


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=None, help="training rows (default: all 60,000)")
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--batch",
        type=int,
        default=128,
        help="our mini_batch_size (H2O-3's is 1; configs/mnist_tabular.yaml's)",
    )
    parser.add_argument("--h2o-threads", type=int, default=-1, help="H2O-3's nthreads (-1: all cores)")
    args = parser.parse_args()
    data = frames(args.rows)
    print(f"MNIST: {len(data['train'])} training rows, {len(data['test'])} test rows, {args.epochs:g} epochs")
    ours_error, ours_s, why = run_ours(data, args.epochs, args.seed, args.batch)
    print(f"deuterium tabular: test error {ours_error:.4f}, {ours_s:.1f} s ({why})")
    h2o_error, h2o_s, h2o_epochs = run_h2o(data, args.epochs, args.seed, args.h2o_threads)
    print(
        f"H2O-3 {__import__('h2o').__version__}: test error {h2o_error:.4f}, {h2o_s:.1f} s "
        f"({h2o_epochs:.3g} epochs trained)"
    )
    print(
        f"ratio ours / H2O-3: test error {ours_error / max(h2o_error, 1e-12):.3f}, wall time {ours_s / h2o_s:.3f}"
    )


if __name__ == "__main__":
    main()
