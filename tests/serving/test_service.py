"""The real service: package -> export -> import into a fresh BENTOML_HOME -> `bentoml serve` (production mode)."""

import base64
import concurrent.futures
import io
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from serving_support import MAX_FILES, MAX_UPLOAD, PREPROCESSING, bentoml_env, run, tone, write_audio

from deuterium.data_types.audio import io as audio_io
from deuterium.scoring import Scorer

pytestmark = pytest.mark.e2e

HAS_MP3 = "MP3" in sf.available_formats()  # libsndfile >= 1.1 writes MP3


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> Scorer:
    return Scorer(model_dir, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    made = {
        "wav_8k_mono_16bit": write_audio(folder / "a.wav", 2.0, 8000),
        "flac_44k_stereo_24bit": write_audio(folder / "b.flac", 3.0, 44100, 2, "FLAC", "PCM_24", seed=1),
        "ogg_vorbis": write_audio(folder / "c.ogg", 1.5, 22050, 1, "OGG", "VORBIS", freq=900),
        "wav_48k_8bit": write_audio(folder / "d.wav", 0.5, 48000, 1, "WAV", "PCM_U8", freq=3000),
        "too_long": write_audio(folder / "long.wav", PREPROCESSING["input"]["max_seconds"] + 1, 8000),
    }
    if HAS_MP3:
        made["mp3"] = write_audio(folder / "e.mp3", 2.0, 44100, 2, "MP3", "MPEG_LAYER_III", freq=300)
    return made


def _expected(scorer: Scorer, path: Path) -> dict:
    return scorer.predict([scorer.load(path, path.name)])[0]


def _assert_same(got: dict, want: dict) -> None:
    assert got["label"] == want["label"]
    assert got["probabilities"].keys() == want["probabilities"].keys()
    for label, p in want["probabilities"].items():
        assert got["probabilities"][label] == pytest.approx(p, abs=1e-6)


def _post_file(url: str, path: Path, name: str | None = None, content_type: str | None = None):
    part = (name or path.name, path.read_bytes()) + ((content_type,) if content_type else ())
    return requests.post(f"{url}/predict", files={"audio": part}, timeout=60)


CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}


@pytest.mark.parametrize("with_type", [True, False], ids=["part-type", "no-part-type"])
@pytest.mark.parametrize(
    "kind", ["wav_8k_mono_16bit", "flac_44k_stereo_24bit", "ogg_vorbis", "wav_48k_8bit", "mp3"]
)
def test_predict_matches_the_standalone_scorer(server, scorer, clips, kind, with_type):
    if kind not in clips:
        pytest.skip("this libsndfile cannot write MP3")
    path = clips[kind]
    r = _post_file(server, path, content_type=CONTENT_TYPES[path.suffix[1:]] if with_type else None)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny_test.model" and body["version"]
    _assert_same(body, _expected(scorer, path))


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "a/b/../c.wav", "/abs/path.wav", "x" * 300 + ".wav", 'q"\\;.wav']
)
def test_the_client_file_name_is_never_used(server, scorer, clips, name):
    path = clips["wav_8k_mono_16bit"]
    r = _post_file(server, path, name=name)
    assert r.status_code == 200, r.text
    _assert_same(r.json(), _expected(scorer, path))


def test_predict_batch_answers_in_order(server, scorer, clips):
    paths = [clips["ogg_vorbis"], clips["wav_8k_mono_16bit"], clips["flac_44k_stereo_24bit"]]
    files = [("audios", (p.name, p.read_bytes())) for p in paths]
    r = requests.post(f"{server}/predict_batch", files=files, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(paths)
    for got, path in zip(results, paths, strict=True):
        _assert_same(got, _expected(scorer, path))


def test_predict_json_takes_floats_base64_or_a_file(server, scorer, clips):
    samples = tone(1.5, 16000, freq=700)[:, 0]
    want = scorer.predict([audio_io.resample(samples, 16000, 8000)])[0]
    as_list = {"waveform": samples.tolist(), "sample_rate": 16000}
    as_b64 = {
        "waveform_base64": base64.b64encode(samples.astype("<f4").tobytes()).decode(),
        "sample_rate": 16000,
    }
    for payload in (as_list, as_b64):
        r = requests.post(f"{server}/predict_json", json={"input": payload}, timeout=60)
        assert r.status_code == 200, r.text
        _assert_same(r.json(), want)
    path = clips["flac_44k_stereo_24bit"]
    r = requests.post(
        f"{server}/predict_json",
        json={"input": {"audio_base64": base64.b64encode(path.read_bytes()).decode()}},
    )
    assert r.status_code == 200, r.text
    _assert_same(r.json(), _expected(scorer, path))


def _float_wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 8000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _bad_requests(clips: dict[str, Path]) -> dict[str, tuple[str, dict, int, str]]:
    """name: (route, requests.post keyword arguments, expected status, words the error must contain)."""
    wav = clips["wav_8k_mono_16bit"].read_bytes()
    json_type = {"Content-Type": "application/json"}
    return {
        "non-audio file": (
            "/predict",
            {"files": {"audio": ("notes.txt", b"just text\n" * 50)}},
            400,
            "not a readable audio",
        ),
        "garbage named ../": (
            "/predict",
            {"files": {"audio": ("../../x.wav", b"\xff\xfb" + b"\0" * 900)}},
            400,
            "not a readable audio",
        ),
        "empty file": ("/predict", {"files": {"audio": ("a.wav", b"")}}, 400, "empty"),
        "empty body": ("/predict", {"data": b""}, 415, "multipart/form-data"),
        "empty multipart": (
            "/predict",
            {"data": b"", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
            400,
            "no file",
        ),
        "wrong field name": ("/predict", {"files": {"upload": ("a.wav", wav)}}, 400, "'file'"),
        "text in the file field": (
            "/predict",
            {"files": {"audio": (None, "http://example.com/a.wav")}},
            400,
            "file part",
        ),
        "two files to /predict": (
            "/predict",
            {"files": [("audio", ("a.wav", wav)), ("audio", ("b.wav", wav))]},
            400,
            "predict_batch",
        ),
        "too many files": (
            "/predict_batch",
            {"files": [("audios", ("a.wav", wav))] * (MAX_FILES + 1)},
            400,
            f"at most {MAX_FILES}",
        ),
        "a bad file in a batch": (
            "/predict_batch",
            {"files": [("audios", ("a.wav", wav)), ("audios", ("b.wav", b"nope"))]},
            400,
            "files[1]",
        ),
        "too long clip": (
            "/predict",
            {"files": {"audio": ("long.wav", clips["too_long"].read_bytes())}},
            400,
            "longer than the limit",
        ),
        "oversized upload": (
            "/predict",
            {"files": {"audio": ("big.wav", b"\0" * (MAX_UPLOAD + 1))}},
            413,
            "larger than the limit",
        ),
        "malformed multipart": (
            "/predict",
            {
                "data": b"--x\r\nContent-Disposition: form-data\r\n\r\nabc",
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
            400,
            "cannot be read",
        ),
        "JSON to /predict": ("/predict", {"json": {"audio": "a.wav"}}, 415, "multipart/form-data"),
        "multipart to /predict_json": (
            "/predict_json",
            {"files": {"waveform": ("w", b"1")}},
            415,
            "JSON",
        ),
        "no waveform": ("/predict_json", {"json": {"input": {}}}, 400, "exactly one"),
        "no sample_rate": (
            "/predict_json",
            {"json": {"input": {"waveform": [0.1, 0.2]}}},
            400,
            "sample_rate",
        ),
        "sample_rate 0": (
            "/predict_json",
            {"json": {"input": {"waveform": [0.1], "sample_rate": 0}}},
            400,
            "sample_rate",
        ),
        "NaN samples": (
            "/predict_json",
            {"data": '{"input": {"waveform": [NaN, 1.0], "sample_rate": 8000}}', "headers": json_type},
            400,
            "NaN",
        ),
        "huge finite samples": (  # were a 200 with NaN probabilities: the spectrogram overflowed
            "/predict_json",
            {"json": {"input": {"waveform": [1e30, -1e30, 1e30] * 100, "sample_rate": 8000}}},
            400,
            "beyond",
        ),
        "a float file of huge samples": (
            "/predict",
            {"files": {"audio": ("loud.wav", _float_wav(np.full(8000, 1e30, dtype=np.float32)))}},
            400,
            "the audio contains samples beyond",
        ),
        "a megabyte key": (
            "/predict_json",
            {"json": {"input": {"waveform": [0.1], "sample_rate": 8000, "k" * 1_000_000: 1}}},
            400,
            "unknown key(s) 'kkkk",
        ),
        "a megabyte sample_rate": (
            "/predict_json",
            {"json": {"input": {"waveform": [0.1], "sample_rate": "9" * 1_000_000}}},
            400,
            "sample_rate: a whole number",
        ),
        "bad base64": (
            "/predict_json",
            {"json": {"input": {"waveform_base64": "%%%", "sample_rate": 8000}}},
            400,
            "base64",
        ),
        "base64 not float32": (
            "/predict_json",
            {"json": {"input": {"waveform_base64": "AAAA", "sample_rate": 8000}}},
            400,
            "float32",
        ),
        "too long waveform": (
            "/predict_json",
            {"json": {"input": {"waveform": [0.0] * 8000 * 31, "sample_rate": 8000}}},
            400,
            "longer than the limit",
        ),
        "no input key": ("/predict_json", {"json": {"waveform": [0.1]}}, 400, "validation error"),
        "not JSON": ("/predict_json", {"data": "{nope", "headers": json_type}, 400, "validation error"),
        "strings as samples": (
            "/predict_json",
            {"json": {"input": {"waveform": ["a"], "sample_rate": 8000}}},
            400,
            "a list of numbers",
        ),
    }


def test_bad_requests_get_a_clear_4xx(server, clips):
    failures = []
    for name, (route, kwargs, status, words) in _bad_requests(clips).items():
        r = requests.post(f"{server}{route}", timeout=60, **kwargs)
        error = (
            r.json().get("error", "")
            if r.headers.get("content-type", "").startswith("application/json")
            else ""
        )
        if r.status_code != status or words not in error or len(r.content) > 2000:  # nothing echoed whole
            failures.append(f"{name}: {r.status_code} {r.text[:300]}")
    assert not failures, "\n".join(failures)


def test_a_bad_request_is_one_warning_line_in_the_log_not_a_traceback(server, service_dir):
    """BentoML logs an API's exception at ERROR with its traceback, a 400 too: a hostile client would fill
    the log with them. One WARNING line naming the route, the status and the message instead."""
    r = requests.post(
        f"{server}/predict_json", json={"input": {"waveform": [], "sample_rate": 8000}}, timeout=60
    )
    assert r.status_code == 400
    log = service_dir / "serve.log"
    for _ in range(50):  # the worker's line reaches the file shortly after the answer
        said = [line for line in log.read_text().splitlines() if "/predict_json" in line and ": 400 " in line]
        if said:
            break
        time.sleep(0.1)
    assert said and "WARNING" in said[-1] and r.json()["error"][:40] in said[-1], said
    assert "Traceback" not in log.read_text()


def test_health_and_probes(server):
    assert requests.get(f"{server}/livez").status_code == 200
    assert requests.get(f"{server}/readyz").status_code == 200
    health = requests.post(f"{server}/health", timeout=30).json()
    assert health["model"] == "tiny_test.model"
    assert health["providers"] == ["CPUExecutionProvider"]
    assert health["data_type"] == "audio" and health["labels"] == ["a", "b", "c"]
    assert health["limits"] == {"sample_rate": 8000, "max_seconds": 30, "max_decoded_samples": 2_000_000}
    assert health["max_upload_bytes"] == MAX_UPLOAD and "waveform" in health["json_input"]
    assert health["max_json_bytes"] == MAX_UPLOAD  # the upload limit is below the JSON limit of 8 MiB
    routes = requests.get(f"{server}/docs.json").json()["paths"]
    assert {"/predict", "/predict_batch", "/predict_json", "/health"} <= routes.keys()


def _batch_histogram(url: str) -> tuple[float, float]:
    """(requests, batches) the model service has scored so far, from BentoML's adaptive-batching metric."""
    text = requests.get(f"{url}/metrics").text
    total = re.findall(r'adaptive_batch_size_sum\{[^}]*method_name="score"[^}]*\} (\S+)', text)
    count = re.findall(r'adaptive_batch_size_count\{[^}]*method_name="score"[^}]*\} (\S+)', text)
    return sum(map(float, total)), sum(map(float, count))


def test_concurrent_requests_form_batches_and_keep_their_order(server, scorer, tmp_path):
    paths = [write_audio(tmp_path / f"{i}.wav", 1.0, 8000, freq=150 + 60 * i, seed=i) for i in range(16)]
    for p in paths[:12]:  # BentoML's dispatcher scores its first requests one by one while it calibrates
        assert _post_file(server, p).status_code == 200
    before = _batch_histogram(server)
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda p: _post_file(server, p), paths))
    after = _batch_histogram(server)
    for r, p in zip(answers, paths, strict=True):
        assert r.status_code == 200, r.text
        _assert_same(r.json(), _expected(scorer, p))
    scored, batches = after[0] - before[0], after[1] - before[1]
    assert scored == len(paths) and batches < scored, f"{scored} requests in {batches} batches"


def test_importing_the_service_needs_no_model(tmp_path):
    code = "import serving.service as s; print(s.MODEL.tag)"
    done = run(
        [sys.executable, "-c", code], bentoml_env(tmp_path / "empty_home", DEUTERIUM_MODEL_TAG="nothing:here")
    )
    assert done.stdout.strip() == "nothing:here"


def test_wav_bytes_and_path_load_the_same(scorer, clips):
    path = clips["flac_44k_stereo_24bit"]
    from_bytes = audio_io.load(path.read_bytes(), 8000, max_seconds=30)
    np.testing.assert_array_equal(from_bytes, scorer.load(path, "b.flac"))
    assert json.loads(json.dumps(scorer.predict([from_bytes])))  # plain JSON types


def test_more_calls_than_bentoml_pools_a_connection_for_get_no_5xx(server, tmp_path):
    """BentoML renews its connection pool to the model service every 100 calls, failing the calls in
    flight (bentoml/BentoML#4971); the service keeps its pool, so a long concurrent burst all succeeds."""
    path = write_audio(tmp_path / "a.wav", 0.5, 8000)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: _post_file(server, path).status_code, range(240)))
    assert codes == [200] * len(codes), sorted(set(codes))


def _silence_flac(seconds: float, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * rate), channels), np.int16), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _tree_rss_mb(port: int) -> float:
    """Resident memory of every process of the service (the tree of the process listening on `port`)."""
    import os

    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":
                listening.add(f"socket:[{parts[9]}]")
    group = None
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(
                os.readlink(f"/proc/{entry}/fd/{fd}") in listening for fd in os.listdir(f"/proc/{entry}/fd")
            ):
                group = os.getpgid(int(entry))
                break
        except OSError:
            continue
    total = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(entry)) == group:
                total += next(
                    int(line.split()[1])
                    for line in open(f"/proc/{entry}/status")
                    if line.startswith("VmRSS:")
                )
        except (OSError, StopIteration):
            continue
    return total / 1024


def test_small_uploads_that_decode_big_are_refused_from_the_header_with_bounded_memory(server, tmp_path):
    """Issue 15: a FLAC of silence at a very high rate is small on the wire and huge decoded."""
    from concurrent.futures import ThreadPoolExecutor

    hostile = {
        "rate above the limit": (_silence_flac(5, 655_350), "above the limit of 384000 Hz"),
        "too many decoded samples": (_silence_flac(10, 384_000), "more than the limit of 2000000"),
        "many channels": (_silence_flac(2, 192_000, channels=8), "more than the limit of 2000000"),
    }
    assert all(len(data) < 300_000 for data, _ in hostile.values())  # small on the wire
    port = int(server.rsplit(":", 1)[1])
    before = _tree_rss_mb(port)
    jobs = [(name, data, words) for name, (data, words) in hostile.items()] * 4  # each four times at once

    def send(job):
        name, data, words = job
        start = time.monotonic()
        r = requests.post(f"{server}/predict", files={"file": ("x.flac", data)}, timeout=60)
        return name, r.status_code, r.json().get("error", ""), words, time.monotonic() - start

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(send, jobs))
    assert all(code == 400 and words in error for _, code, error, words, _ in answers), answers
    assert max(took for *_, took in answers) < 10
    batch = [
        ("files", ("a.flac", _silence_flac(8, 96_000, 2))),
        ("files", ("b.flac", _silence_flac(8, 96_000, 2))),
    ]
    r = requests.post(f"{server}/predict_batch", files=batch, timeout=60)  # 1.5 M samples each: 3 M together
    assert r.status_code == 400 and "together, more than the limit" in r.json()["error"], r.text
    allowed = requests.post(
        f"{server}/predict", files={"file": ("ok.flac", _silence_flac(20, 48_000, 2))}, timeout=60
    )
    assert allowed.status_code == 200, allowed.text  # 1.92 M samples: within the limit, decoded in blocks
    grown = _tree_rss_mb(port) - before
    print(
        f"12 hostile FLACs at once: slowest answer {max(took for *_, took in answers):.2f} s, memory {grown:+.0f} MB"
    )
    assert grown < 1024, (before, grown)
