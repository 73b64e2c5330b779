import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[2]


def project(tmp_path, rows):
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(800) / 8000
    sf.write(audio / "a.wav", np.sin(2 * np.pi * 440 * t).astype(np.float32), 8000)
    (tmp_path / "train.csv").write_text("file,label\n" + rows)
    params = {
        "problem_type": "audio_classification",
        "dataset": {
            "train_dataframe": str(tmp_path / "train.csv"),
            "data_folder": str(audio),
            "audio_column": "file",
            "label_columns": ["label"],
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


def run_stage(params, out):
    env = {**os.environ, "DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false"}
    cmd = [sys.executable, "-m", "stages.validate", "--params", str(params), "--out", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_stage_passes_good_data(tmp_path):
    done = run_stage(project(tmp_path, "a.wav,x\n"), tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["success"] is True


def test_stage_fails_with_one_clear_message(tmp_path):
    done = run_stage(project(tmp_path, "a.wav,x\nlost.wav,y\n"), tmp_path / "out")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: data validation failed" in done.stderr
    assert "train.csv:row 2: column 'file': file not found" in done.stderr
    assert (tmp_path / "out" / "report.json").is_file()


def test_stage_reports_a_missing_params_file(tmp_path):
    done = run_stage(tmp_path / "nope.yaml", tmp_path / "out")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "nope.yaml: no such params file" in done.stderr
