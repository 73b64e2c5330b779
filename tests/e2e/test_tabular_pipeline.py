"""Tables through the same pipeline: real `dvc repro` of configs/ecg_autoencoder.yaml (the H2O booklet's ECG
anomaly example, whole: it is tiny) and of configs/mnist_tabular.yaml made tiny, then the ECG bento under a
real `bentoml serve`, fed JSON rows good and bad."""

from __future__ import annotations

import json
import os
import sys

import pandas as pd
import pytest
import requests
import yaml
from projects import PIPELINE_OUTPUTS, REPO, dvc, make_project, merge

from serving import launch

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ecg(tmp_path_factory, bentoml_home):
    params = yaml.safe_load((REPO / "configs/ecg_autoencoder.yaml").read_text())
    root = make_project(tmp_path_factory.mktemp("ecg"), params=params, data=["data/ecg"])
    result = dvc(root, "repro", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def test_the_three_anomalous_beats_score_highest(ecg):
    for out in PIPELINE_OUTPUTS:
        assert (ecg / out).is_file(), out
    test = pd.read_parquet(ecg / "artifacts/evaluate/test_predictions.parquet")
    top = test.sort_values("reconstruction_error", ascending=False).head(3)
    assert sorted(top.index) == [20, 21, 22] and top.anomaly.eq(1).all()
    metrics = json.loads((ecg / "metrics.json").read_text())
    assert metrics["test"]["AUC"] == 1.0
    pre = json.loads((ecg / "artifacts/export/preprocessing.json").read_text())
    assert pre["data_type"] == "tabular" and len(pre["input"]["columns"]) == 210
    assert json.loads((ecg / "artifacts/export/parity.json").read_text())["max_abs_diff"] <= 1e-4
    assert (ecg / "artifacts/pseudo/fold0/variable_importances.csv").is_file()
    assert (ecg / "plots/reconstruction_error.csv").is_file()


def test_mnist_as_columns_classifies_through_the_pipeline(tmp_path_factory, bentoml_home):
    tiny = {
        "prepare": {"max_rows": 300},
        "tabular": {
            "hidden": [16],
            "epochs": 10,
            "mini_batch_size": 8,
            "activation": "rectifier",
            "input_dropout_ratio": 0.0,
        },
    }
    params = merge(yaml.safe_load((REPO / "configs/mnist_tabular.yaml").read_text()), tiny)
    root = make_project(tmp_path_factory.mktemp("mnist_tabular"), params=params, data=["data/mnist"])
    result = dvc(root, "repro", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["test"]["Accuracy"] > 0.3  # 240 training rows; chance is 0.1
    predictions = pd.read_parquet(root / "artifacts/evaluate/test_predictions.parquet")
    assert {"predicted_label", *(f"prob_{d}" for d in "0123456789")} <= set(predictions.columns)
    state = json.loads((root / "artifacts/train/fold0/tabular_state.json").read_text())
    assert (
        state["scoring_history"][-1]["valid"]["hit_ratios"][2]
        >= state["scoring_history"][-1]["valid"]["hit_ratios"][0]
    )


@pytest.fixture(scope="module")
def server(ecg, tmp_path_factory):
    tag = (ecg / "artifacts/package/bento.txt").read_text().strip()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DEUTERIUM_PROVIDERS": "CPUExecutionProvider"}
    env.pop("PYTHONPATH", None)  # the bento runs from its own copy of the code
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1", "--port", str(port)]
    with launch.running(cmd, env, ecg, log, port, timeout=180) as url:
        yield url
    assert " (status=5" not in log.read_text(), "a request made a 5xx; see " + str(log)


def test_health_names_the_tables_columns(ecg, server):
    """A table's limits hold its column names: /health answered 400 when its schema allowed numbers only."""
    r = requests.post(f"{server}/health", timeout=30)
    assert r.status_code == 200, r.text
    limits = r.json()["limits"]
    columns = pd.read_csv(ecg / "artifacts/prepare/test.csv").drop(columns=["anomaly"]).columns
    assert limits["n_columns"] == len(columns) and limits["column_names"] == list(columns)[:100]


def test_json_rows_score_and_a_wrong_type_is_a_4xx_naming_the_column(ecg, server):
    test = pd.read_csv(ecg / "artifacts/prepare/test.csv").drop(columns=["anomaly"])
    normal, odd = test.iloc[0].to_dict(), test.iloc[21].to_dict()
    scores = []
    for row in (normal, odd):
        r = requests.post(f"{server}/predict_json", json={"input": row}, timeout=60)
        assert r.status_code == 200, r.text
        scores.append(r.json()["predictions"]["reconstruction_error"])
    assert scores[1] > 10 * scores[0]
    r = requests.post(f"{server}/predict_json", json={"input": {**normal, "t5": "high"}}, timeout=60)
    assert 400 <= r.status_code < 500 and "t5" in r.text
    missing = {k: v for k, v in normal.items() if k != "t7"}
    r = requests.post(f"{server}/predict_json", json={"input": missing}, timeout=60)
    assert 400 <= r.status_code < 500 and "t7" in r.text
    r = requests.post(f"{server}/predict_json", json={"input": {**normal, "t9": None}}, timeout=60)
    assert r.status_code == 200  # a missing value: the training mean
    # JSON numbers beyond a float (1e400, -Infinity) were scored as inf and answered NaN with a 200
    body = json.dumps({"input": {**normal, "t3": 0.5}}).replace('"t3": 0.5', '"t3": 1e400')
    headers = {"content-type": "application/json"}
    r = requests.post(f"{server}/predict_json", data=body, headers=headers, timeout=60)
    assert 400 <= r.status_code < 500 and "t3" in r.text and "finite" in r.text, r.text
    body = json.dumps({"input": {**normal, "t3": 0.5}}).replace('"t3": 0.5', '"t3": ' + "1" * 401)
    r = requests.post(f"{server}/predict_json", data=body, headers=headers, timeout=60)
    assert 400 <= r.status_code < 500 and "t3" in r.text and "float32's range" in r.text, r.text


def test_a_row_of_many_keys_or_a_large_json_body_is_refused_before_it_costs(ecg, server):
    """A 29 MB row of a million keys (under the upload limit) took 30-55 s and 100 MB of the service's
    memory per request, kept afterwards: /predict_json now reads at most the decoder's limit for a row
    (413, before parsing), and a row of more keys than max_keys is a 400."""
    test = pd.read_csv(ecg / "artifacts/prepare/test.csv").drop(columns=["anomaly"])
    normal = test.iloc[0].to_dict()
    limits = requests.post(f"{server}/health", timeout=30).json()["limits"]
    assert limits["max_json_bytes"] == 1 << 20 and limits["max_keys"] == 1000
    extra = {f"k{i}": i for i in range(1000)}
    r = requests.post(f"{server}/predict_json", json={"input": {**normal, **extra}}, timeout=60)
    assert r.status_code == 400 and f"{len(normal) + 1000} keys: a row takes at most 1000" in r.text, r.text
    r = requests.post(f"{server}/predict_json", json={"input": {**normal, "note": "x" * 500}}, timeout=60)
    assert r.status_code == 200, r.text  # a key the model does not read: left alone
    big = json.dumps({"input": {**normal, "note": "x" * (1 << 20)}})
    headers = {"content-type": "application/json"}
    r = requests.post(f"{server}/predict_json", data=big, headers=headers, timeout=60)
    assert r.status_code == 413 and "larger than the limit of 1048576 bytes" in r.text, r.text


def test_a_batch_of_rows_names_the_file_of_a_bad_value(ecg, server):
    """A wrong value in the second of two JSON files was said without the file: 'x: ...'."""
    test = pd.read_csv(ecg / "artifacts/prepare/test.csv").drop(columns=["anomaly"])
    good, bad = test.iloc[0].to_dict(), {**test.iloc[1].to_dict(), "t5": "high"}
    files = [("files", ("a.json", json.dumps(good))), ("files", ("b.json", json.dumps(bad)))]
    r = requests.post(f"{server}/predict_batch", files=files, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("files[1]: t5: 'high' is not a number"), (
        r.text
    )
