"""Train every selected fold (and seed) and collect out-of-fold predictions; load trained models back."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from dvclive import Live
from safetensors.torch import load_file
from torch import nn

from deuterium import config, distributed, io, paths, problems, runtime, splitting, training
from deuterium.data_types import decoded
from deuterium.errors import DataError
from deuterium.problems import ProblemType
from deuterium.settings import ExperimentBase
from deuterium.training import RunState, train_fold

log = logging.getLogger(__name__)


class _Silent:
    """Stands in for dvclive on the torchrun processes other than rank 0."""

    step = 0

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def fit_folds(
    exp: ExperimentBase,
    problem: ProblemType,
    info: dict,
    frame: pd.DataFrame,
    targets: np.ndarray,
    out_dir: Path,
    checkpoints: Path,
    fold_targets: dict[int, np.ndarray] | None = None,
    stage: str = "train",
    after_epoch: Callable[[str, RunState], None] | None = None,
    adopt: bool = False,
) -> pd.DataFrame:
    """Train number_of_seeds models per selected fold into out_dir/fold{k} (fold{k}/seed{s} with several seeds).

    `fold_targets`: targets for fold k in place of `targets` (pseudo labels made by fold k's own models).
    `stage`: the dvc.yaml stage running it, whose code a checkpoint must match to be resumed.
    `after_epoch`, `adopt`: passed to each run (train_fold); the hyperparameter search uses them.

    Writes and returns out_dir/oof.parquet: each fold's validation predictions, averaged over its seeds;
    with several seeds also out_dir/seeds.json, every seed's score and their spread. Under torchrun every
    process trains and rank 0 alone writes.
    """
    tmp = out_dir.with_name(out_dir.name + ".partial")
    distributed.init(exp.environment)
    main = distributed.is_main()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)  # a resumed run's curves come back from its checkpoints
    live = Live(str(tmp / "dvclive"), report=None, save_dvc_exp=False, dvcyaml=None) if main else _Silent()
    metric = problem.metrics()[exp.prediction.metric]
    n_seeds = exp.environment.number_of_seeds
    trainer = problem.data.trainer() or train_fold
    keys = [(fold, seed_index) for fold in exp.dataset.folds for seed_index in range(n_seeds)]

    masks = {fold: fold_rows(exp, info, frame, fold) for fold in exp.dataset.folds}

    def run_args(fold: int) -> tuple:
        """A run's arguments, made per run: one fold after another, a big frame is not copied for every fold at once."""
        targets_k = (fold_targets or {}).get(fold, targets)
        trains, is_valid = masks[fold]
        train_rows, valid_rows = frame[trains].reset_index(drop=True), frame[is_valid].reset_index(drop=True)
        rows = (train_rows, targets_k[trains], valid_rows, targets_k[is_valid])
        return exp, problem, info, *rows, fold, tmp, checkpoints

    kwargs = {"stage": stage, "after_epoch": after_epoch, "adopt": adopt}
    processes = parallel_runs(exp, len(keys), in_process=after_epoch is not None or adopt or not main)
    if processes > 1:
        done = _train_in_processes(trainer, exp, keys, run_args, kwargs, processes, tmp / RUN_CURVES)
    else:
        done = {key: trainer(*run_args(key[0]), live, seed_index=key[1], **kwargs) for key in keys}
    oof_parts, seeds = [], {}
    for fold in exp.dataset.folds:
        targets_k = (fold_targets or {}).get(fold, targets)
        is_valid = masks[fold][1]
        results = [done[fold, seed_index] for seed_index in range(n_seeds)]
        if not main or results[0].predictions is None:
            continue
        preds = np.mean([r.predictions for r in results], axis=0)
        part = frame.loc[is_valid, [splitting.ROW_ID, splitting.FOLD]].reset_index(drop=True)
        oof_parts.append(pd.concat([part, problem.prediction_columns(preds, info)], axis=1))
        if n_seeds > 1:
            scores = [r.score for r in results]
            seeds[f"fold{fold}"] = {
                "seeds": [r.seed for r in results],
                exp.prediction.metric: scores,
                "mean": float(np.mean(scores)),
                "std": float(np.std(scores)),
                "averaged_predictions": float(metric.fn(problem.truth(targets_k[is_valid]), preds)),
            }
            if results[-1].step is not None:  # at the fold's last step, whether its runs trained here or not
                live.step = results[-1].step
            live.log_metric(f"fold{fold}/valid/{exp.prediction.metric}_seed_std", float(np.std(scores)))
    if distributed.active():
        torch.distributed.barrier()  # the others wait for rank 0's last validation
        distributed.shutdown()
    if not main:
        return pd.DataFrame(columns=[splitting.ROW_ID, splitting.FOLD])
    live.end()
    if (tmp / RUN_CURVES).exists():
        _merge_curves(tmp / RUN_CURVES, tmp / "dvclive")
    oof = (
        pd.concat(oof_parts, ignore_index=True)
        if oof_parts
        else pd.DataFrame(columns=[splitting.ROW_ID, splitting.FOLD])
    )
    io.write_frame(oof, tmp / paths.OOF_FILE)
    io.write_json(info, tmp / paths.DATA_INFO_FILE)  # the labels travel with the models (previous_experiment)
    if seeds:
        io.write_json({"metric": exp.prediction.metric, **seeds}, tmp / paths.SEEDS_FILE)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return oof


def parallel_runs(exp: ExperimentBase, runs: int, in_process: bool = False) -> int:
    """How many of `runs` training runs go at once (environment.parallel_folds), each in its own process.

    auto: on the CPU with two or more threads, every run at once up to twice the threads: a small network's
    convolutions do not split well across threads, and the data path and the moving average run on one
    (bench/parallel_folds.py, 3 FSDD folds of 168 steps on this project's 2-core machine: 0.87x the wall
    time of one fold after another with 2 threads, spawning and each process's own decoding included);
    one at a time on a GPU (the runs would share it), under torchrun, and for the hyperparameter search
    (`in_process`: its trials report from inside the run, and Ray places the trials itself)."""
    env = exp.environment
    threads = torch.get_num_threads()
    if runs < 2 or in_process or env.number_of_gpus > 1 or runtime.device(env).type != "cpu":
        return 1
    if env.parallel_folds == "auto":
        return min(runs, 2 * threads) if threads > 1 else 1
    return min(runs, env.parallel_folds)


RUN_CURVES = "dvclive.runs"  # each run's own dvclive folder while runs train at once; merged, then removed


def _start_process(threads: int, share: float, level: int) -> None:
    """A training process of folds trained at once: its share of the threads and of the decode cache."""
    torch.set_num_threads(threads)
    decoded.SHARE = share
    training.PROGRESS_BARS = False
    logging.basicConfig(level=level, format="%(message)s")
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    """End this process when the stage that started it dies (kill -9 leaves a pool's processes running:
    they would go on writing the checkpoints that the rerun of the stage resumes from)."""
    multiprocessing.parent_process().join()
    os._exit(1)


def _train_run(trainer: Callable, settings: dict, args: tuple, kwargs: dict, curves: Path):
    """One run in a training process. The experiment comes as its settings (its pydantic classes are built
    at run time, so they do not pickle) and its problem type is made again from them."""
    exp = config.parse(settings, "the resolved settings")
    live = Live(str(curves), report=None, save_dvc_exp=False, dvcyaml=None)
    try:
        return trainer(exp, problems.of(exp), *args, live, **kwargs)
    finally:
        live.end()


def _train_in_processes(
    trainer: Callable,
    exp: ExperimentBase,
    keys: list,
    run_args: Callable,
    kwargs: dict,
    processes: int,
    curves: Path,
) -> dict:
    """Train each (fold, seed_index) run in a pool of `processes` spawned processes, each run logging its
    curves to its own dvclive folder under `curves`. Each process gets an equal share of the threads, so a
    run's numbers are those of the same run alone with that many threads."""
    threads = max(1, torch.get_num_threads() // processes)
    log.info(
        "training %d runs, %d at a time, %d thread(s) each (environment.parallel_folds)",
        len(keys),
        processes,
        threads,
    )
    settings = exp.model_dump(mode="json")
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-use
    init = (threads, 1 / processes, logging.getLogger().getEffectiveLevel())
    pool = ProcessPoolExecutor(processes, mp_context=context, initializer=_start_process, initargs=init)
    futures = {}
    with _children_ignore_ctrl_c():  # the processes start at the first submits
        for fold, seed_index in keys:
            _exp, _problem, *args = run_args(fold)
            curves_of_run = curves / f"fold{fold:03d}.seed{seed_index:03d}"
            run_kwargs = {**kwargs, "seed_index": seed_index}
            futures[fold, seed_index] = pool.submit(
                _train_run, trainer, settings, args, run_kwargs, curves_of_run
            )
    try:
        return {key: future.result() for key, future in futures.items()}
    except BrokenProcessPool as err:
        raise DataError(
            "a training process died (killed, or out of memory?); train the folds one at a time with "
            "environment.parallel_folds: 1"
        ) from err
    except KeyboardInterrupt:
        # the processes ignore Ctrl-C (see _children_ignore_ctrl_c); ProcessPoolExecutor has no public way
        # to stop a running task before Python 3.14's terminate_workers, so its process table is used
        for process in list(pool._processes.values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _children_ignore_ctrl_c():
    """Processes started inside ignore SIGINT, which they inherit across spawn's exec: Ctrl-C reaches
    the whole process group, and each training process (often still importing torch) printed a
    KeyboardInterrupt traceback of its own above the stage's one line. The stage stops them instead.
    Only the main thread can set a signal handler (a flow may run the stage in a worker thread: there
    Ctrl-C is not the stage's to handle, and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _merge_curves(runs: Path, into: Path) -> None:
    """Each run's dvclive folder under `runs`, in run order, into the stage's, then `runs` removed: the curves
    and images (under the run's own prefix, so nothing collides), its summary metrics and its params, as one
    dvclive run logging them all would have."""
    summary_file, params_file = into / "metrics.json", into / "params.yaml"
    summary = io.read_json(summary_file) if summary_file.exists() else {}
    params = yaml.safe_load(params_file.read_text()) if params_file.exists() else None
    for folder in sorted(runs.iterdir()):
        if (folder / "plots").exists():
            shutil.copytree(folder / "plots", into / "plots", dirs_exist_ok=True)
        if (folder / "metrics.json").exists():  # the summary's step ends as the last run's, as in one run
            _deep_update(summary, io.read_json(folder / "metrics.json"))
        if (folder / "params.yaml").exists():
            params = {**(params or {}), **(yaml.safe_load((folder / "params.yaml").read_text()) or {})}
    into.mkdir(parents=True, exist_ok=True)
    io.write_json(summary, summary_file)
    if params is not None:
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(runs)


def _deep_update(into: dict, other: dict) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def fold_rows(
    exp: ExperimentBase, info: dict, frame: pd.DataFrame, fold: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold `fold`'s (training, validation) row masks of `frame`, after dataset.data_sample."""
    is_valid = (frame[splitting.FOLD] == fold).to_numpy()
    if not (~is_valid).any():
        raise DataError(f"fold {fold} has no training rows")
    trains = ~is_valid | exp.training.train_validation_data  # HT: also train on the validation rows
    seed = info.get("split_seed", exp.environment.seed)  # the split's own (drawn when the setting is -1)
    return splitting.sample_fold(frame, trains, is_valid, exp.dataset, seed)


def model_folders(root: Path) -> list[Path]:
    found = [*root.glob(f"fold*/{paths.MODEL_FILE}"), *root.glob(f"fold*/seed*/{paths.MODEL_FILE}")]
    folders = sorted(p.parent for p in found)
    if not folders:
        raise DataError(f"{root}: no trained fold models; run the train stage first (dvc repro)")
    return folders


def fold_of(folder: Path) -> int:
    """The fold a model folder belongs to: fold{k} or fold{k}/seed{s}."""
    name = folder.name if folder.name.startswith("fold") else folder.parent.name
    return int(name.removeprefix("fold"))


def load_models(
    root: Path, problem: ProblemType, info: dict, fold: int | None = None
) -> tuple[ExperimentBase, list[nn.Module]]:
    """The trained models under `root` (only fold `fold`'s, when given) and the resolved config they share."""
    models, exp = [], None
    folders = [f for f in model_folders(root) if fold is None or fold_of(f) == fold]
    if not folders:
        raise DataError(f"{root}: no trained model of fold {fold}; run the train stage first (dvc repro)")
    for folder in folders:
        exp = config.load(folder / paths.CONFIG_FILE, inherit=False)  # resolved: complete as it is
        model = problem.model(exp, problem.n_outputs(info), problem.target_scale(exp, info))
        model.load_state_dict(load_file(str(folder / paths.MODEL_FILE)))
        models.append(model.eval())
    return exp, models


def predictions_from(oof: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The output columns (the problem type's `output_columns`) of a prediction frame, as float32.

    Named explicitly: a label column called `label` gives a regression output `predicted_label`, the name
    classification gives its decided label, so no pattern over the names can tell them apart."""
    missing = [c for c in columns if c not in oof.columns]
    if missing:
        raise DataError(f"prediction frame has no column(s) {missing}; rerun the train stage")
    return oof[columns].to_numpy(dtype=np.float32)


def beside(frame: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the prediction columns after it; a prediction column whose name the frame already has
    (a user's own `predicted_label`, `prob_a`...) gets `_predicted` appended, so nothing is overwritten."""
    taken = set(map(str, frame.columns))
    renames = {}
    for column in predictions.columns:
        name = column
        while name in taken:
            name += "_predicted"
        taken.add(name)
        renames[column] = name
    return pd.concat([frame.reset_index(drop=True), predictions.rename(columns=renames)], axis=1)


def to_device(models: list[nn.Module], dev: torch.device) -> list[nn.Module]:
    return [m.to(dev) for m in models]
