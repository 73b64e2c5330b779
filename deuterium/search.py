"""Hyperparameter search with Ray Tune: manual, grid, random (with ASHA) and population-based training.

The search is described in `search.yaml`, which dvc.yaml does not read: editing it reruns nothing. Each trial
is the train stage's own code (`fitting.fit_folds`) on the split stage's folds, with the trial's settings set
over params.yaml's; it reports its metric and a checkpoint after every epoch, so ASHA can stop a trial that is
behind and PBT can copy a better trial's weights (exploit) and perturb its settings (explore). The leaderboard
goes to a CSV and a JSON file and to the terminal; `--apply` writes the best trial's settings into params.yaml.

    python -m deuterium.search                       # search.yaml over params.yaml, here or on RAY_ADDRESS
    python -m deuterium.search --apply               # ... and write the best trial's settings to params.yaml
    python -m deuterium.search --address auto        # on the Ray cluster `ray start` made
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deuterium import cli, config, io, paths, previous, problems
from deuterium.data_types.base import DataType
from deuterium.errors import ConfigError, DataError, DeuteriumError

log = logging.getLogger(__name__)

SEARCH_FILE = Path("search.yaml")
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_JSON = "leaderboard.json"
PBT_LOG = "pbt_log.json"
SCORE = "score"  # the key a trial reports its metric under (the metric's own name may clash with Ray's)
DISTRIBUTIONS = ("uniform", "loguniform", "int")
OUT_OF_TIME = "out of time"  # a trial still running when max_runtime ran out
NOT_STARTED = "not started"  # a trial max_runtime left no time for


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EarlyStopping(_Strict):
    """ASHA (asynchronous successive halving): at each rung, trials behind the best 1/reduction_factor stop."""

    enabled: bool = True
    grace_period: int = Field(1, ge=1)  # reports (validations) every trial gets before it may be stopped
    reduction_factor: float = Field(2.0, gt=1)


class PBTSettings(_Strict):
    perturbation_interval: int = Field(1, ge=1)  # reports (validations) between exploit/explore steps
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)  # the bottom fraction copies the top fraction
    resample_probability: float = Field(0.25, ge=0, le=1)  # explore: redraw from the space, else x1.2 / x0.8


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class SearchSettings(_Strict):
    strategy: Literal["manual", "grid", "random", "pbt"] = "random"
    space: dict[str, Any] = Field(
        default_factory=dict
    )  # setting -> list of values | {low, high, distribution}
    trials: list[dict[str, Any]] = Field(default_factory=list)  # manual: each trial's settings
    max_trials: int | None = Field(8, ge=1)  # random, pbt: trials drawn (the population); grid, manual: a cap
    max_runtime: float | None = Field(None, gt=0)  # seconds for the whole search; then running trials stop
    seed: int = 0
    metric: str | None = None  # null: the experiment's prediction.metric
    direction: Literal["maximize", "minimize"] | None = None  # null: the metric's own
    trials_at_once: int = Field(1, ge=1)
    resources_per_trial: Resources = Resources()
    folds: Literal["all"] | list[int] | None = None  # null: the train stage's folds (pbt: the first of them)
    early_stopping: EarlyStopping = EarlyStopping()
    pbt: PBTSettings = PBTSettings()


def load(path: Path = SEARCH_FILE) -> SearchSettings:
    if not path.is_file():
        raise ConfigError(f"{path}: no such search file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of search settings")
    try:
        return SearchSettings.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{path}: {loc}: {msg}") from None


# ---------------------------------------------------------------------------------------------- the space


def set_key(params: dict, key: str, value: Any) -> dict:
    """A copy of params with the dotted `key` set (missing sections are made: the schema fills defaults)."""
    out = copy.deepcopy(params)
    node = out
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    return out


def with_settings(params: dict, settings: dict[str, Any]) -> dict:
    for key, value in settings.items():
        params = set_key(params, key, value)
    return params


class Plan(BaseModel):
    """What the search will run, all checked before the first trial."""

    strategy: str
    keys: list[str]
    metric: str
    mode: Literal["max", "min"]
    folds: list[int]
    epochs: int  # the most epochs a trial may train (ASHA's horizon)
    grid: list[dict[str, Any]] = Field(default_factory=list)  # grid and manual: every trial's settings


def _searchable(params_path: Path, section: str) -> tuple[list[str], list[str]]:
    """The settings a trial may change (those the train stage reads: its dvc.yaml `params:` and the data
    type's section, which reaches it through the settings stage) and those it may not (the split stage's:
    a trial must train on the train stage's folds)."""
    dvc_yaml = params_path.parent / "dvc.yaml"
    if not dvc_yaml.is_file():
        return [""], []
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})

    def keys(stage: str) -> list[str]:
        out = []
        for item in stages.get(stage, {}).get("params", []):
            out += [k for k in item] if isinstance(item, dict) else [item]
        return [str(k) for k in out]

    return [*keys("train"), section], keys("split")


def _under(key: str, prefixes: list[str]) -> bool:
    return any(p == "" or key == p or key.startswith(p + ".") for p in prefixes)


def _check_value(params: dict, key: str, value: Any, source: str) -> None:
    try:
        config.parse(set_key(params, key, value), source)
    except ConfigError as err:
        lines = [line.strip() for line in str(err).splitlines()[1:]]
        mine = [line for line in lines if line.startswith(key + ":")] or lines
        if any("unknown key" in line for line in mine):
            raise ConfigError(
                f"search space: {key}: not a setting of this problem type (unknown key)"
            ) from None
        raise ConfigError(f"search space: {key}: value {value!r} refused: {'; '.join(mine)}") from None


def _check_key(
    params: dict,
    key: str,
    values: list,
    allowed: list[str],
    split_keys: list[str],
    chosen: dict[str, str],
    data: DataType,
) -> None:
    """`chosen`: settings the data type chooses from the training files under these params (key: why);
    `data`: the data type (its unread_settings)."""
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"search space: {key!r}: a setting's dotted name, such as training.learning_rate")
    if _under(key, split_keys):
        raise ConfigError(
            f"search space: {key}: the split stage reads it, so trials would not train on the same folds"
        )
    if key in chosen:
        raise ConfigError(f"search space: {key}: {chosen[key]}, so trials would not differ")
    for value in values:
        _check_value(params, key, value, "params")  # an unknown key fails here first
    if not _under(key, allowed):
        raise ConfigError(
            f"search space: {key}: the train stage does not read it, so trials would not differ"
        )
    for section, why in data.unread_settings.items():
        if _under(key, [section]) and key not in data.read_anyway:
            raise ConfigError(
                f"search space: {key}: the {data.name} data type does not read it ({why}), so trials "
                "would not differ"
            )


def _range(key: str, spec: dict) -> dict:
    unknown = set(spec) - {"low", "high", "distribution"}
    if unknown:
        raise ConfigError(
            f"search space: {key}: unknown key {sorted(unknown)[0]!r} (low, high, distribution)"
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"search space: {key}: a range needs low and high")
    low, high, dist = spec["low"], spec["high"], spec.get("distribution", "uniform")
    if dist not in DISTRIBUTIONS:
        raise ConfigError(
            f"search space: {key}: distribution {dist!r} is not one of {', '.join(DISTRIBUTIONS)}"
        )
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"search space: {key}: {name} must be a number, got {v!r}")
        if dist == "int" and int(v) != v:
            raise ConfigError(f"search space: {key}: an int range needs whole numbers, got {name} {v!r}")
    if low > high:
        raise ConfigError(f"search space: {key}: low {low} is greater than high {high}")
    if dist == "loguniform" and low <= 0:
        raise ConfigError(f"search space: {key}: a loguniform range needs low > 0, got {low}")
    return {"low": low, "high": high, "distribution": dist}


def _normalized_space(search: SearchSettings) -> dict[str, list | dict]:
    out: dict[str, list | dict] = {}
    for key, spec in search.space.items():
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(f"search space: {key}: an empty list of values")
            out[key] = spec
        elif isinstance(spec, dict):
            if "." not in key and not {"low", "high"} & set(spec):  # `training: {learning_rate: [...]}`
                raise ConfigError(
                    f"search space: {key}: a setting's dotted name, such as training.learning_rate: the "
                    "space is flat (`training.learning_rate: [0.001, 0.01]`), not nested"
                )
            if search.strategy == "grid":
                raise ConfigError(f"search space: {key}: a grid takes lists of values, not a range")
            out[key] = _range(key, spec)
        else:
            raise ConfigError(f"search space: {key}: a list of values or a range {{low, high}}, got {spec!r}")
    return out


def plan(search: SearchSettings, params_path: Path) -> Plan:
    """Check the search against params.yaml's schema and the pipeline; raise ConfigError with one line."""
    exp = config.load(params_path)  # params.yaml itself first: its own errors, named as the stages name them
    fixed = problems.of(exp).data.fixed_by_pbt() if search.strategy == "pbt" else []
    varied = [key for key in search.space if key in fixed]
    if varied:
        raise ConfigError(
            f"search space: {', '.join(varied)}: a pbt search may not vary {exp.problem_type}'s network or "
            f"optimizer ({', '.join(fixed)}): a trial continues another's checkpoint; search it with "
            "strategy random or grid"
        )
    params = previous.inherit(yaml.safe_load(params_path.read_text()))
    problem = problems.of(exp)
    if exp.environment.number_of_gpus > 1:
        raise ConfigError(
            "environment.number_of_gpus: a search trial is one process; set it to 1 and give trials GPUs "
            "with resources_per_trial.gpu"
        )
    metrics = problem.metrics()
    metric = search.metric or exp.prediction.metric
    if metric not in metrics:
        raise ConfigError(f"search metric: {metric!r} is not one of {', '.join(metrics)}")
    direction = search.direction or ("maximize" if metrics[metric].greater_is_better else "minimize")
    space = _normalized_space(search)
    allowed, split_keys = _searchable(params_path, type(exp).data_section)
    chosen = problem.data.chosen_keys(exp)
    for key, spec in space.items():
        values = spec if isinstance(spec, list) else [spec["low"], spec["high"]]
        _check_key(params, key, values, allowed, split_keys, chosen, problem.data)
    grid: list[dict[str, Any]] = []
    if search.strategy == "manual":
        if not search.trials:
            raise ConfigError(
                "search trials: manual search needs a list of trials (each a mapping of settings)"
            )
        if search.space:
            raise ConfigError("search space: manual search takes `trials`, not a space")
        for trial in search.trials:
            for key, value in trial.items():
                _check_key(params, key, [value], allowed, split_keys, chosen, problem.data)
            grid.append(dict(trial))
    elif not space:
        raise ConfigError(f"search space: empty; {search.strategy} search needs at least one setting to vary")
    if search.strategy == "grid":
        grid = [dict(zip(space, combo, strict=True)) for combo in itertools.product(*space.values())]
    if grid:
        if search.max_trials is not None and len(grid) > search.max_trials:
            raise ConfigError(
                f"search max_trials: the {search.strategy} search has {len(grid)} trials, more than "
                f"max_trials {search.max_trials}"
            )
        for trial in grid:  # combinations the schema's cross-checks refuse (only a grid lists them all)
            try:
                config.parse(with_settings(params, trial), "params")
            except ConfigError as err:
                detail = "; ".join(line.strip() for line in str(err).splitlines()[1:])
                raise ConfigError(f"search trial {trial}: refused: {detail}") from None
    folds = exp.dataset.folds if search.folds is None else search.folds
    if search.folds == "all":
        folds = list(range(exp.dataset.fold_count))
    bad = [k for k in folds if not 0 <= k < exp.dataset.fold_count]
    if bad:
        raise ConfigError(
            f"search folds: {bad} out of range: the split makes folds 0..{exp.dataset.fold_count - 1}"
        )
    if search.strategy == "pbt" and search.folds is None:
        folds = folds[:1]
    epoch_values = space.get("training.epochs", [exp.training.epochs])
    if isinstance(epoch_values, list):  # `auto` trains at most epochs_auto_max epochs
        epoch_values = [exp.training.epochs_auto_max if v == "auto" else v for v in epoch_values]
    epochs = int(max(epoch_values) if isinstance(epoch_values, list) else epoch_values["high"])
    return Plan(
        strategy=search.strategy,
        keys=list(space) or sorted({k for t in grid for k in t}),
        metric=metric,
        mode="max" if direction == "maximize" else "min",
        folds=list(folds),
        epochs=epochs,
        grid=grid,
    )


# --------------------------------------------------------------------------------------------- a trial


def _trial(trial_config: dict, *, project: str, params: dict, split_dir: str, plan: dict) -> None:
    """One trial, in a Ray worker: the train stage's fit_folds on the plan's folds, reporting every epoch."""
    import tempfile

    import numpy as np
    import pandas as pd
    import torch
    from ray import tune

    from deuterium import evaluation, fitting
    from deuterium.splitting import ROW_ID

    os.chdir(project)  # params.yaml's data paths are relative to the project
    settings = trial_config.get("settings", trial_config)
    # prediction.metric stays the experiment's: it picks the best epoch and stops early, as in the train stage
    exp = config.parse(with_settings(params, {**settings, "dataset.selected_folds": plan["folds"]}), "trial")
    torch.set_num_threads(max(1, int(plan["cpus"])))
    problem = problems.of(exp)
    split = Path(split_dir)
    info = io.read_json(split / paths.DATA_INFO_FILE)
    exp = problem.data.resolve(exp, info)
    folds = io.read_frame(split / paths.FOLDS_FILE)
    targets = problem.encode(folds, exp, info)
    metric = problem.metrics()[plan["metric"]].fn
    truths: dict[int, np.ndarray] = {}  # each fold's validation rows' truth, for the search's metric

    def scored(name: str, predictions: np.ndarray) -> float:
        fold = int(name.split("/")[0].removeprefix("fold"))  # fold{k} or fold{k}/seed{s}
        if fold not in truths:
            truths[fold] = problem.truth(targets[fitting.fold_rows(exp, info, folds, fold)[1]])
        return float(metric(truths[fold], predictions))

    work = Path(tempfile.mkdtemp(prefix="trial-"))
    checkpoints = work / "checkpoints"
    me = tune.get_context().get_trial_id()
    adopt, owner = False, {}
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            shutil.copytree(folder, checkpoints, dirs_exist_ok=True)
        owner = io.read_json(checkpoints / "owner.json") if (checkpoints / "owner.json").is_file() else {}
        adopt = owner.get("trial") != me
        if adopt:  # PBT's exploit: another trial's weights, this trial's (perturbed) settings
            log.info(
                "trial %s: exploit: continuing trial %s's checkpoint with %s",
                me,
                owner.get("trial"),
                settings,
            )
    runs_per_trial = len(plan["folds"]) * exp.environment.number_of_seeds
    # the final score of each fold (and seed) done; kept with the checkpoint, as a restored trial skips them
    finals: dict[str, float] = owner.get("finals", {}) if restored is not None else {}

    last_epoch = None  # of this process's training; None: it trained nothing
    # each run's step of the validation last reported: an epoch that did not validate (evaluation_epochs > 1)
    # reports nothing, rather than the previous validation's score again; kept with the checkpoint
    reported: dict[str, int] = owner.get("reported", {}) if restored is not None else {}
    trained = 0  # epochs (tabular: scoring events) this process trained since its last report

    def report(name: str, state) -> None:
        nonlocal last_epoch, trained
        trained += 1
        finished = state.epoch >= state.epochs or state.stopped  # state.epochs: `auto` resolved
        if state.predictions is None and not finished:
            return  # no validation yet
        if state.predictions is None:
            raise ConfigError(
                "a search trial needs validation rows to score (training.train_validation_data?)"
            )
        if not finished and state.validated_step is not None and reported.get(name) == state.validated_step:
            return  # this epoch did not validate
        reported[name] = state.validated_step
        score = scored(name, state.predictions)
        scores = {**finals, name: score}
        if finished:
            finals[name] = score
        owner_now = {"trial": me, "settings": settings, "finals": finals, "reported": reported}
        io.write_json(owner_now, checkpoints / "owner.json")
        last_epoch = state.epoch
        if finished and len(finals) == runs_per_trial:
            return  # the last report is the out-of-fold one, below
        metrics = {SCORE: float(sum(scores.values()) / len(scores)), "run": name, "epoch": state.epoch}
        metrics |= {"epochs_trained": trained, "completed": False}  # (Ray's own `done` means ended)
        trained = 0
        tune.report(
            metrics,
            checkpoint=tune.Checkpoint.from_directory(str(checkpoints)),
        )

    try:
        oof = fitting.fit_folds(
            exp, problem, info, folds, targets, work / "model", checkpoints, after_epoch=report, adopt=adopt
        )
        if last_epoch is None:  # restored after its last epoch (PBT's exploit at the end): nothing to report,
            return  # or PBT would take it for one more step and exploit it again, on and on
        # the trial's metric is the evaluate stage's: over the pooled out-of-fold predictions of the models
        # the train stage keeps (the best epoch's with save_best_checkpoint), rounded as metrics.json is
        preds = fitting.predictions_from(oof, problem.output_columns(info))
        rows = pd.Series(np.arange(len(folds)), index=folds[ROW_ID]).loc[oof[ROW_ID]].to_numpy()
        weights = problem.row_weights(folds, exp)  # as the evaluate stage weighs them
        w = None if weights is None else weights[rows]
        overall = evaluation.scores(problem, targets[rows], preds, w)
        if plan["metric"] not in overall:
            why = evaluation.why_not(problem, targets[rows], preds, plan["metric"], w)
            raise DataError(f"{plan['metric']} cannot be computed on the out-of-fold rows: {why}")
        metrics = {SCORE: overall[plan["metric"]], "run": "oof", "epoch": last_epoch, "completed": True}
        metrics["epochs_trained"] = trained  # since the last report
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoints)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -------------------------------------------------------------------------------------------- the search


def _domain(spec: list | dict):
    from ray import tune

    if isinstance(spec, list):
        return tune.choice(spec)
    low, high = spec["low"], spec["high"]
    if spec["distribution"] == "int":
        return tune.randint(int(low), int(high) + 1)  # randint excludes its upper bound
    return tune.loguniform(low, high) if spec["distribution"] == "loguniform" else tune.uniform(low, high)


def _clip_to_space(space: dict[str, list | dict]):
    """PBT's explore multiplies by 1.2 or 0.8 and may leave a range: bring it back inside."""

    def explore(cfg: dict) -> dict:
        for key, spec in space.items():
            if isinstance(spec, dict) and key in cfg:
                value = min(max(cfg[key], spec["low"]), spec["high"])
                cfg[key] = int(round(value)) if spec["distribution"] == "int" else value
        return cfg

    return explore


def run(
    search: SearchSettings,
    params_path: Path = Path("params.yaml"),
    split_dir: Path = paths.SPLIT,
    out_dir: Path = paths.SEARCH,
    address: str | None = None,
    num_cpus: int | None = None,
    ray_temp_dir: Path | None = None,
) -> list[dict]:
    """Run the search; write and return the leaderboard (best first)."""
    the_plan = plan(search, params_path)
    if not (split_dir / paths.FOLDS_FILE).is_file():
        raise ConfigError(
            f"{split_dir / paths.FOLDS_FILE}: no folds; run the split stage first (dvc repro split)"
        )
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault(
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"
    )  # per-epoch checkpoints
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    project = params_path.resolve().parent
    params = previous.inherit(yaml.safe_load(params_path.read_text()))
    out_dir = out_dir.resolve()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    space = _normalized_space(search)
    trainable = tune.with_parameters(
        _trial,
        project=str(project),
        params=params,
        split_dir=str(split_dir.resolve()),
        plan=the_plan.model_dump() | {"cpus": search.resources_per_trial.cpu},
    )
    trainable = tune.with_resources(
        trainable, {"cpu": search.resources_per_trial.cpu, "gpu": search.resources_per_trial.gpu}
    )
    num_samples = 1
    search_alg = None
    if the_plan.strategy in ("grid", "manual"):
        param_space = {"settings": tune.grid_search(the_plan.grid)}
    else:
        param_space = {key: _domain(spec) for key, spec in space.items()}
        num_samples = search.max_trials or 8
        # max_concurrent here: Tune ignores max_concurrent_trials beside a generator like this one
        search_alg = BasicVariantGenerator(random_state=search.seed, max_concurrent=search.trials_at_once)
    if the_plan.strategy == "pbt":
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=search.pbt.perturbation_interval,
            # a list: the neighbouring value (or a redraw); a range: x1.2 or x0.8 (or a redraw), kept inside
            hyperparam_mutations={k: v if isinstance(v, list) else _domain(v) for k, v in space.items()},
            quantile_fraction=search.pbt.quantile_fraction,
            resample_probability=search.pbt.resample_probability,
            custom_explore_fn=_clip_to_space(space),
            # every trial waits at each perturbation epoch: a trial copies a checkpoint of that same epoch (the
            # asynchronous kind may copy an earlier one and train epochs again, over and over on ties)
            synch=True,
        )
    elif search.early_stopping.enabled:
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=10**9,  # trials end themselves (the rungs, grace_period x reduction_factor^k, stay)
            grace_period=search.early_stopping.grace_period,
            reduction_factor=search.early_stopping.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    if not ray.is_initialized():
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(
                address=address
            )  # a cluster: `ray start --head` on one node, `ray start --address` on others
        else:
            temp = {"_temp_dir": str(ray_temp_dir)} if ray_temp_dir else {}
            ray.init(num_cpus=num_cpus, include_dashboard=False, **temp)
    recorder = _recorder()
    budget = _budget(search.max_runtime, recorder) if search.max_runtime else None
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=SCORE,
            mode=the_plan.mode,
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=None if search_alg else search.trials_at_once,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="ray",
            storage_path=str(out_dir),
            verbose=1,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if the_plan.strategy == "pbt" else 2),
            stop=budget,  # max_runtime
        ),
    )
    started = time.monotonic()
    random.seed(search.seed)  # PBT's explore draws from Python's random
    # Ctrl-C: Ray Tune's own handler ends the run "gracefully" and returns, and the half-run search was
    # then written as the leaderboard and --apply'd to params.yaml, with exit 0. Without it Ctrl-C is a
    # KeyboardInterrupt here: nothing is written or applied, and cli.run exits 130 (Ray shuts its local
    # instance down at exit).
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    tuner.fit()  # a failed trial is in the recorder, not raised: the search goes on
    recorder.finish()
    planned = the_plan.grid if the_plan.grid else [{}] * num_samples
    rows = leaderboard(recorder.trials, the_plan, planned)
    log.info("search: %d trials in %.0f s", len(rows), time.monotonic() - started)
    if budget is not None and budget.reached:
        count = {status: sum(r["status"] == status for r in rows) for status in (OUT_OF_TIME, NOT_STARTED)}
        log.warning(
            "search: max_runtime %g s reached: %d trial(s) stopped while running (%s), %d %s",
            search.max_runtime,
            count[OUT_OF_TIME],
            OUT_OF_TIME,
            count[NOT_STARTED],
            NOT_STARTED,
        )
    write_leaderboard(rows, the_plan, out_dir)
    if the_plan.strategy == "pbt":
        io.write_json(pbt_events(out_dir / "ray"), out_dir / PBT_LOG)
    return rows


def _budget(seconds: float, recorder):
    """Ray Tune's stopper for time_budget_s, which also marks the trials still going when time runs out."""
    from ray.tune.stopper import TimeoutStopper

    class Budget(TimeoutStopper):
        reached = False

        def stop_all(self) -> bool:
            if not super().stop_all():
                return False
            if not self.reached:
                self.reached = True
                recorder.out_of_time()
            return True

    return Budget(seconds)


def _recorder():
    """A Tune callback on the driver that keeps each trial's last result with the settings that made it (after
    a PBT exploit, Ray's own per-trial result may be the donor's), and the error of a trial that failed."""
    from ray import tune

    class Recorder(tune.Callback):
        def __init__(self):
            self.trials: dict[str, dict] = {}

        def _entry(self, trial) -> dict:
            return self.trials.setdefault(
                trial.trial_id, {"config": dict(trial.config), "result": {}, "error": None}
            )

        def on_trial_start(self, iteration, trials, trial, **info):
            self._entry(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            entry = self._entry(trial)
            entry["config"], entry["result"] = dict(trial.config), dict(result)
            # epochs this trial really trained (PBT jumps; an epoch without validation reports nothing)
            entry["trained"] = entry.get("trained", 0) + result.get("epochs_trained", 1)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._entry(trial)["ended"] = True  # finished, or stopped by ASHA

        def on_trial_error(self, iteration, trials, trial, **info):
            self._entry(trial)["error"] = trial  # its error file is complete once the search ends

        def out_of_time(self) -> None:
            for entry in self.trials.values():
                if not entry.get("ended") and entry["error"] is None:
                    entry["out_of_time"] = True

        def finish(self) -> None:
            for entry in self.trials.values():
                if entry["error"] is not None and not isinstance(entry["error"], str):
                    trial = entry["error"]
                    text = trial.get_error() or (
                        Path(trial.error_file).read_text() if trial.error_file else ""
                    )
                    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
                    entry["error"] = lines[-1] if lines else "failed"

    return Recorder()


def leaderboard(trials: dict[str, dict], the_plan: Plan, planned: list[dict] | None = None) -> list[dict]:
    """One row per trial, best first: finished trials, then those stopped early (by ASHA, or by max_runtime:
    out of time), then failed ones, then the `planned` ones (each trial's settings, {} where drawn) that
    max_runtime left unstarted."""
    rows = []
    for trial_id, entry in trials.items():
        metrics, cfg = entry["result"], entry["config"]
        settings = cfg.get("settings", {k: v for k, v in cfg.items() if k in the_plan.keys})
        if entry["error"]:
            status = "failed"
        elif metrics.get("completed"):
            status = "finished"
        else:
            status = OUT_OF_TIME if entry.get("out_of_time") else "stopped"
        rows.append(
            {
                "trial": trial_id,
                "status": status,
                **{key: settings.get(key) for key in the_plan.keys},
                the_plan.metric: metrics.get(SCORE),
                "epochs": metrics.get("training_iteration", 0),
                "epochs_trained": entry.get("trained", 0),
                "time_s": round(float(metrics.get("time_total_s", 0.0)), 1),
                "error": entry["error"] or "",
                "settings": settings,
            }
        )
    unstarted = list(planned or [])
    if any(unstarted):  # grid and manual: the settings no trial ran
        for row in rows:
            if row["settings"] in unstarted:
                unstarted.remove(row["settings"])
    else:  # random and pbt: draws never made
        unstarted = unstarted[len(trials) :]
    for settings in unstarted:
        rows.append(
            {
                "trial": "",
                "status": NOT_STARTED,
                **{key: settings.get(key) for key in the_plan.keys},
                the_plan.metric: None,
                "epochs": 0,
                "epochs_trained": 0,
                "time_s": 0.0,
                "error": "",
                "settings": settings,
            }
        )
    sign = -1 if the_plan.mode == "max" else 1
    order = {"finished": 0, "stopped": 1, OUT_OF_TIME: 1, "failed": 2, NOT_STARTED: 3}

    def rank(row: dict) -> tuple:
        score = row[the_plan.metric]
        missing = score is None or (isinstance(score, float) and math.isnan(score))
        return (order[row["status"]], missing, sign * (score or 0.0))

    return sorted(rows, key=rank)


def write_leaderboard(rows: list[dict], the_plan: Plan, out_dir: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "settings"} for r in rows])
    io.write_text(frame.to_csv(index=False), out_dir / LEADERBOARD_CSV)
    io.write_json(
        {"metric": the_plan.metric, "mode": the_plan.mode, "strategy": the_plan.strategy, "trials": rows},
        out_dir / LEADERBOARD_JSON,
    )


def show(rows: list[dict], the_plan_metric: str, keys: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))  # a log file: the table whole, not squeezed to 80
    table = Table(title=f"search leaderboard ({the_plan_metric})")
    for column in ["#", "trial", "status", *keys, the_plan_metric, "epochs", "time (s)"]:
        table.add_column(column)
    for i, row in enumerate(rows, 1):
        score = row[the_plan_metric]
        status = row["status"] + (f": {row['error'][:60]}" if row["error"] else "")
        table.add_row(
            str(i),
            row["trial"],
            status,
            *(_fmt(row["settings"].get(k)) for k in keys),
            "" if score is None else f"{score:.4f}",
            str(row["epochs"]),
            f"{row['time_s']:.1f}",
        )
    console.print(table)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def pbt_events(experiment_dir: Path) -> list[dict]:
    """Ray's record of PBT's steps (pbt_global.txt): each exploit (a trial takes a better one's checkpoint)
    and its explore (the settings it continues with)."""
    events = []
    for path in sorted(experiment_dir.glob("pbt_global*.txt")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            target, clone, target_iter, clone_iter, old, new = json.loads(line)
            events.append(
                {
                    "trial": target,
                    "copied_from": clone,
                    "at_iteration": target_iter,
                    "donor_iteration": clone_iter,
                    "old_settings": old,
                    "new_settings": new,
                }
            )
    return events


# ------------------------------------------------------------------------------------------------ --apply


def best(out_dir: Path = paths.SEARCH) -> dict:
    board = io.read_json(out_dir / LEADERBOARD_JSON)
    # finished only: a trial stopped early (ASHA, max_runtime) trained less than its settings ask for, so
    # `dvc repro` of them would not give its metric
    done = [r for r in board["trials"] if r["status"] == "finished" and r[board["metric"]] is not None]
    if not done:
        raise DeuteriumError(f"{out_dir / LEADERBOARD_JSON}: no trial finished; nothing to apply")
    return done[0]


def apply(settings: dict[str, Any], params_path: Path = Path("params.yaml")) -> None:
    """Write `settings` (dotted keys) into params.yaml, keeping its comments and layout (ruamel.yaml)."""
    from ruamel.yaml import YAML

    yml = YAML()
    yml.preserve_quotes = True
    yml.width = 4096  # never wrap a long line the user wrote
    yml.representer.add_representer(  # `null` as written, not ruamel's empty value
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    data = yml.load(params_path.read_text())
    for key, value in settings.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        node[last] = value
    tmp = params_path.with_suffix(".yaml.tmp")
    with tmp.open("w") as f:
        yml.dump(data, f)
    config.load(tmp)  # still a valid experiment
    tmp.replace(params_path)
    log.info("%s: %s", params_path, ", ".join(f"{k}={v}" for k, v in settings.items()))


def main(
    search_file: Path = SEARCH_FILE,
    params_path: Path = Path("params.yaml"),
    split_dir: Path = paths.SPLIT,
    out_dir: Path = paths.SEARCH,
    address: str | None = None,
    num_cpus: int | None = None,
    do_apply: bool = False,
    check_only: bool = False,
) -> list[dict]:
    search = load(search_file)
    the_plan = plan(search, params_path)
    if check_only:
        log.info("%s: %s search over %s: valid", search_file, the_plan.strategy, ", ".join(the_plan.keys))
        return []
    rows = run(search, params_path, split_dir, out_dir, address, num_cpus)
    show(rows, the_plan.metric, the_plan.keys)
    log.info("leaderboard: %s, %s", out_dir / LEADERBOARD_CSV, out_dir / LEADERBOARD_JSON)
    if do_apply:
        chosen = best(out_dir)
        apply(chosen["settings"], params_path)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--search", type=Path, default=SEARCH_FILE, help="the search definition (search.yaml)"
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    parser.add_argument("--out", type=Path, default=paths.SEARCH)
    parser.add_argument(
        "--address", help="a Ray cluster (auto: the one `ray start` made); default RAY_ADDRESS"
    )
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--apply", action="store_true", help="write the best trial's settings to params.yaml")
    parser.add_argument("--apply-only", action="store_true", help="apply the last search's best; run nothing")
    parser.add_argument("--check", action="store_true", help="check search.yaml and stop")
    args = parser.parse_args()
    if args.apply_only:
        cli.run(lambda: apply(best(args.out)["settings"], args.params))
    else:
        cli.run(
            main,
            args.search,
            args.params,
            args.split,
            args.out,
            args.address,
            args.num_cpus,
            args.apply,
            args.check,
        )
