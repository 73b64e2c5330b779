"""One temporary Prefect server per test session, and one tiny project the flows run in.

The project's data is arranged so that better data really makes a better model in seconds: the
holdout is mostly 7s, the project's own training data has few 7s, and the new data many more.
"""

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from flow_support import git
from projects import FSDD, make_project

# Before prefect is imported (tests/conftest.py has set telemetry off and a throwaway PREFECT_HOME).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # on a 2-core box torch's own threads slow tiny nets a lot

SPEAKERS = ("george", "jackson")
# epochs and learning rate enough for the nets to learn the class balance, which the holdout rewards
FLOW_PARAMS = {"training": {"epochs": 3, "learning_rate": 0.02}}


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """The API URL of a temporary Prefect server (with its own SQLite database) for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield PREFECT_API_URL.value()


def _rows(frame: pd.DataFrame, digits, takes) -> pd.DataFrame:
    return frame[
        frame.speaker.isin(SPEAKERS) & frame.digit.isin(list(digits)) & frame["index"].isin(list(takes))
    ]


def write_data(frame: pd.DataFrame, dataframe: Path, audio: Path) -> Path:
    """The dataframe file, and the audio files it names copied from FSDD into `audio`."""
    audio.mkdir(parents=True, exist_ok=True)
    for file in frame.file:
        if not (audio / file).exists():
            shutil.copy(FSDD / "recordings" / file, audio / file)
    dataframe.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(dataframe, index=False)
    return dataframe


@pytest.fixture(scope="session")
def flow_project(tmp_path_factory, bentoml_home) -> Path:
    """A committed tiny project: train.csv with one 7 per speaker, a test.csv that is mostly 7s."""
    root = make_project(tmp_path_factory.mktemp("flows") / "digits", FLOW_PARAMS)
    train, test = pd.read_csv(FSDD / "train.csv"), pd.read_csv(FSDD / "test.csv")
    fsdd = root / "data" / "fsdd"
    few_sevens = pd.concat(
        [_rows(train, [d for d in range(10) if d != 7], range(5, 8)), _rows(train, [7], [5])]
    )
    write_data(few_sevens, fsdd / "train.csv", fsdd / "recordings")
    mostly_sevens = pd.concat([_rows(test, range(10), [0]), _rows(test, [7], range(1, 5))])
    write_data(mostly_sevens, fsdd / "test.csv", fsdd / "recordings")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a holdout of mostly 7s")
    return root


@pytest.fixture(scope="session")
def incoming(flow_project) -> Path:
    """New training data as a folder (train.csv and its audio): the old rows and 44 more 7s. Untracked."""
    old = pd.read_csv(flow_project / "data" / "fsdd" / "train.csv")
    more = _rows(pd.read_csv(FSDD / "train.csv"), [7], range(8, 30))
    folder = flow_project / "data" / "incoming"
    write_data(pd.concat([old, more]), folder / "train.csv", folder)
    return folder


@pytest.fixture(scope="session")
def corrupt(flow_project) -> Path:
    """New training data with a missing audio file and a missing label. Untracked."""
    old = pd.read_csv(flow_project / "data" / "fsdd" / "train.csv")
    folder = flow_project / "data" / "corrupt"
    frame = pd.concat([old, old.head(1).assign(file="lost.wav")], ignore_index=True)
    frame["digit"] = frame["digit"].astype("Int64")
    frame.loc[3, "digit"] = pd.NA
    write_data(old, folder / "train.csv", folder)
    frame.to_csv(folder / "train.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def piped(flow_project, prefect_server):
    """The pipeline flow's first run over the flow project: (project, its final state)."""
    from flows.pipeline import pipeline

    return flow_project, pipeline(project=flow_project, retries=0, return_state=True)
