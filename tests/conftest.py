import os
import sys
from pathlib import Path

# Telemetry off and project-local homes, before any of these libraries is imported.
os.environ.update(
    DO_NOT_TRACK="1",
    BENTOML_DO_NOT_TRACK="true",
    GX_ANALYTICS_ENABLED="false",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    HF_HUB_OFFLINE="1",
)
sys.path.insert(0, str(Path(__file__).resolve().parent))
