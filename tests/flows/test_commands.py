"""Running a stage's command: capped logging, the kept tail, and which failures are worth a retry."""

import logging
import sys

import pytest
from prefect.states import Completed, Failed

from flows import commands
from flows.commands import CommandFailed, is_transient, retry_if_transient


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def log():
    logger = logging.getLogger("test-commands")
    logger.setLevel(logging.INFO)
    handler = Lines()
    logger.addHandler(handler)
    yield logger, handler.records
    logger.removeHandler(handler)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_flood_of_output_is_capped_in_the_log_and_its_tail_kept(log, tmp_path, monkeypatch):
    logger, records = log
    monkeypatch.setattr(commands, "MAX_LOGGED_LINES", 100)
    seen = []
    tail = commands.run(
        python("for i in range(5000): print('line', i)"), tmp_path, "flood", logger, seen.append
    )
    assert len(seen) == 5000
    assert tail == [f"line {i}" for i in range(5000 - commands.TAIL_LINES, 5000)]
    messages = [r.getMessage() for r in records]
    assert len(messages) == 1 + 100 + 1 + commands.TAIL_LINES  # command, capped lines, notice, tail
    assert "more than 100 lines" in messages[101] and messages[-1] == "line 4999"


def test_a_long_line_is_cut(log, tmp_path):
    logger, records = log
    (line,) = commands.run(python("print('x' * 100000)"), tmp_path, "long", logger)
    assert len(line) < commands.MAX_LINE_CHARS + 10


def test_a_stage_error_fails_with_its_message_and_is_not_transient(log, tmp_path):
    logger, records = log
    code = "import sys; print('working'); print('error: bad value for x\\n  in params.yaml', file=sys.stderr); sys.exit(1)"
    with pytest.raises(CommandFailed) as caught:
        commands.run(python(code), tmp_path, "stage 'x'", logger)
    err = caught.value
    assert not err.transient and err.returncode == 1
    assert str(err).startswith("stage 'x' failed (exit 1): error: bad value for x")
    assert err.tail == ["working", "error: bad value for x", "  in params.yaml"]
    assert any(r.levelno == logging.ERROR and r.getMessage() == "error: bad value for x" for r in records)


def test_a_terminated_command_is_transient_a_killed_one_is_not(log, tmp_path):
    with pytest.raises(CommandFailed) as caught:
        commands.run(python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"), tmp_path, "t", log[0])
    assert caught.value.transient and caught.value.returncode == -15
    with pytest.raises(CommandFailed) as caught:
        commands.run(python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), tmp_path, "k", log[0])
    assert not caught.value.transient and caught.value.returncode == -9
    assert "most likely out of memory; not retried" in str(caught.value)


@pytest.mark.parametrize(
    "returncode, lines, transient",
    [
        (
            255,
            ["ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with -9"],
            False,  # SIGKILL: the out-of-memory killer, as a rule; a retry would be killed again
        ),
        (
            255,
            ["ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with 137"],
            False,
        ),
        (
            255,
            ["ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with -15"],
            True,  # SIGTERM: stopped from outside (a preempted machine)
        ),
        (255, ["ERROR: Unable to acquire lock. Most likely another DVC process is running"], True),
        (1, ["requests.exceptions.ConnectionError: Connection reset by peer"], True),
        (255, ["error: architecture.backbone 'x' is not a timm model", "exited with -9"], False),
        (
            255,
            ["ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with 1"],
            False,
        ),
        (1, ["Traceback (most recent call last):", "ZeroDivisionError: division by zero"], False),
    ],
)
def test_which_failures_are_transient(returncode, lines, transient):
    assert is_transient(returncode, lines) is transient


def test_prefect_retries_only_a_transient_failure():
    transient = CommandFailed("s", -9, [], ["killed"], transient=True)
    final = CommandFailed("s", 1, ["error: no"], ["error: no"], transient=False)
    assert retry_if_transient(None, None, Failed(data=transient))
    assert not retry_if_transient(None, None, Failed(data=final))
    assert not retry_if_transient(None, None, Failed(data=ValueError("a bug")))
    assert not retry_if_transient(None, None, Completed())


def test_commands_run_with_this_interpreter_first_on_path(tmp_path, log):
    (line,) = commands.run(["python", "-c", "import sys; print(sys.executable)"], tmp_path, "which", log[0])
    assert line == sys.executable


def test_the_temporary_server_gets_90_seconds_to_start_unless_the_user_says(tmp_path):
    """Prefect's 20 s were not enough for its first start (a database migration) on a busy 2-core box."""
    import os
    import subprocess

    code = (
        "import flows.pipeline\n"
        "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout\n"
        "print(timeout.value())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    env["PREFECT_HOME"] = str(tmp_path)
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.strip() == "90"
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.strip() == "300"
