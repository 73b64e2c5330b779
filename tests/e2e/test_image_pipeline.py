"""Images through the same pipeline: real `dvc repro` of configs/mnist_image.yaml (made tiny) from MNIST's
original files, then the bento it built under a real `bentoml serve`, fed good and hostile uploads."""

from __future__ import annotations

import io
import json
import os
import sys
import time

import matplotlib
import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image
from projects import PIPELINE_OUTPUTS, black_png, dvc, make_image_project

from serving import launch

pytestmark = pytest.mark.e2e

PHOTO = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")


@pytest.fixture(scope="module")
def project(tmp_path_factory, bentoml_home):
    root = make_image_project(tmp_path_factory.mktemp("mnist"))
    result = dvc(root, "repro", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def test_dvc_repro_prepares_trains_and_packages_images(project):
    for out in [*PIPELINE_OUTPUTS, "artifacts/prepare/train.csv", "artifacts/settings/data.json"]:
        assert (project / out).is_file(), out
    train = pd.read_csv(project / "artifacts/prepare/train.csv")
    assert len(train) == 150 and (project / "artifacts/prepare" / train.image[0]).is_file()
    metrics = json.loads((project / "metrics.json").read_text())
    assert 0 <= metrics["test"]["Accuracy"] <= 1 and "validation" in metrics
    pre = json.loads((project / "artifacts/export/preprocessing.json").read_text())
    assert pre["data_type"] == "image" and pre["input"]["image_size"] == 28 and pre["column"] == "image"
    assert json.loads((project / "artifacts/export/parity.json").read_text())["max_abs_diff"] <= 1e-4
    worst = list((project / "artifacts/pseudo/dvclive/plots/images/fold0/worst").glob("*.png"))
    assert len(worst) == 2  # logging.number_of_images_to_show, rendered as the images themselves


def test_a_second_repro_reruns_nothing(project):
    result = dvc(project, "repro")
    assert "Running stage" not in result.stdout


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    tag = (project / "artifacts/package/bento.txt").read_text().strip()
    port = launch_port()
    env = {**os.environ, "DEUTERIUM_PROVIDERS": "CPUExecutionProvider", "DEUTERIUM_MAX_DECODES": "2"}
    env.pop("PYTHONPATH", None)  # the bento runs from its own copy of the code
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    with launch.running(cmd, env, project, log, port, timeout=180) as url:
        yield url
    assert " (status=5" not in log.read_text(), "a request made a 5xx; see " + str(log)


def launch_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc."""
    total, todo, seen = 0, [root_pid], set()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                continue
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += children.get(pid, [])
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def test_the_service_scores_png_and_jpeg(server, project):
    test = pd.read_csv(project / "artifacts/prepare/test.csv")
    digit = (project / "artifacts/prepare" / test.image[0]).read_bytes()
    for field, name, data in (("file", "d.png", digit), ("image", "p.jpg", open(PHOTO, "rb").read())):
        r = requests.post(f"{server}/predict", files={field: (name, data)}, timeout=60)
        assert r.status_code == 200, r.text
        probs = r.json()["probabilities"]
        assert set(probs) == {str(d) for d in range(10)} and abs(sum(probs.values()) - 1) < 1e-4
    pixels = np.asarray(Image.open(io.BytesIO(digit))).tolist()
    by_json = requests.post(f"{server}/predict_json", json={"input": {"pixels": pixels}}, timeout=60)
    by_file = requests.post(f"{server}/predict", files={"file": ("d.png", digit)}, timeout=60)
    assert by_json.json()["probabilities"] == pytest.approx(by_file.json()["probabilities"], abs=1e-6)
    batch = [("files", ("a.png", digit)), ("images", ("b.jpg", open(PHOTO, "rb").read()))]
    r = requests.post(f"{server}/predict_batch", files=batch, timeout=60)
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    health = requests.post(f"{server}/health", timeout=30).json()
    assert health["data_type"] == "image" and health["limits"]["max_pixels"] == 40_000_000


def test_hostile_uploads_get_a_4xx_and_memory_stays_bounded(server):
    jpeg = open(PHOTO, "rb").read()
    cases = {
        "not an image": (b"just text\n" * 50, 400, "not a readable image"),
        "empty": (b"", 400, "empty"),
        "truncated": (jpeg[: len(jpeg) // 3], 400, "corrupt"),
        "bomb": (black_png(46_000, 46_000), 400, "more than the limit"),
    }
    pid = _server_pid(server)
    before = _rss_mb(pid)
    failures = []
    for name, (data, status, words) in cases.items():
        start = time.monotonic()
        r = requests.post(f"{server}/predict", files={"file": ("x.png", data)}, timeout=60)
        took = time.monotonic() - start
        if r.status_code != status or words not in r.json().get("error", ""):
            failures.append(f"{name}: {r.status_code} {r.text[:200]}")
        if took > 10:
            failures.append(f"{name}: took {took:.1f} s")
    assert not failures, failures
    # ten bombs at once: refused from their headers, so memory barely moves (one decoded would be 2 GB)
    from concurrent.futures import ThreadPoolExecutor

    data = black_png(46_000, 46_000)
    with ThreadPoolExecutor(10) as pool:
        codes = list(
            pool.map(
                lambda _: (
                    requests.post(
                        f"{server}/predict", files={"file": ("b.png", data)}, timeout=60
                    ).status_code
                ),
                range(10),
            )
        )
    assert codes == [400] * 10
    assert _rss_mb(pid) - before < 300, (before, _rss_mb(pid))
    # two images each within the limit, together over it: refused from their headers, as one request
    pair = [("files", (f"{k}.png", black_png(5000, 6000))) for k in range(2)]
    r = requests.post(f"{server}/predict_batch", files=pair, timeout=60)
    assert r.status_code == 400 and "together, more than the limit" in r.json()["error"], r.text


def _server_pid(url: str) -> int:
    """The pid of the process listening on the URL's port (the bentoml serve supervisor's tree)."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in open(table).readlines()[1:]:
                parts = line.split()
                if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":
                    inodes.add(parts[9])
        except OSError:
            continue
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}").removeprefix("socket:[").rstrip("]") in inodes:
                    return _group_leader(int(entry))
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


def _group_leader(pid: int) -> int:
    """The process group's leader: `bentoml serve`, whose descendants are the workers."""
    return os.getpgid(pid)
