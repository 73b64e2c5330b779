"""Prefect flow: a hyperparameter search (search.yaml, Ray Tune) in a project, its leaderboard an artifact.

    python -m flows.search                          # search.yaml over params.yaml, in this folder
    python -m flows.search --apply                  # ... and the best trial's settings into params.yaml
    python -m flows.search --address auto           # the trials on the Ray cluster `ray start` made

The flow makes sure the split stage's folds exist (`dvc repro split`: the trials train on them), runs
`python -m deuterium.search` (its output in the task's log) and publishes the leaderboard as a table artifact
(`search-leaderboard`) and the best trial as a markdown one (`search-best`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from deuterium import io, paths
from deuterium import search as searching
from flows import commands

TABLE_KEY = "search-leaderboard"
BEST_KEY = "search-best"


@task(cache_policy=NO_CACHE, retries=1, retry_condition_fn=commands.retry_if_transient)
def folds(project: Path) -> None:
    """The trials train on the split stage's folds: make them, or find them in DVC's cache."""
    commands.run(
        [sys.executable, "-m", "dvc", "repro", "split"], project, "dvc repro split", get_run_logger()
    )


@task(cache_policy=NO_CACHE)
def run_search(
    project: Path, search_file: Path, apply: bool, address: str | None, num_cpus: int | None
) -> Path:
    cmd = [sys.executable, "-m", "deuterium.search", "--search", str(search_file)]
    cmd += ["--apply"] if apply else []
    cmd += ["--address", address] if address else []
    cmd += ["--num-cpus", str(num_cpus)] if num_cpus else []
    commands.run(cmd, project, "search", get_run_logger())
    return project / paths.SEARCH / searching.LEADERBOARD_JSON


@task(cache_policy=NO_CACHE)
def publish(leaderboard: Path) -> list[dict]:
    board = io.read_json(leaderboard)
    metric, trials = board["metric"], board["trials"]
    rows = [{k: v for k, v in t.items() if k != "settings"} for t in trials]
    create_table_artifact(rows, key=TABLE_KEY, description=f"{board['strategy']} search, best {metric} first")
    done = [t for t in trials if t["status"] == "finished" and t[metric] is not None]  # as --apply picks
    if done:
        best = done[0]
        lines = [f"## Best trial {best['trial']}: {metric} {best[metric]:.4f} ({best['status']})", ""]
        lines += ["| setting | value |", "|---|---|"] + [
            f"| {k} | {v} |" for k, v in best["settings"].items()
        ]
        lines += ["", "`python -m deuterium.search --apply-only` writes these into params.yaml."]
        create_markdown_artifact("\n".join(lines), key=BEST_KEY, description="the search's best trial")
    return rows


@flow(name="search")
def search(
    project: Path = Path("."),
    search_file: Path = searching.SEARCH_FILE,
    apply: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
) -> list[dict]:
    """Folds, the search, the leaderboard as artifacts."""
    project = project.resolve()
    folds(project)
    leaderboard = run_search(project, search_file, apply, address, num_cpus)
    return publish(leaderboard)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", type=Path, default=Path("."), help="the project folder (dvc.yaml)")
    parser.add_argument("--search", type=Path, default=searching.SEARCH_FILE, help="the search definition")
    parser.add_argument("--apply", action="store_true", help="write the best trial's settings to params.yaml")
    parser.add_argument("--address", help="a Ray cluster (auto: the one `ray start` made)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    args = parser.parse_args(argv)
    state = search(
        project=args.project,
        search_file=args.search,
        apply=args.apply,
        address=args.address,
        num_cpus=args.num_cpus,
        return_state=True,
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
