import os
import signal
import subprocess
import sys

from projects import in_own_group

from deuterium import cli

WAITS = (
    "from deuterium import cli\nimport time\ncli.run(lambda: (print('ready', flush=True), time.sleep(60)))\n"
)


def test_ctrl_c_in_a_stage_is_one_line_and_exit_130():
    """Ctrl-C during training printed a traceback through torch above DVC's own lines; now one line."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WAITS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == cli.INTERRUPTED and "Traceback" not in err


POOL = """
import time
from pathlib import Path

from deuterium import cli, config, fitting


def sleeper(exp, problem, live, seed_index):
    print("training", flush=True)
    time.sleep(600)


def main():
    dataset = {"train_dataframe": "t.csv", "data_folder": ".", "label_columns": ["label"]}
    exp = config.parse({"problem_type": "audio_classification", "dataset": dataset})
    keys = [(0, 0), (1, 0), (2, 0)]
    fitting._train_in_processes(sleeper, exp, keys, lambda fold: (exp, None), {}, 2, Path("curves"))


if __name__ == "__main__":
    cli.run(main)
"""


def test_ctrl_c_while_folds_train_in_processes_is_one_line_and_stops_them(tmp_path):
    """Ctrl-C reaches the whole process group: each training process printed its own KeyboardInterrupt
    traceback (often from inside an import) above the stage's line. They ignore it now, and the stage
    stops them, at once rather than after the folds they were training."""
    (tmp_path / "pool.py").write_text(POOL)
    proc = in_own_group([sys.executable, "pool.py"], tmp_path)
    try:
        assert proc.stdout.readline().strip() == "training"  # a process is in a run
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # a run sleeps 600 s: waiting for it would time out
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == cli.INTERRUPTED  # after the stage's own log lines
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
