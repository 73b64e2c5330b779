"""audio_parameters auto: the sample rate and training chunk come from the training files, and every later stage
(training, the resolved config, the ONNX export) uses the chosen values. Also: only the selected folds train."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from projects import make_project, tiny_params, write_params

from deuterium import config
from deuterium.data_types.audio import params as audio_params
from deuterium.errors import ConfigError


def test_the_most_common_rate_and_the_95th_percentile_length(tmp_path):
    files = []
    for i, (rate, seconds) in enumerate(
        [(16000, 1.0), (16000, 1.2), (16000, 1.24), (8000, 3.0), (22050, 0.5)]
    ):
        files.append(tmp_path / f"{i}.wav")
        sf.write(files[-1], np.zeros(int(rate * seconds), dtype=np.float32), rate)
    chosen = audio_params.choose(files)
    assert chosen["sample_rate"] == 16000
    expected = np.ceil(np.percentile([1.0, 1.2, 1.24, 3.0, 0.5], 95) * 10) / 10
    assert chosen["training_chunk_seconds"] == pytest.approx(expected)
    sf.write(tmp_path / "long.wav", np.zeros(8000 * 61, dtype=np.float32), 8000)
    assert audio_params.choose([tmp_path / "long.wav"])["training_chunk_seconds"] == 60.0  # at most 60 s


def test_auto_rejects_the_values_it_would_choose():
    params = tiny_params()
    params["audio"] = {"audio_parameters": "auto", "sample_rate": 16000}
    with pytest.raises(ConfigError, match="audio_parameters 'auto' chooses sample_rate"):
        config.parse(params)
    params["audio"] = {"audio_parameters": "auto", "audio_channels": 2}
    assert config.parse(params).audio.audio_channels == 2


@pytest.fixture(scope="module")
def auto_project(tmp_path_factory):
    from stages import export, split, train

    root = make_project(tmp_path_factory.mktemp("auto_audio"), git=False)
    params = tiny_params({"dataset": {"selected_folds": [1]}})
    params["audio"] = {"audio_parameters": "auto"}
    write_params(root, params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        split.main(root / "params.yaml", root / "split")
        train.main(root / "params.yaml", root / "split", root / "train", root / "checkpoints")
        export.main(root / "params.yaml", root / "split", root / "train", root / "export")
    return root


def test_auto_values_reach_training_and_the_export(auto_project):
    info = json.loads((auto_project / "split/data_info.json").read_text())
    files = pd.read_csv(auto_project / "data/fsdd/train.csv").file
    lengths = [sf.info(auto_project / "data/fsdd/recordings" / f).duration for f in files]
    chunk = float(np.ceil(np.percentile(lengths, 95) * 10) / 10)
    assert info["audio"] == {"sample_rate": 8000, "training_chunk_seconds": pytest.approx(chunk)}

    resolved = yaml.safe_load((auto_project / "train/fold1/config.yaml").read_text())["audio"]
    assert resolved["audio_parameters"] == "manual"  # the resolved config holds the values it used
    assert resolved["sample_rate"] == 8000 and resolved["training_chunk_seconds"] == pytest.approx(chunk)
    assert resolved["max_frequency"] is None and resolved["stft_window_size"] == 512  # the rest: defaults
    config.load(auto_project / "train/fold1/config.yaml")  # loadable as a params file

    pre = json.loads((auto_project / "export/preprocessing.json").read_text())
    assert pre["input"]["sample_rate"] == 8000 and pre["input"]["chunk_samples"] == round(chunk * 8000)
    assert json.loads((auto_project / "export/parity.json").read_text())["max_abs_diff"] <= 1e-4


def test_only_the_selected_folds_train(auto_project):
    assert sorted(p.name for p in (auto_project / "train").glob("fold*")) == ["fold1"]
    oof = pd.read_parquet(auto_project / "train/oof.parquet")
    assert set(oof.fold) == {1}
