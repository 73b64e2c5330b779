"""The pipeline flow for real: a temporary Prefect server, real `dvc repro` of every stage."""

import textwrap
from pathlib import Path

import pytest
import yaml
from flow_support import artifact_of, flow_run_of, git, log_lines_of, task_runs_of
from projects import PIPELINE_OUTPUTS, dvc

from flows.pipeline import RAN, UNCHANGED, metrics_markdown, pipeline, stage_order

e2e = pytest.mark.e2e  # real dvc, torch and a Prefect server

STAGES = [
    "settings",
    "prepare",
    "validate",
    "split",
    "train",
    "pseudo_label",
    "evaluate",
    "export",
    "package",
]


@e2e
def test_every_stage_runs_as_a_task_in_dag_order(piped):
    project, state = piped
    assert state.is_completed(), state.message
    assert stage_order(project) == STAGES
    assert state.result() == dict.fromkeys(STAGES, RAN)
    assert sorted(task_runs_of(state)) == sorted(STAGES)
    for out in PIPELINE_OUTPUTS:
        assert (project / out).is_file(), out


@e2e
def test_the_run_shows_stage_logs_and_a_metrics_table(piped):
    project, state = piped
    lines = log_lines_of(state)
    assert "Running stage 'train':" in lines
    assert any(line.startswith("test Accuracy:") for line in lines)
    markdown = artifact_of(state, "pipeline-metrics").data
    assert "| train | ran |" in markdown
    assert "## metrics.json" in markdown and "- metric: Accuracy" in markdown
    assert "| validation overall |" in markdown and "| test |" in markdown


@e2e
def test_a_second_run_is_served_from_the_dvc_cache(piped):
    project, _ = piped
    model = project / "artifacts/train/fold0/model.safetensors"
    stamp = model.stat().st_mtime_ns
    assert pipeline(project=project, retries=0) == dict.fromkeys(STAGES, UNCHANGED)
    assert model.stat().st_mtime_ns == stamp


@pytest.fixture
def toy(tmp_path) -> Path:
    """A DVC project without torch: `make` writes a.txt; `flaky` is terminated the first time it runs."""
    stages = {
        "flaky": {"cmd": "python flaky.py", "deps": ["a.txt", "flaky.py"], "outs": ["b.txt"]},
        "make": {"cmd": "python -c \"open('a.txt', 'w').write('a')\"", "outs": ["a.txt"]},
        "broken": {
            "cmd": "python -c \"import sys; sys.exit('error: the answer is not 42')\"",
            "deps": ["b.txt"],
            "outs": ["c.txt"],
        },
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (tmp_path / "flaky.py").write_text(
        textwrap.dedent(
            """\
            import os, pathlib, signal
            tried = pathlib.Path("tried")
            if not tried.exists():
                tried.touch()
                os.kill(os.getpid(), signal.SIGTERM)  # as a preempted machine would
            pathlib.Path("b.txt").write_text("b")
            """
        )
    )
    (tmp_path / ".gitignore").write_text("tried\n")
    git(tmp_path, "init", "-q")
    dvc(tmp_path, "init", "-q")
    return tmp_path


def test_dag_order_comes_from_dvc_yaml(toy):
    assert stage_order(toy) == ["make", "flaky", "broken"]
    assert stage_order(toy, ["flaky"]) == ["make", "flaky"]
    with pytest.raises(ValueError, match="unknown stage"):
        stage_order(toy, ["nope"])


@e2e
def test_a_killed_stage_is_retried_and_a_stage_error_is_not(toy, prefect_server):
    state = pipeline(project=toy, retries=2, retry_delay_seconds=0, return_state=True)
    assert state.is_failed()
    runs = task_runs_of(state)
    assert runs["flaky"].state.is_completed() and runs["flaky"].run_count == 2
    assert runs["broken"].state.is_failed() and runs["broken"].run_count == 1
    message = flow_run_of(state).state.message
    assert "stage 'broken' failed" in message and "error: the answer is not 42" in message
    assert (toy / "b.txt").is_file() and not (toy / "c.txt").exists()


def test_metrics_become_a_markdown_table():
    metrics = {
        "metric": "Accuracy",
        "greater_is_better": True,
        "validation": {"overall": {"Accuracy": 0.912345, "F1": 0.9}, "fold0": {"Accuracy": 0.8}},
        "test": {"Accuracy": 0.95, "LogLoss": 0.21},
    }
    assert metrics_markdown(metrics).splitlines() == [
        "- metric: Accuracy",
        "- greater_is_better: True",
        "",
        "| | Accuracy | F1 | LogLoss |",
        "|---|---|---|---|",
        "| validation overall | 0.9123 | 0.9 |  |",
        "| validation fold0 | 0.8 |  |  |",
        "| test | 0.95 |  | 0.21 |",
    ]
