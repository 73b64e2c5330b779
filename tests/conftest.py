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


# Folders whose tests share session fixtures (a Prefect server and flow project, a trained slice, a served
# model): under pytest-xdist each is one group, so one worker sets them up once.
SHARED_SESSION = ("flows", "stages", "serving")


def pytest_collection_modifyitems(items):
    """Tests under tests/stages run stages on a slice (seconds each): `make test-quick` leaves them out.

    `make test` runs two pytest-xdist workers with --dist loadgroup: every test gets an xdist_group, its
    SHARED_SESSION folder or else its file (module fixtures, such as a dvc repro, then run once)."""
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath))
        if path.is_relative_to(here / "stages"):
            item.add_marker(pytest.mark.stage)
        rel = path.relative_to(here) if path.is_relative_to(here) else path
        group = rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in SHARED_SESSION else str(rel)
        item.add_marker(pytest.mark.xdist_group(group))
