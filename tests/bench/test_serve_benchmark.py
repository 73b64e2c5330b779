"""The benchmark runs end to end (a tiny model, a few requests) and reports every figure; no timing is asserted."""

import json
import subprocess
import sys

import pytest
from projects import REPO, env, tiny_params, write_params

pytestmark = pytest.mark.e2e


def test_the_benchmark_reports_every_path(tmp_path):
    params = write_params(tmp_path, tiny_params())  # its data paths are relative to the repo, where it runs
    out = tmp_path / "bench.json"
    args = ["--params", str(params), "--model-dir", str(tmp_path / "none"), "--out", str(out), "--quick"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.serve_benchmark", *args],
        cwd=REPO,
        env={**env(), "DO_NOT_TRACK": "1", "BENTOML_DO_NOT_TRACK": "true"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["backbone"] == "mobilenetv3_small_050" and report["folds"] == 2
    for row in report["torch_vs_onnxruntime"]["batches"].values():
        assert row["torch_eager"]["p50_ms"] > 0 and row["onnxruntime"]["p50_ms"] > 0
    assert report["bare"]["one_request"]["n"] > 0
    for concurrency in ("1", "32"):
        assert report["service"][concurrency]["statuses"] == {"200": report["service"][concurrency]["n"]}
    assert report["service"]["server_errors_in_log"] == 0
    assert {"service_p50_c1_met", "onnxruntime_speedup_met"} <= report["targets"].keys()
    assert "service, concurrency 32" in done.stdout
