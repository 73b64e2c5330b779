import os
import sys
from pathlib import Path

import pytest
from serving_support import MAX_FILES, MAX_UPLOAD, bentoml_env, free_port, package, run, write_model_dir

from serving import launch

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def service_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's folder: its BentoML homes and its log, serve.log."""
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="session")
def server(model_dir: Path, service_dir: Path):
    """The real service: package -> export -> import into a fresh BENTOML_HOME -> `bentoml serve`
    (production mode); its URL. No request of any test may have made a 5xx."""
    tmp = service_dir
    tag = package(model_dir, tmp / "package", tmp / "build_home")
    # Serve from a bento exported and imported into an empty home: the model must travel inside it.
    run(
        [sys.executable, "-m", "bentoml", "export", tag, str(tmp / "model.bento")],
        bentoml_env(tmp / "build_home"),
    )
    home = tmp / "serve_home"
    run([sys.executable, "-m", "bentoml", "import", str(tmp / "model.bento")], bentoml_env(home))
    port = free_port()
    env = bentoml_env(
        home,
        DEUTERIUM_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        DEUTERIUM_MAX_BATCH_FILES=str(MAX_FILES),
        DEUTERIUM_PROVIDERS="CPUExecutionProvider",
    )
    env.pop("PYTHONPATH")  # the bento runs from its own copy of the code
    cmd = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    try:
        with launch.running(cmd, env, tmp, tmp / "serve.log", port, timeout=120) as url:
            yield url
    except RuntimeError as err:  # never got ready
        pytest.fail(str(err))
    finally:
        text = (tmp / "serve.log").read_text()
        assert " (status=5" not in text, "a request made a 5xx; see " + str(tmp / "serve.log")
        # every bad request of the tests was a 4xx: one WARNING line each, never a traceback
        assert "Traceback" not in text, "a request logged a traceback; see " + str(tmp / "serve.log")
