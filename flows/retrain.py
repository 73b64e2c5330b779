"""Retrain on new data and promote the new model only when it beats the champion.

    python -m flows.retrain run data/incoming                # a folder: train.csv (or .parquet) and its files
    python -m flows.retrain run data/more.csv --margin 0.01  # a dataframe; its files in dataset.data_folder
    python -m flows.retrain serve data/incoming --cron "0 3 * * 1"   # a scheduled Prefect deployment
    python -m flows.retrain champion [--bento]               # the champion record, or its bento tag
    python -m flows.retrain promote-workspace                # make the workspace's model the first champion

A run, step by step:
1. The validate stage checks the new data (with params.yaml and the new paths). Bad data stops the
   run here: nothing is trained, the champion and the workspace stay as they were.
2. The pipeline runs as a DVC experiment in a temporary folder (`dvc exp run --temp`), every stage
   but packaging: the workspace is not touched, training starts afresh, and the experiment keeps its
   params, dvc.lock and metrics in git (`dvc exp show`, `dvc exp apply <name>`).
3. The challenger's metric on the test dataframe is compared with the champion's on the same
   holdout (the same file, by md5). It is promoted only when better by more than the margin.
4. Promotion packages the experiment's exported model as a bento and writes registry/champion.json.
   Every decision, with both figures, is logged, appended to registry/decisions.jsonl and committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from deuterium import paths, registry
from deuterium.errors import ConfigError, DataError, DeuteriumError
from deuterium.registry import Champion, Decision, Score
from flows import commands
from flows.pipeline import metrics_files, stage_order

PARAMS_FILE = "params.yaml"  # DVC's default params file, the one dvc.yaml's stages read
PACKAGE_STAGE = "package"  # run on promotion only, on the winner's export
DATAFRAME_NAMES = ("train.csv", "train.parquet", "train.tsv")  # looked for in a new-data folder
WORK = paths.ARTIFACTS / "retrain"  # per run: the params and the validation report of the new data
DEPLOYMENT = "deuterium-retrain"
ARTIFACT_KEY = "retrain-decision"


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


def data_settings(
    project: Path, new_data: Path, data_folder: Path | None, dataset: dict
) -> tuple[dict[str, str], list[str]]:
    """The dataset settings that point the pipeline at the new data, and the paths to copy into the experiment.

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
    copies = [settings["dataset.train_dataframe"]]
    if folder is not None:
        if not _path(project, folder).is_dir():
            raise DataError(f"{folder}: no such data folder")
        settings["dataset.data_folder"] = _shown(project, folder)
        copies.append(settings["dataset.data_folder"])
        if dataset.get("test_dataframe") and not dataset.get("data_folder_test"):
            settings["dataset.data_folder_test"] = str(dataset["data_folder"])  # the same holdout, same files
    # Untracked files are not in a temporary experiment unless copied in (treeverse/dvc#8854).
    inside = [c for c in copies if not Path(c).is_absolute()]
    return settings, [c for c in inside if not any(Path(c).is_relative_to(o) and c != o for o in inside)]


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


def _holdout(project: Path, rev: str | None) -> registry.Holdout:
    """The test dataframe's name and md5, as the experiment (or the workspace) had it."""
    from dvc.api import params_show

    try:
        shown = params_show(repo=str(project), rev=rev)["dataset"]["test_dataframe"]
    except (KeyError, TypeError):
        shown = None
    if not shown:
        raise ConfigError(
            "dataset.test_dataframe is not set: champion and challenger are compared on the test dataframe, "
            "the one holdout that new training data does not change"
        )
    if rev is not None and not Path(shown).is_absolute():
        try:
            data = _git_bytes(project, "show", f"{rev}:{shown}")
            return registry.Holdout(dataframe=shown, md5=hashlib.md5(data).hexdigest())
        except RuntimeError:
            pass  # not in git (DVC-tracked or copied in): the workspace's file is the one it read
    return registry.fingerprint(_path(project, shown), shown)


@task(cache_policy=NO_CACHE)
def score_challenger(project: Path, rev: str) -> Score:
    path = _metrics_file(project)
    try:
        metrics = json.loads(_git(project, "show", f"{rev}:{path.as_posix()}"))
    except RuntimeError:
        raise registry.RegistryError(f"{path} is not in the experiment's commit {rev[:8]}") from None
    return registry.score_from_metrics(metrics, _holdout(project, rev), f"{path} of {rev[:8]}")


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
) -> dict:
    """Validate `new_data`, train on it as a DVC experiment, promote the result if it beats the champion.

    new_data: a dataframe file (its files in dataset.data_folder, or in `data_folder`), or a folder
    holding train.csv / train.parquet and the files it names. margin: how much better the challenger
    must be, in the metric's units. set_params: more `key.path=value` settings for the experiment.
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
    name = f"retrain-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    params = yaml.safe_load((project / PARAMS_FILE).read_text()) or {}
    data, copies = data_settings(project, new_data, data_folder, params.get("dataset") or {})
    check_experiments_keep_metrics(project)
    settings = [f"{k}={v}" for k, v in data.items()] + list(set_params or [])
    params = apply_settings(params, settings)
    if champion is not None:  # a changed holdout or metric would waste the training: stop now
        test = (params.get("dataset") or {}).get("test_dataframe")
        if test:
            metric = (params.get("prediction") or {}).get("metric") or champion.metric
            registry.check_comparable(champion, metric, registry.fingerprint(_path(project, test), str(test)))
    validate_new_data(project, params, project / WORK / name)

    stages = stage_order(project)
    targets = [s for s in stages if s != PACKAGE_STAGE] if PACKAGE_STAGE in stages else []
    experiment = run_experiment.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(retry_delay_seconds) if retries else 0
    )
    rev = experiment(project, name, settings, copies, targets)
    score = score_challenger(project, rev)
    decision = registry.decide(champion, score, margin, name)
    log.info("%s (%s)", decision.line(), name)

    challenger: Champion | Score = score
    if decision.promote:
        challenger = Champion(
            **score.model_dump(),
            source="retrain",
            experiment=name,
            rev=rev,
            bento=package_challenger(project, rev, name),
            train_dataframe=data["dataset.train_dataframe"],
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
    score = registry.score_from_metrics(
        json.loads((project / path).read_text()), _holdout(project, None), str(path)
    )
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
        p.add_argument("--margin", type=float, default=0.0, help="how much better the challenger must be")
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
