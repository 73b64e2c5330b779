"""Prefect flows over the DVC pipeline: `pipeline` (one task per dvc.yaml stage) and `retrain`.

Telemetry is switched off here, before any module of this package imports prefect.
"""

import os

for _key, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(_key, _value)
