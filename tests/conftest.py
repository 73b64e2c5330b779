import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Telemetry off, nothing from a hub, and throwaway homes for the BentoML store and Prefect,
# before any of these libraries is imported (subprocesses inherit them).
_homes = Path(tempfile.mkdtemp(prefix="deuterium-tests-"))
atexit.register(shutil.rmtree, _homes, ignore_errors=True)  # up to ~20 MB a process (bentos, Prefect's DB)
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
# model): under pytest-xdist each goes to one worker, which sets them up once.
SHARED_SESSION = ("flows", "stages", "serving")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two pytest-xdist workers; this sends each SHARED_SESSION folder, and every other
    test file, whole to one worker, in collection order (so module fixtures such as a dvc repro run once).

    pytest-xdist's own `--dist loadgroup` cannot do it with pytest 9: it tags a group onto `item._nodeid`,
    which pytest 9 no longer reads, so a group's tests were spread over both workers and order-dependent
    tests found their fixtures' state missing. Overriding the scope of `--dist loadscope` is its public
    hook's documented way to group otherwise."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedSessionScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            parts = path.split("/")
            if len(parts) > 2 and parts[0] == "tests" and parts[1] in SHARED_SESSION:
                return "/".join(parts[:2])
            return path

    return SharedSessionScheduling(config, log)


def pytest_collection_modifyitems(items):
    """Tests under tests/stages run stages on a slice (seconds each): `make test-quick` leaves them out."""
    stages = Path(__file__).resolve().parent / "stages"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(stages):
            item.add_marker(pytest.mark.stage)
