import signal
import subprocess
import sys

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
