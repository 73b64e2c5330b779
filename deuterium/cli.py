"""Run a stage's main() for the command line: a DeuteriumError becomes one clear line and exit 1, Ctrl-C one
line and exit 130."""

from __future__ import annotations

import logging
import os
import sys

# Telemetry off before any of the libraries that phone home are imported.
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_key, _value)

from deuterium.errors import DeuteriumError  # noqa: E402


def run(fn, *args, **kwargs):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return fn(*args, **kwargs)
    except DeuteriumError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback through torch that buries DVC's own
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)  # the shell's code for SIGINT


INTERRUPTED = (
    "interrupted; run the same command again (training continues from the last epoch it saved, if any)"
)
