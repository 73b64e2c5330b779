import os
import sys
import tempfile
from pathlib import Path

# Telemetry off, nothing from a hub, and throwaway homes for the BentoML store and Prefect,
# before any of these libraries is imported (subprocesses inherit them).
_homes = Path(tempfile.mkdtemp(prefix="deuterium-tests-"))
os.environ.update(
    DO_NOT_TRACK="1",
    BENTOML_DO_NOT_TRACK="true",
    GX_ANALYTICS_ENABLED="false",
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    RAY_USAGE_STATS_ENABLED="0",
    HF_HUB_OFFLINE="1",
)
os.environ["BENTOML_HOME"] = str(_homes / "bentoml")
os.environ["PREFECT_HOME"] = str(_homes / "prefect")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return Path(os.environ["BENTOML_HOME"])


def pytest_collection_modifyitems(items):
    """Tests under tests/stages run stages on a slice (seconds each): `make test-quick` leaves them out."""
    stages = Path(__file__).resolve().parent / "stages"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(stages):
            item.add_marker(pytest.mark.stage)
