"""The DVC pipeline as a Prefect flow: one task per dvc.yaml stage, in the order of dvc.yaml's DAG.

Each task runs `dvc repro --single-item <stage>`, so DVC's cache decides what reruns, as in
`dvc repro`. Prefect adds what a run needs to be watched: retries for transient failures, the
stage's output in the run's logs, and the run's metrics as a markdown artifact.

    python -m flows.pipeline                       # every stage
    python -m flows.pipeline evaluate              # evaluate and the stages it needs
    python -m flows.pipeline --retries 3 --retry-delay 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flows import commands

RAN, UNCHANGED, RESTORED = "ran", "unchanged", "restored from run cache"
ARTIFACT_KEY = "pipeline-metrics"


def stage_order(project: Path, targets: Sequence[str] = ()) -> list[str]:
    """The dvc.yaml stages in an order that runs every stage after the ones it depends on.

    Read from DVC's own graph of the project; where the order is free, dvc.yaml's order is kept.
    With targets, only they and the stages they depend on.
    """
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(project)) as repo:
        graph = repo.index.graph  # an edge goes from a stage to a stage it depends on
        stages = [s for s in repo.index.stages if isinstance(s, PipelineStage)]
        by_name = {_address(s, repo.root_dir): s for s in stages}
        if targets:
            unknown = [t for t in targets if t not in by_name]
            if unknown:
                raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has: {', '.join(by_name)}")
            wanted = {by_name[t] for t in targets}
            wanted |= {d for t in list(wanted) for d in nx.descendants(graph, t)}
        else:
            wanted = set(stages)
        position = {s: i for i, s in enumerate(stages)}
        order = nx.lexicographical_topological_sort(
            graph.reverse(copy=False), key=lambda s: position.get(s, -1)
        )
        return [_address(s, repo.root_dir) for s in order if s in wanted and isinstance(s, PipelineStage)]


def _address(stage, root: str) -> str:
    """How `dvc repro` names the stage when run in the project folder: `name`, or `sub/dvc.yaml:name`."""
    dvcfile = os.path.relpath(stage.path, root)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def metrics_files(project: Path) -> list[Path]:
    """The files dvc.yaml declares as metrics, relative to the project."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return [
            Path(os.path.relpath(out.fs_path, repo.root_dir))
            for stage in repo.index.stages
            for out in stage.outs
            if out.metric
        ]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_markdown(metrics: Mapping) -> str:
    """A metrics file as markdown: its top-level settings as a list, every group of numbers as a table row."""
    notes = [f"- {key}: {_cell(value)}" for key, value in metrics.items() if not isinstance(value, Mapping)]
    rows: list[tuple[str, dict]] = []

    def walk(node: Mapping, path: tuple[str, ...]) -> None:
        numbers = {k: v for k, v in node.items() if _number(v)}
        if numbers and path:
            rows.append((" ".join(path), numbers))
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, (*path, str(key)))

    walk(metrics, ())
    columns = list(dict.fromkeys(k for _, numbers in rows for k in numbers))
    lines = notes + ([""] if notes and rows else [])
    if rows:
        lines += ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        lines += [
            f"| {name} | " + " | ".join(_cell(n[c]) if c in n else "" for c in columns) + " |"
            for name, n in rows
        ]
    return "\n".join(lines)


@task(task_run_name="{stage}", cache_policy=NO_CACHE, retry_condition_fn=commands.retry_if_transient)
def run_stage(project: Path, stage: str) -> str:
    """`dvc repro --single-item <stage>`; returns whether the stage ran, was unchanged or came from the run cache."""
    status = UNCHANGED

    def watch(line: str) -> None:
        nonlocal status
        if line.startswith(f"Running stage '{stage}'"):
            status = RAN
        elif line.startswith(f"Stage '{stage}' is cached"):
            status = RESTORED

    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    commands.run(cmd, project, f"stage {stage!r}", get_run_logger(), watch)
    return status


def publish_metrics(project: Path, statuses: Mapping[str, str]) -> str:
    """The run as a markdown artifact: what each stage did, then each metrics file as a table."""
    parts = ["## Stages", "", "| stage | status |", "|---|---|"]
    parts += [f"| {stage} | {status} |" for stage, status in statuses.items()]
    for path in metrics_files(project):
        if (project / path).is_file():
            parts += ["", f"## {path}", "", metrics_markdown(json.loads((project / path).read_text()))]
    markdown = "\n".join(parts)
    create_markdown_artifact(markdown, key=ARTIFACT_KEY, description=f"deuterium pipeline in {project}")
    return markdown


@flow(name="pipeline")
def pipeline(
    project: Path = Path("."),
    targets: list[str] | None = None,
    retries: int = 2,
    retry_delay_seconds: float = 10.0,
) -> dict[str, str]:
    """Run the project's dvc.yaml stages (or `targets` and what they need) one task each.

    A task is retried `retries` times, after retry_delay_seconds, then twice that and so on, but only
    for a transient failure; a stage's own error fails the run at once, with the stage's message.
    """
    project = project.resolve()
    stages = stage_order(project, targets or ())
    get_run_logger().info("stages in DAG order: %s", ", ".join(stages))
    staged = run_stage.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(retry_delay_seconds) if retries else 0
    )
    statuses = {stage: staged(project, stage) for stage in stages}
    publish_metrics(project, statuses)
    return statuses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="*", help="stages to run, with the stages they need (default: all)")
    parser.add_argument("--project", type=Path, default=Path("."), help="the project folder (dvc.yaml)")
    parser.add_argument("--retries", type=int, default=2, help="retries of a stage after a transient failure")
    parser.add_argument("--retry-delay", type=float, default=10.0, help="seconds before the first retry")
    args = parser.parse_args(argv)
    state = pipeline(
        project=args.project,
        targets=args.targets or None,
        retries=args.retries,
        retry_delay_seconds=args.retry_delay,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
