"""Retrain on new data and promote the new model only when it beats the champion.

    python -m flows.retrain run data/incoming                # a folder: train.csv (or .parquet) and its files
    python -m flows.retrain run data/more.csv --margin 0.01  # a dataframe; its files in dataset.data_folder
    python -m flows.retrain run data/incoming --replace      # train on the new rows alone
    python -m flows.retrain serve data/incoming --cron "0 3 * * 1"   # a scheduled Prefect deployment
    python -m flows.retrain champion [--bento]               # the champion record, or its bento tag
    python -m flows.retrain promote-workspace                # make the workspace's model the first champion

A run, step by step:
0. The new rows are APPENDED to params.yaml's training dataframe (rows whose files have the same bytes
   as a training file already there are not added twice; for a data type whose input is the row itself,
   rows whose values, labels aside, are a training row's): the challenger trains on the old rows and
   the new ones, written as artifacts/retrain/<run>/training/train.csv. `--replace` trains on the new rows alone.
1. The validate stage checks the training data (with params.yaml and the new paths). Bad data stops
   the run here: nothing is trained, the champion and the workspace stay as they were. So do new rows
   whose files have the same content (sha256 of the bytes, whatever their names) as a holdout file.
2. The pipeline runs as a DVC experiment in a temporary folder (`dvc exp run --temp`), every stage
   but packaging: the workspace is not touched, training starts afresh, and the experiment keeps its
   params, dvc.lock and metrics in git (`dvc exp show`, `dvc exp apply <name>`).
3. Champion and challenger are scored again, in this run, on the same holdout: the test dataframe,
   known by its content and that of every file it names (a changed holdout stops the run before
   training). Both exported ONNX models (the champion's from its bento) score every holdout row.
   The challenger is promoted only when better by more than `--margin` and the gain holds at
   `--confidence` (default 0.95) by a paired test: McNemar's exact test on the rows each model gets
   right (classification; p < 1 - confidence), a paired bootstrap of the metric's difference
   (regression; its one-sided lower confidence bound > margin).
4. Promotion packages the experiment's exported model as a bento and writes registry/champion.json.
   Every decision, with both figures, the test, its p-value or bound, the confidence and the number of
   rows, is logged, appended to registry/decisions.jsonl and committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from deuterium import assets, config, io, paths, problems, registry
from deuterium.errors import ConfigError, DataError, DeuteriumError
from deuterium.registry import Champion, Decision, PairedTest, Score
from deuterium.settings import ExperimentBase
from flows import commands
from flows.pipeline import metrics_files, stage_order

PARAMS_FILE = "params.yaml"  # DVC's default params file, the one dvc.yaml's stages read
PACKAGE_STAGE = "package"  # run on promotion only, on the winner's export
DATAFRAME_NAMES = ("train.csv", "train.parquet", "train.tsv")  # looked for in a new-data folder
WORK = paths.ARTIFACTS / "retrain"  # per run: the params and the validation report of the new data
# Appended runs: the old rows and the new, in WORK / <run> / TRAINING, a folder because `dvc exp run -C`
# copies a file only into a folder that exists in the experiment, and copies a folder whole.
TRAINING, TRAIN_FILE = "training", "train.csv"
SCORING_BATCH = 256  # holdout files decoded at once when champion and challenger are scored
DEPLOYMENT = "deuterium-retrain"
ARTIFACT_KEY = "retrain-decision"


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside a flow, the module's outside one (a helper called on its own)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _git_bytes(project: Path, *args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=project, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)}: {(done.stderr or done.stdout).decode(errors='replace').strip()}"
        )
    return done.stdout


def _git(project: Path, *args: str) -> str:
    return _git_bytes(project, *args).decode().strip()


def _path(project: Path, path: Path | str) -> Path:
    return Path(path) if Path(path).is_absolute() else project / path


def _shown(project: Path, path: Path) -> str:
    """A path as params.yaml should hold it: relative to the project when inside it."""
    try:
        return _path(project, path).resolve().relative_to(project).as_posix()
    except ValueError:
        return str(_path(project, path).resolve())


def data_settings(project: Path, new_data: Path, data_folder: Path | None, dataset: dict) -> dict[str, str]:
    """The dataset settings that point the pipeline at the new data.

    `dataset` is params.yaml's section as it stands. The holdout keeps reading its files where it did.
    """
    path = _path(project, new_data)
    if path.is_dir():
        found = [path / n for n in DATAFRAME_NAMES if (path / n).is_file()]
        if not found:
            raise DataError(f"{new_data}: a new-data folder needs one of {', '.join(DATAFRAME_NAMES)}")
        dataframe, folder = found[0], data_folder or path
    elif path.is_file():
        dataframe, folder = path, data_folder
    else:
        raise DataError(f"{new_data}: no such dataframe file or data folder")
    settings = {"dataset.train_dataframe": _shown(project, dataframe)}
    if folder is not None:
        if not _path(project, folder).is_dir():
            raise DataError(f"{folder}: no such data folder")
        settings["dataset.data_folder"] = _shown(project, folder)
        if dataset.get("test_dataframe") and not dataset.get("data_folder_test"):
            settings["dataset.data_folder_test"] = str(dataset["data_folder"])  # the same holdout, same files
    return settings


def _parse_setting(item: str) -> tuple[list[str], object]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or ":" in key:
        raise ConfigError(f"set_params: expected key.path=value (in {PARAMS_FILE}), got {item!r}")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_settings(params: dict, settings: Sequence[str]) -> dict:
    """params with `key.path=value` settings applied, the value read as YAML (as `dvc exp run -S` does)."""
    for item in settings:
        keys, value = _parse_setting(item)
        node = params
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"set_params: {item!r}: {key!r} is not a section of {PARAMS_FILE}")
        node[keys[-1]] = value
    return params


def load_experiment(project: Path, params: dict) -> ExperimentBase:
    """params (a dict, settings applied) as the stages will read them, from the project folder."""
    with tempfile.TemporaryDirectory(prefix="deuterium-params-") as tmp:
        (Path(tmp) / PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
        cwd = Path.cwd()
        os.chdir(project)  # previous_experiment, like every path in params.yaml, is relative to the project
        try:
            return config.load(Path(tmp) / PARAMS_FILE)
        finally:
            os.chdir(cwd)


def file_hashes(folder: Path, names: Sequence[object]) -> dict[str, str]:
    """name -> sha256 of the file's bytes, for the names of files that exist (validation reports the others)."""
    hashes = {}
    for name in names:
        try:
            path = assets.resolve(folder, name)
        except DataError:
            continue
        if path.is_file():
            hashes[str(name)] = registry.sha256(path)
    return hashes


def row_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, str]:
    """ "row N" -> sha256 of the row's values in `columns` (missing: null; 3 and 3.0 alike): a row's content,
    for a data type whose input is the row itself, as file_hashes is a file's."""

    def plain(value: object) -> object:
        if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
            return None
        if isinstance(value, bool | np.bool_):
            return bool(value)
        return float(value) if isinstance(value, int | float | np.number) else str(value)

    rows = frame.reindex(columns=list(columns)).astype(object).itertuples(index=False)
    return {
        f"row {i}": hashlib.sha256(json.dumps([plain(v) for v in row]).encode()).hexdigest()
        for i, row in enumerate(rows, start=1)
    }


def input_columns(project: Path, exp: ExperimentBase) -> list[str]:
    """What a row's content is, for a data type without files: the holdout's columns that the project's
    training dataframe (params.yaml's) also has, the labels with them (a copied row carries its label).
    The same columns on every side, so a new row and a holdout or training row compare; a holdout column
    that no training row has (a note, an id of the test set) is no input of the model, and a test row
    copied without it is the same row."""
    _, frame, _ = holdout_files(project, exp)
    project_exp = load_experiment(project, yaml.safe_load((project / PARAMS_FILE).read_text()))
    trained = set(io.read_frame(_path(project, project_exp.dataset.train_dataframe)).columns)
    return [c for c in frame.columns if c in trained]


def input_hashes(
    project: Path, exp: ExperimentBase, frame: pd.DataFrame, folder: Path
) -> tuple[dict[str, str], str]:
    """The rows' inputs as name -> sha256 and what they are ("file" or "row"): the bytes of the files
    they name, or (a data type whose input is the row) their values."""
    column = problems.of(exp).data.column(exp)
    if column:
        return file_hashes(folder, frame[column]), "file"
    return row_hashes(frame, input_columns(project, exp)), "row"


def append_rows(
    old: pd.DataFrame, old_folder: Path, new: pd.DataFrame, new_folder: Path, column: str, required: list[str]
) -> tuple[pd.DataFrame, Path]:
    """The old training rows and then the new, with their files named from one data folder (the folders'
    common parent); returns the frame and that folder. `required`: columns the new rows must have."""
    missing = [c for c in required if c not in new.columns]
    if missing:
        raise DataError(
            f"the new data lacks column(s) {missing} of the training dataframe; appending needs "
            f"{required} (or train on the new rows alone with --replace)"
        )
    if not column:  # the rows are the input: they name no files to find from one folder
        return pd.concat([old, new], ignore_index=True), old_folder
    root = Path(os.path.commonpath([old_folder, new_folder]))

    def named_from_root(frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
        prefix = folder.relative_to(root)
        return frame.assign(**{column: [(prefix / str(n)).as_posix() for n in frame[column]]})

    return pd.concat(
        [named_from_root(old, old_folder), named_from_root(new, new_folder)], ignore_index=True
    ), root


def _say_new_classes(project: Path, exp: ExperimentBase, new: pd.DataFrame) -> None:
    """Warn of classes in the new rows that the holdout has no row of: a challenger may learn them, but
    the comparison on the holdout cannot see whether it predicts them well (single-label classification)."""
    problem = problems.of(exp)
    label = exp.dataset.label_columns[0]
    if problem.task.name != "classification" or len(exp.dataset.label_columns) != 1 or label not in new:
        return
    _, holdout, _ = holdout_files(project, exp)
    if label not in holdout:
        return
    unmeasured = sorted({str(v) for v in new[label].dropna()} - {str(v) for v in holdout[label].dropna()})
    if unmeasured:
        _logger().warning(
            "the new rows hold class(es) %s that no holdout row has: the challenger is trained on them, but "
            "the comparison on %s cannot tell how well it predicts them; add rows of them to the holdout",
            unmeasured[:10],
            exp.dataset.test_dataframe,
        )


def training_data(
    project: Path, params: dict, new: dict[str, str], replace: bool, work: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """The dataset settings the challenger trains with, and the new rows' files (name -> sha256).

    `new`: data_settings' settings for the new rows alone. Unless `replace`, the old training rows and
    the new ones not already there (by the bytes of their files) are written to `work`/training/train.csv.
    """
    log = _logger()
    exp_new = load_experiment(project, apply_settings(yaml.safe_load(yaml.safe_dump(params)), _items(new)))
    work.mkdir(parents=True, exist_ok=True)
    problem = problems.of(exp_new)
    column = problem.data.column(exp_new)
    new_frame = problem.read_frame(_path(project, new["dataset.train_dataframe"]))
    if column and column not in new_frame.columns:
        raise DataError(f"{new['dataset.train_dataframe']}: no column {column!r} naming the files")
    new_folder = _path(project, exp_new.dataset.data_folder).resolve()
    new_files, noun = input_hashes(project, exp_new, new_frame, new_folder)
    _say_new_classes(project, exp_new, new_frame)
    if replace:  # the new dataframe as it is, into `work` too: experiment_copies copies that folder
        source = _path(project, new["dataset.train_dataframe"])
        copied = work / TRAINING / source.name
        copied.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copied)
        log.info("training on the %d new rows alone (%s)", len(new_frame), copied)
        return {**new, "dataset.train_dataframe": _shown(project, copied)}, new_files

    exp = load_experiment(project, params)
    old_frame = problems.of(exp).read_frame(_path(project, exp.dataset.train_dataframe))
    old_folder = _path(project, exp.dataset.data_folder).resolve()
    old = set(input_hashes(project, exp, old_frame, old_folder)[0].values())
    if column:
        known = new_frame[column].astype(str).map(lambda n: new_files.get(n) in old)
    else:  # a row is no file: the same values twice are two observations (H2O-3 keeps both)
        known = pd.Series(False, index=new_frame.index)
    if known.any():
        log.info(
            "%d new row(s) are already in the training data (the same %s content): not added twice",
            known.sum(),
            noun,
        )
    # rows without files: every column the old rows have (the model's inputs are chosen from them)
    required = [column, *exp.dataset.label_columns] if column else list(old_frame.columns)
    frame, root = append_rows(
        old_frame, old_folder, new_frame[~known.to_numpy()], new_folder, column, required
    )
    write_frame_csv(frame, work / TRAINING / TRAIN_FILE)
    log.info(
        "training on %d old and %d new rows (%s)",
        len(old_frame),
        len(frame) - len(old_frame),
        work / TRAINING / TRAIN_FILE,
    )
    settings = dict(new)
    settings["dataset.train_dataframe"] = _shown(project, work / TRAINING / TRAIN_FILE)
    settings["dataset.data_folder"] = _shown(project, root)
    if exp.dataset.test_dataframe and not exp.dataset.data_folder_test:
        settings["dataset.data_folder_test"] = _shown(project, old_folder)  # the same holdout, same files
    return settings, new_files if not column else {n: h for n, h in new_files.items() if h not in old}


def experiment_reads(
    project: Path, params: dict, new: dict[str, str], data: dict[str, str], replace: bool
) -> list[Path]:
    """The data paths the challenger's experiment reads: its training dataframe (`data`: in `work`), the
    old rows' folder and the new rows' (`new`; not the folder above both that an appended dataframe
    names its files from), the holdout and params.yaml's other dataframes."""
    final = load_experiment(project, apply_settings(yaml.safe_load(yaml.safe_dump(params)), _items(data)))
    ds = final.dataset
    folders = [ds.data_folder] if replace else [load_experiment(project, params).dataset.data_folder]
    if not replace and "dataset.data_folder" in new:
        folders.append(Path(new["dataset.data_folder"]))
    found = [ds.train_dataframe, ds.test_dataframe, ds.validation_dataframe, ds.unlabeled_dataframe]
    if ds.test_dataframe is not None:
        found.append(ds.test_data_folder)
    return [_path(project, p) for p in [*found, *folders] if p is not None]


def experiment_copies(project: Path, reads: Sequence[Path]) -> list[str]:
    """What `dvc exp run --temp -C` copies into the temporary experiment: of the paths it reads, those
    that neither git nor DVC brings there (untracked files are not in it, treeverse/dvc#8854).

    A path git tracks is there already, with the workspace's uncommitted changes (DVC stashes them into
    the experiment), and copying it over failed: "Unable to copy ... File exists". A DVC-tracked path
    (a .dvc file's or a stage's output) is checked out or made there. A folder of which git has some
    files and not others could be neither copied nor left: that is an error saying what to do."""
    copies, dvc_outputs = [], _dvc_outputs(project)
    for path in dict.fromkeys(p.resolve() for p in reads):
        if not path.is_relative_to(project) or not path.exists():
            continue  # outside the project: read where it is; missing: validation says so
        shown = path.relative_to(project).as_posix()
        if any(path.is_relative_to(out) for out in dvc_outputs):  # DVC checks it out or makes it
            continue
        in_git = _in_git(project, path)
        if not in_git:
            # the topmost folder git has nothing of: DVC copies into a folder the experiment has
            while path.parent != project and not _in_git(project, path.parent):
                path = path.parent
            copies.append(path.relative_to(project).as_posix())
            continue
        on_disk = {f.relative_to(project).as_posix() for f in _files(path)}
        if untracked := sorted(on_disk - in_git):
            raise DataError(
                f"{shown}: git tracks {len(on_disk & in_git)} of its files but not {len(untracked)} "
                f"(such as {', '.join(untracked[:3])}), so the experiment, a copy of the repository, "
                f"would miss them: `git add {shown}` and commit, or track the folder with `dvc add {shown}`"
            )
    copies = list(dict.fromkeys(copies))
    return [c for c in copies if not any(Path(c).is_relative_to(o) and c != o for o in copies)]


def _in_git(project: Path, path: Path) -> set[str]:
    """The files git tracks at or under `path`, relative to the project."""
    listed = _git_bytes(project, "ls-files", "-z", "--", path.relative_to(project).as_posix())
    return set(listed.decode().split("\0")) - {""}


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]


def _dvc_outputs(project: Path) -> list[Path]:
    """The outputs of the project's .dvc files and dvc.yaml stages, from DVC's own index (templated,
    foreach and nested dvc.yaml stages included, as `dvc exp run` sees them)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return [Path(out.fs_path).resolve() for stage in repo.index.stages for out in stage.outs]


def write_frame_csv(frame: pd.DataFrame, path: Path) -> None:
    io.write_text(frame.to_csv(index=False), path)


def _items(settings: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in settings.items()]


def holdout_files(project: Path, exp: ExperimentBase) -> tuple[Path, pd.DataFrame, list[Path]]:
    """The test dataframe's file, its rows and the files they name."""
    if not exp.dataset.test_dataframe:
        raise ConfigError(
            "dataset.test_dataframe is not set: champion and challenger are compared on the test dataframe, "
            "the one holdout that new training data does not change"
        )
    path = _path(project, exp.dataset.test_dataframe)
    if not path.is_file():
        raise registry.RegistryError(f"{exp.dataset.test_dataframe}: the holdout dataframe is missing")
    problem = problems.of(exp)
    frame = problem.read_frame(path)
    return path, frame, problem.files(frame, exp, _path(project, exp.dataset.test_data_folder).resolve())


def holdout_of(project: Path, exp: ExperimentBase) -> registry.Holdout:
    path, _, files = holdout_files(project, exp)
    if not problems.of(exp).data.column(exp):
        files = []  # the rows are the input: the dataframe's bytes are all its content
    return registry.fingerprint(path, _shown(project, path), files)


@task(cache_policy=NO_CACHE)
def check_holdout_untouched(
    project: Path, params: dict, exp: ExperimentBase, new_files: dict[str, str], where: str
) -> None:
    """New training rows whose files have the bytes of a holdout file stop the run before training.

    Without files, a new row whose values (labels too) are a holdout row's stops it only when they are
    that row's alone: not another holdout row's and no row's of the project's training dataframe. A table
    of a few discrete columns repeats its rows by chance (3 levels of 2 columns and 2 classes make 18
    distinct rows), and every new row matched some holdout row: the run was refused for rows that were
    no copy. A copied holdout row of measured values matches that row only. The training dataframe is the
    one `params` (params.yaml with the run's --set) names, as in training_data."""
    _, frame, _ = holdout_files(project, exp)
    folder = _path(project, exp.dataset.test_data_folder).resolve()
    holdout, noun = input_hashes(project, exp, frame, folder)
    if noun == "row":
        seen = Counter(holdout.values())
        project_exp = load_experiment(project, params)
        old = problems.of(project_exp).read_frame(_path(project, project_exp.dataset.train_dataframe))
        seen.update(row_hashes(old, input_columns(project, exp)).values())
        holdout = {name: h for name, h in holdout.items() if seen[h] == 1}
    registry.check_no_overlap(new_files, holdout, where, noun)


@task(cache_policy=NO_CACHE)
def validate_new_data(project: Path, params: dict, work: Path) -> Path:
    """The validate stage over params.yaml with the new data's settings; its error stops the run."""
    work.mkdir(parents=True, exist_ok=True)
    params_file = work / PARAMS_FILE
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "stages.validate",
        "--params",
        str(params_file),
        "--out",
        str(work / "validate"),
        "--rows-only",  # new rows may hold some classes only; they add to the training rows
    ]
    try:
        commands.run(cmd, project, "validating the new data", get_run_logger())
    except commands.CommandFailed as err:
        raise DataError(f"validation stopped the run, nothing was trained: {err}") from None
    return work / "validate"


@task(
    task_run_name="dvc exp run {name}", cache_policy=NO_CACHE, retry_condition_fn=commands.retry_if_transient
)
def run_experiment(
    project: Path, name: str, settings: list[str], copies: list[str], targets: list[str]
) -> str:
    """`dvc exp run --temp`; returns the experiment's commit."""
    baseline = _git(project, "rev-parse", "HEAD")
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "--name", name]
    cmd += [arg for s in settings for arg in ("-S", s)] + [arg for c in copies for arg in ("-C", c)] + targets
    commands.run(cmd, project, f"experiment {name}", get_run_logger())
    return _git(project, "rev-parse", f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}")


def _metrics_file(project: Path) -> Path:
    files = metrics_files(project)
    if not files:
        raise ConfigError("dvc.yaml declares no metrics file; retrain compares the evaluate stage's metrics")
    return files[0]


def check_experiments_keep_metrics(project: Path) -> Path:
    """Fail before any work if git ignores the metrics file: an experiment would then lose its metrics."""
    path = _metrics_file(project)
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path.as_posix()], cwd=project)
    if ignored.returncode == 0:
        raise ConfigError(
            f"git ignores {path}, so DVC experiments cannot keep it (DVC commits a `cache: false` metrics "
            f"file with each experiment). Remove {path} from .gitignore and commit it"
        )
    return path


@task(cache_policy=NO_CACHE)
def score_challenger(project: Path, rev: str, holdout: registry.Holdout) -> Score:
    """The evaluate stage's figure (and metric) for the challenger, from the experiment's metrics file."""
    path = _metrics_file(project)
    try:
        metrics = json.loads(_git(project, "show", f"{rev}:{path.as_posix()}"))
    except RuntimeError:
        raise registry.RegistryError(f"{path} is not in the experiment's commit {rev[:8]}") from None
    return registry.score_from_metrics(metrics, holdout, f"{path} of {rev[:8]}")


def champion_model(project: Path, champion: Champion, dest: Path) -> Path:
    """The champion's exported model folder: its bento's model in the BentoML store, else its commit's export."""
    log = get_run_logger()
    if champion.bento:
        import bentoml
        from bentoml.exceptions import NotFound

        try:
            info = bentoml.get(champion.bento).info
            # stages/package labels the bento with its model's tag (a BentoModel on the service class)
            tag = info.labels.get("model") or info.models[0].tag
            return Path(bentoml.models.get(tag).path)
        except (NotFound, IndexError) as err:
            log.warning("the champion's bento %s: %s; trying its commit's export", champion.bento, err)
    if champion.rev:
        from dvc.api import DVCFileSystem

        try:
            DVCFileSystem(str(project), rev=champion.rev).get(
                paths.EXPORT.as_posix(), str(dest), recursive=True
            )
            return dest
        except Exception as err:  # dvc raises many kinds for a missing output or cache
            log.warning("the champion's export at %s: %s", champion.rev[:8], err)
    raise registry.RegistryError(
        f"the champion ({champion.experiment or champion.source}) cannot be scored again: neither its bento "
        f"{champion.bento} nor {paths.EXPORT} at its commit {(champion.rev or '-')[:8]} is available"
    )


def model_outputs(model_dir: Path, files: Sequence[Path]) -> tuple[np.ndarray, dict]:
    """The exported model's outputs for the files (probabilities or values, one row each), through the
    torch-free ONNX scorer, and the label info of its preprocessing.json."""
    from deuterium.scoring import Scorer

    scorer = Scorer(model_dir)
    pre, rows = scorer.pre, []
    for start in range(0, len(files), SCORING_BATCH):
        names = files[start : start + SCORING_BATCH]
        batch = [scorer.load(f, str(f)) for f in names]
        for name, out in zip(names, scorer.predict(batch), strict=True):
            if "error" in out:
                raise DataError(f"{name}: {out['error']}")
            if pre.is_classification:
                rows.append([out["probabilities"][c] for c in pre.labels])
            else:
                rows.append([out["predictions"][t] for t in pre.target_names])
    info = {"target_names": pre.target_names}
    if pre.is_classification:
        info |= {"labels": pre.labels, "multi_label": pre.multi_label}
    return np.asarray(rows, dtype=np.float64).reshape(len(files), -1), info


def rows_right(frame: pd.DataFrame, outputs: np.ndarray, info: dict) -> np.ndarray:
    """Which rows a classifier gets right: its label (or, multi-label, its whole set of labels) is the truth."""
    labels = np.asarray(info["labels"])
    if info.get("multi_label"):
        truth = frame[list(labels)].apply(pd.to_numeric, errors="coerce").to_numpy() >= 0.5
        return ((outputs >= 0.5) == truth).all(axis=1)
    return labels[outputs.argmax(axis=1)] == frame[info["target_names"][0]].astype(str).to_numpy()


def paired_comparison(
    exp: ExperimentBase,
    frame: pd.DataFrame,
    champion: tuple[np.ndarray, dict],
    challenger: tuple[np.ndarray, dict],
    confidence: float,
) -> tuple[float, float, PairedTest]:
    """Both models' figures on the same holdout rows and the paired test: (champion, challenger, test)."""
    problem = problems.of(exp)
    metric = problem.metrics()[exp.prediction.metric]

    def figure(outputs: np.ndarray, info: dict) -> float:
        return float(metric.fn(problem.truth(problem.encode(frame, exp, info)), outputs))

    values = figure(*champion), figure(*challenger)
    if problem.task.label_kind == "categorical":
        test = registry.mcnemar(rows_right(frame, *champion), rows_right(frame, *challenger), confidence)
    else:
        truth = problem.truth(problem.encode(frame, exp, challenger[1]))
        test = registry.paired_bootstrap(
            metric.fn, truth, champion[0], challenger[0], metric.greater_is_better, confidence
        )
    return *values, test


@task(cache_policy=NO_CACHE)
def score_both(
    project: Path, exp: ExperimentBase, champion: Champion, rev: str, confidence: float
) -> tuple[float, float, PairedTest]:
    """Score the champion and the challenger's exported models again, on the same holdout rows."""
    from dvc.api import DVCFileSystem

    _, frame, files = holdout_files(project, exp)
    with tempfile.TemporaryDirectory(prefix="deuterium-compare-") as tmp:
        export = Path(tmp) / "challenger"
        DVCFileSystem(str(project), rev=rev).get(paths.EXPORT.as_posix(), str(export), recursive=True)
        champion_dir = champion_model(project, champion, Path(tmp) / "champion")
        return paired_comparison(
            exp, frame, model_outputs(champion_dir, files), model_outputs(export, files), confidence
        )


@task(cache_policy=NO_CACHE)
def package_challenger(project: Path, rev: str, name: str) -> str | None:
    """The package stage's work for the winner: its exported model into the BentoML store, built into a bento."""
    log = get_run_logger()
    if PACKAGE_STAGE not in stage_order(project):
        log.warning("dvc.yaml has no %r stage: the champion gets no bento", PACKAGE_STAGE)
        return None
    from dvc.api import DVCFileSystem

    with tempfile.TemporaryDirectory(prefix="deuterium-package-") as tmp:
        export, out = Path(tmp) / "export", Path(tmp) / "package"
        DVCFileSystem(str(project), rev=rev).get(paths.EXPORT.as_posix(), str(export), recursive=True)
        cmd = [sys.executable, "-m", "stages.package", "--model-dir", str(export), "--out", str(out)]
        commands.run(cmd, project, f"packaging {name}", log)
        return (out / paths.BENTO_TAG_FILE).read_text().strip()


def publish(
    project: Path, registry_file: Path, decision: Decision, champion: Champion | None, commit: bool
) -> str | None:
    """Write the new champion (if any) and append the decision; commit both. Returns why a commit failed."""
    if champion is not None:
        registry.save(champion, registry_file)
    files = ([registry_file] if champion is not None else []) + [registry.record(decision, registry_file)]
    if not commit:
        return None
    names = [os.path.relpath(f, project) for f in files]
    try:
        _git(project, "add", "--", *names)
        _git(project, "commit", "-q", "-m", f"retrain: {decision.line()}", "--", *names)
    except RuntimeError as err:
        return f"{err}; commit {' '.join(names)} by hand"
    return None


def decision_markdown(decision: Decision, champion: Champion | None, challenger: Champion | Score) -> str:
    def row(who: str, value: float | None, record: object) -> str:
        shown = f"{value:.6g}" if value is not None else "-"
        exp = getattr(record, "experiment", None) or "-"
        bento = getattr(record, "bento", None) or "-"
        return f"| {who} | {shown} | {exp} | {bento} |"

    return "\n".join(
        [
            f"## {'Promoted' if decision.promote else 'Kept the champion'}",
            "",
            f"{decision.reason} ({decision.metric}, {'higher' if decision.greater_is_better else 'lower'} is "
            f"better, margin {decision.margin:g}, holdout {challenger.holdout.dataframe})",
            "",
            f"| | {decision.metric} | experiment | bento |",
            "|---|---|---|---|",
            row("challenger", decision.challenger, challenger),
            row("champion before", decision.champion, champion),
        ]
        + (
            [
                "",
                f"Both scored in this run on the same {decision.n} holdout rows; {decision.test}: "
                + (
                    f"p = {decision.p_value:.4g}"
                    if decision.p_value is not None
                    else f"lower bound of the gain {decision.bound:.6g}"
                )
                + f" at confidence {decision.confidence:g}.",
            ]
            if decision.test
            else []
        )
    )


@flow(name="retrain")
def retrain(
    new_data: Path,
    project: Path = Path("."),
    data_folder: Path | None = None,
    margin: float = 0.0,
    set_params: list[str] | None = None,
    registry_file: Path = registry.CHAMPION_FILE,
    retries: int = 1,
    retry_delay_seconds: float = 60.0,
    commit: bool = True,
    replace: bool = False,
    confidence: float = 0.95,
) -> dict:
    """Validate `new_data`, train on it as a DVC experiment, promote the result if it beats the champion.

    new_data: a dataframe file (its files in dataset.data_folder, or in `data_folder`), or a folder
    holding train.csv / train.parquet and the files it names. Its rows are appended to the training
    dataframe (rows whose files are already there, by their bytes, are not added twice); `replace`
    trains on them alone. New rows whose files have the bytes of a holdout file stop the run.
    margin: how much better the challenger must be, in the metric's units. confidence: at which a
    paired test on the holdout (McNemar's exact test for classification, a paired bootstrap for
    regression) must find the gain. set_params: more `key.path=value` settings for the experiment.
    """
    log = get_run_logger()
    project = project.resolve()
    registry_file = registry_file if registry_file.is_absolute() else project / registry_file
    champion = registry.load(registry_file)  # an unreadable registry stops the run before any work
    log.info(
        "champion: %s",
        f"{champion.metric} {champion.value:.6g} ({champion.experiment or champion.source}, bento {champion.bento})"
        if champion
        else "none yet",
    )
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1, got {confidence}")
    name = f"retrain-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    work = project / WORK / name
    params = yaml.safe_load((project / PARAMS_FILE).read_text()) or {}
    params = apply_settings(params, list(set_params or []))
    new = data_settings(project, new_data, data_folder, params.get("dataset") or {})
    check_experiments_keep_metrics(project)
    with_new = apply_settings(yaml.safe_load(yaml.safe_dump(params)), _items(new))
    exp = load_experiment(project, with_new)
    holdout = holdout_of(project, exp)
    if champion is not None:  # a changed holdout or metric would waste the training: stop now
        registry.check_comparable(champion, exp.prediction.metric, holdout)
    validate_new_data(project, with_new, work)  # the new rows as given, so errors name their file and row
    data, new_files = training_data(project, params, new, replace, work)
    check_holdout_untouched(project, params, exp, new_files, str(new_data))
    copies = experiment_copies(project, experiment_reads(project, params, new, data, replace))
    if copies:
        log.info("copied into the experiment, as neither git nor DVC tracks them: %s", ", ".join(copies))
    settings = _items(data) + list(set_params or [])

    stages = stage_order(project)
    targets = [s for s in stages if s != PACKAGE_STAGE] if PACKAGE_STAGE in stages else []
    experiment = run_experiment.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(retry_delay_seconds) if retries else 0
    )
    rev = experiment(project, name, settings, copies, targets)
    score = score_challenger(project, rev, holdout)
    paired = None
    if champion is not None:
        champion_value, challenger_value, test = score_both(project, exp, champion, rev, confidence)
        log.info(
            "scored again on %d holdout rows: challenger %s %.6g (evaluate said %.6g), champion %.6g",
            test.n,
            score.metric,
            challenger_value,
            score.value,
            champion_value,
        )
        score, paired = score.model_copy(update={"value": challenger_value}), (champion_value, test)
    decision = registry.decide(champion, score, margin, name, paired)
    log.info("%s (%s)", decision.line(), name)

    challenger: Champion | Score = score
    if decision.promote:
        challenger = Champion(
            **score.model_dump(),
            source="retrain",
            experiment=name,
            rev=rev,
            bento=package_challenger(project, rev, name),
            train_dataframe=data[
                "dataset.train_dataframe"
            ],  # appended: artifacts/retrain/<run>/training/train.csv
            data_folder=data.get("dataset.data_folder"),
            promoted_at=datetime.now(UTC),
            flow_run=flow_run.get_name(),
        )
        log.info("new champion %s, bento %s", name, challenger.bento)
    failed = publish(project, registry_file, decision, challenger if decision.promote else None, commit)
    if failed:
        log.warning("the registry is written but not committed: %s", failed)
    create_markdown_artifact(
        decision_markdown(decision, champion, challenger), key=ARTIFACT_KEY, description=f"retrain {name}"
    )
    return decision.model_dump(mode="json")


def promote_workspace(
    project: Path, registry_file: Path, force: bool = False, commit: bool = True
) -> Champion:
    """Make the workspace's evaluated (and packaged) model the champion: the start before any retrain."""
    project = project.resolve()
    registry_file = registry_file if registry_file.is_absolute() else project / registry_file
    current = registry.load(registry_file)
    if current is not None and not force:
        raise registry.RegistryError(
            f"{registry_file.relative_to(project)} already names a champion ({current.experiment or current.source}, "
            f"{current.metric} {current.value:.6g}); --force replaces it"
        )
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--quiet"], cwd=project, env=commands.command_env()
    )
    if status.returncode != 0:
        raise registry.RegistryError(
            "the pipeline is not up to date (see `dvc status`): run `dvc repro` first"
        )
    path = _metrics_file(project)
    if not (project / path).is_file():
        raise registry.RegistryError(f"{path}: missing; run `dvc repro` first")
    params = yaml.safe_load((project / PARAMS_FILE).read_text()) or {}
    holdout = holdout_of(project, load_experiment(project, params))
    score = registry.score_from_metrics(json.loads((project / path).read_text()), holdout, str(path))
    bento_file = project / paths.PACKAGE / paths.BENTO_TAG_FILE
    from dvc.api import params_show

    dataset = params_show(repo=str(project)).get("dataset", {})
    champion = Champion(
        **score.model_dump(),
        source="workspace",
        rev=_git(project, "rev-parse", "HEAD"),
        bento=bento_file.read_text().strip() if bento_file.is_file() else None,
        train_dataframe=dataset.get("train_dataframe"),
        data_folder=dataset.get("data_folder"),
        promoted_at=datetime.now(UTC),
    )
    decision = Decision(
        promote=True,
        reason="the workspace's model, promoted by hand",
        metric=score.metric,
        greater_is_better=score.greater_is_better,
        challenger=score.value,
        champion=current.value if current else None,
        margin=0.0,
        challenger_experiment=None,
        champion_experiment=current.experiment if current else None,
    )
    failed = publish(project, registry_file, decision, champion, commit)
    if failed:
        print(f"warning: the registry is written but not committed: {failed}", file=sys.stderr)
    return champion


def deployment(
    new_data: Path,
    cron: str | None = None,
    interval: float | None = None,
    project: Path = Path("."),
    name: str = DEPLOYMENT,
    **parameters,
):
    """The scheduled deployment of `retrain` (a cron expression or an interval in seconds)."""
    if (cron is None) == (interval is None):
        raise ConfigError("a retrain schedule needs exactly one of --cron and --interval")
    from prefect.deployments.runner import EntrypointType

    from flows.retrain import retrain as importable  # not __main__'s copy: a served run imports it by module

    return importable.to_deployment(
        name=name,
        cron=cron,
        interval=interval,
        paused=False,  # a restarted serve must not inherit the pause its shutdown set (PrefectHQ/prefect#16363)
        parameters={"new_data": str(new_data), "project": str(project.resolve()), **parameters},
        tags=["deuterium"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--project", type=Path, default=Path("."), help="the project folder (dvc.yaml)")
        p.add_argument("--registry", type=Path, default=registry.CHAMPION_FILE, help="the champion file")

    for command in ("run", "serve"):
        p = sub.add_parser(
            command, help="retrain once" if command == "run" else "serve retrain on a schedule"
        )
        p.add_argument(
            "new_data", type=Path, help="a dataframe file, or a folder with train.csv and its files"
        )
        common(p)
        p.add_argument(
            "--data-folder", type=Path, help="where the dataframe's files are (default: params.yaml's)"
        )
        p.add_argument(
            "--replace",
            action="store_true",
            help="train on the new rows alone (default: append them to the training dataframe)",
        )
        p.add_argument(
            "--margin",
            type=float,
            default=0.0,
            help="how much better the challenger must be, in metric units",
        )
        p.add_argument(
            "--confidence",
            type=float,
            default=0.95,
            help="the confidence at which a paired test on the holdout must find the gain (default 0.95)",
        )
        p.add_argument(
            "--set",
            dest="set_params",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a params.yaml setting",
        )
        p.add_argument(
            "--retries", type=int, default=1, help="retries of the experiment after a transient failure"
        )
        p.add_argument("--retry-delay", type=float, default=60.0, help="seconds before the first retry")
        p.add_argument("--no-commit", action="store_true", help="leave the registry files uncommitted")
        if command == "serve":
            when = p.add_mutually_exclusive_group(required=True)
            when.add_argument("--cron", help='a cron schedule, e.g. "0 3 * * 1" (Mondays 03:00)')
            when.add_argument("--interval", type=float, help="seconds between runs")
            p.add_argument("--name", default=DEPLOYMENT, help="the deployment's name")
    p = sub.add_parser("champion", help="print the champion record")
    common(p)
    p.add_argument("--bento", action="store_true", help="print only its bento tag")
    p = sub.add_parser("promote-workspace", help="make the workspace's model the champion")
    common(p)
    p.add_argument("--force", action="store_true", help="replace an existing champion")
    p.add_argument("--no-commit", action="store_true", help="leave the registry files uncommitted")
    args = parser.parse_args(argv)

    try:
        if args.command == "champion":
            path = args.registry if args.registry.is_absolute() else args.project / args.registry
            champion = registry.load(path)
            if champion is None:
                raise registry.RegistryError(f"{path}: no champion yet")
            print(champion.bento if args.bento else champion.model_dump_json(indent=2))
            return 0
        if args.command == "promote-workspace":
            champion = promote_workspace(args.project, args.registry, args.force, not args.no_commit)
            print(f"champion: {champion.metric} {champion.value:.6g}, bento {champion.bento}")
            return 0
        options = {
            "data_folder": str(args.data_folder) if args.data_folder else None,
            "margin": args.margin,
            "set_params": args.set_params,
            "registry_file": str(args.registry),
            "retries": args.retries,
            "retry_delay_seconds": args.retry_delay,
            "commit": not args.no_commit,
            "replace": args.replace,
            "confidence": args.confidence,
        }
        if args.command == "serve":
            from prefect import serve

            served = deployment(args.new_data, args.cron, args.interval, args.project, args.name, **options)
            serve(served, limit=1)  # one retrain at a time: they share the workspace's registry
            return 0
        state = retrain(new_data=args.new_data, project=args.project, return_state=True, **options)
        return 0 if state.is_completed() else 1
    except DeuteriumError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
