"""Run a DVC or stage command in a project folder, its output streamed line by line to a logger.

Only the first MAX_LOGGED_LINES lines go to the log, so a stage that prints without end cannot flood
the Prefect API (prefect-shell#67); the last TAIL_LINES are always kept and make up the error of a
failed command, so a failed run shows why in the Prefect UI. A failure is transient (worth a retry)
only when it looks like one: the process was stopped by a signal other than SIGKILL, or a lock, a
connection or a timeout failed. SIGKILL (exit 137, -9) is what the kernel's out-of-memory killer sends: the
same run would be killed again, so it is not retried. A stage's own `error: ...` line (deuterium.cli's
answer to a DeuteriumError) never is transient.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

MAX_LOGGED_LINES = 1000
TAIL_LINES = 40
MAX_LINE_CHARS = 2000
MAX_ERROR_LINES = 20

USER_ERROR = "error: "  # deuterium.cli prints a DeuteriumError as this one line (and its indented details)
ERROR_PREFIXES = (USER_ERROR, "ERROR: ")  # the second is DVC's
# DVC's words for a stage stopped by a signal, SIGKILL (-9, 137: out of memory, as a rule) excepted
KILLED = re.compile(r"exited with (-(?!9\b)\d+|134|143)\b")
OUT_OF_MEMORY = re.compile(r"exited with (-9|137)\b")
TRANSIENT_MARKERS = (
    "Unable to acquire lock",  # another dvc process holds the repo lock
    "database is locked",
    "Connection reset",
    "Connection refused",
    "Connection aborted",
    "Temporary failure in name resolution",
    "Read timed out",
    "TimeoutError",
)


class CommandFailed(RuntimeError):
    """A command exited non-zero; the message names it and carries its error lines and last lines."""

    def __init__(self, label: str, returncode: int, errors: list[str], tail: list[str], transient: bool):
        self.label, self.returncode, self.errors, self.tail, self.transient = (
            label,
            returncode,
            errors,
            tail,
            transient,
        )
        user = [line for line in errors if line.startswith(USER_ERROR)]
        headline = (user or errors or tail or ["no output"])[0]
        kind = "transient failure, may be retried" if transient else "exit"
        if returncode in (-9, 137) or any(OUT_OF_MEMORY.search(line) for line in [*errors, *tail]):
            kind = "killed, most likely out of memory; not retried: exit"
        super().__init__(
            f"{label} failed ({kind} {returncode}): {headline}\n--- last lines ---\n" + "\n".join(tail)
        )


def command_env() -> dict[str, str]:
    """This environment with this interpreter's folder first on PATH, so dvc.yaml's `python` is ours."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1")
    env.setdefault("DO_NOT_TRACK", "1")
    return env


def is_transient(returncode: int, lines: Iterable[str]) -> bool:
    lines = list(lines)
    if any(line.startswith(USER_ERROR) for line in lines):
        return False
    if returncode in (-9, 137) or any(OUT_OF_MEMORY.search(line) for line in lines):
        return False  # killed, most likely for memory: a retry would be killed again
    if returncode < 0 or any(KILLED.search(line) for line in lines):
        return True
    return any(marker in line for line in lines for marker in TRANSIENT_MARKERS)


def run(
    cmd: Sequence[str],
    cwd: Path,
    label: str,
    log: logging.Logger | logging.LoggerAdapter,
    on_line: Callable[[str], None] | None = None,
) -> list[str]:
    """Run `cmd` in `cwd`, log its output (stdout and stderr, in order); return its last lines.

    Raises CommandFailed on a non-zero exit. Stopping the caller (a cancelled flow run) stops the
    command and everything it started.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    errors: list[str] = []
    logged = total = 0
    log.info("%s: %s", label, " ".join(cmd))
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,  # its own process group, so that stopping it stops the stage under DVC too
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line.strip():
                continue
            if len(line) > MAX_LINE_CHARS:
                line = line[:MAX_LINE_CHARS] + " [...]"
            total += 1
            tail.append(line)
            if line.startswith(ERROR_PREFIXES) and len(errors) < MAX_ERROR_LINES:
                errors.append(line)
            if on_line is not None:
                on_line(line)
            if logged < MAX_LOGGED_LINES:
                (log.error if line.startswith(ERROR_PREFIXES) else log.info)("%s", line)
                logged += 1
                if logged == MAX_LOGGED_LINES:
                    log.warning(
                        "%s: more than %d lines of output; not logging more until it ends, then its last %d",
                        label,
                        MAX_LOGGED_LINES,
                        TAIL_LINES,
                    )
        returncode = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if total > logged:
        for line in list(tail)[-min(total - logged, len(tail)) :]:
            log.info("%s", line)
    if returncode != 0:
        raise CommandFailed(label, returncode, errors, list(tail), is_transient(returncode, [*errors, *tail]))
    return list(tail)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry a failed task only when its CommandFailed is transient."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result()
        except BaseException as err:  # noqa: BLE001 - the state's own exception is what we classify
            exc = err
    return isinstance(exc, CommandFailed) and exc.transient
