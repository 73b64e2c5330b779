"""Prefect flows over the DVC pipeline: `pipeline` (one task per dvc.yaml stage) and `retrain`.

Telemetry is switched off here, before any module of this package imports prefect, and the temporary
server that `python -m flows.pipeline` starts (no PREFECT_API_URL set) gets 90 s to start instead of
Prefect's 20: its first start creates and migrates its database, which on a busy 2-core machine took
longer, and the run failed with "Timed out while attempting to connect to ephemeral Prefect API server".
A value in the environment wins.
"""

import os

for _key, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)
