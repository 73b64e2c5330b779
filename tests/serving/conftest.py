import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from serving_support import MAX_FILES, MAX_UPLOAD, bentoml_env, free_port, package, run, write_model_dir

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real service: package -> export -> import into a fresh BENTOML_HOME -> `bentoml serve`
    (production mode); its URL. No request of any test may have made a 5xx."""
    tmp = tmp_path_factory.mktemp("service")
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
    log = (tmp / "serve.log").open("w")
    cmd = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bentoml serve did not get ready:\n{(tmp / 'serve.log').read_text()[-4000:]}")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        text = (tmp / "serve.log").read_text()
        assert " (status=5" not in text, "a request made a 5xx; see " + str(tmp / "serve.log")
