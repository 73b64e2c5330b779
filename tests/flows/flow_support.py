"""Helpers for the flow tests: git in a project, and what the Prefect server holds about a run."""

import subprocess
from pathlib import Path


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=project, check=True, capture_output=True, text=True
    ).stdout.strip()


def prefect_client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def flow_run_of(state):
    with prefect_client() as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def task_runs_of(state) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client() as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    return {run.name: run for run in runs}


def artifact_of(state, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with prefect_client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    return next(a for a in found if a.key == key)


def log_lines_of(state) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send what is queued before reading it back
    query = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    lines: list[str] = []
    with prefect_client() as client:
        while page := client.read_logs(log_filter=query, limit=200, offset=len(lines)):
            lines += [log.message for log in page]
    return lines
