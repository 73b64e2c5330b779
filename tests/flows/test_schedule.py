"""`python -m flows.retrain serve`: a scheduled deployment, active again after a restart, that really runs."""

import os
import signal
import subprocess
import sys
import time

import pytest
from flow_support import prefect_client

from flows.retrain import DEPLOYMENT

pytestmark = pytest.mark.e2e

CRON = "0 3 * * 1"


def serve(project, api_url: str) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    cmd = [sys.executable, "-m", "flows.retrain", "serve", "data/none", "--margin", "0.01", "--cron", CRON]
    return subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def stop(proc: subprocess.Popen) -> str:
    """Ctrl-C, as a user stops `serve`; then SIGTERM, as a service manager does, if Ctrl-C has not stopped it
    in a minute. Both shut Prefect's runner down gracefully (pausing the deployment). Under two busy test
    workers Ctrl-C after a served run has twice not stopped it, a second Ctrl-C neither (a Prefect shutdown
    hang not found yet). Killed, and the test failed, if SIGTERM does not stop it either."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=60)
            return out
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    pytest.fail(f"serve did not stop on Ctrl-C, nor on SIGTERM, in 120 s:\n{proc.communicate()[0]}")


def wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if found := condition():
            return found
        time.sleep(0.5)
    pytest.fail(f"no {what} after {timeout}s")


def active_deployment():
    with prefect_client() as client:
        try:
            deployment = client.read_deployment_by_name(f"retrain/{DEPLOYMENT}")
        except Exception:  # not created yet
            return None
    return deployment if deployment.schedules and not deployment.paused else None


def test_serve_keeps_an_active_cron_schedule_across_restarts_and_runs_the_flow(flow_project, prefect_server):
    proc = serve(flow_project, prefect_server)
    try:
        deployment = wait_for(active_deployment, "an active deployment", proc)
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == CRON and schedule.active
        assert deployment.parameters["project"] == str(flow_project.resolve())
        assert deployment.parameters["margin"] == 0.01

        # a served run imports the flow and runs it: this one stops at once on its missing data
        from prefect.deployments import run_deployment

        run = run_deployment(f"retrain/{DEPLOYMENT}", timeout=120)
        assert run.state.is_failed(), run.state
        assert "data/none: no such dataframe file or data folder" in run.state.message
    finally:
        stop(proc)

    with prefect_client() as client:  # serve pauses the deployment when it stops ...
        assert client.read_deployment_by_name(f"retrain/{DEPLOYMENT}").paused
    proc = serve(flow_project, prefect_server)
    try:  # ... and a restart makes it active again (PrefectHQ/prefect#16363)
        deployment = wait_for(active_deployment, "an active deployment after the restart", proc)
        assert deployment.schedules[0].active and deployment.schedules[0].schedule.cron == CRON
    finally:
        stop(proc)
