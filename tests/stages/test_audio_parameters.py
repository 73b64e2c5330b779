"""audio_parameters auto: the sample rate and training chunk come from the training files, and every later stage
(training, the resolved config, the ONNX export) uses the chosen values. Also: only the selected folds train."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from projects import REPO, make_project, tiny_params, write_params

from deuterium import config
from deuterium.data_types.audio import params as audio_params
from deuterium.errors import DataError


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


def test_auto_replaces_the_values_it_chooses_and_keeps_the_rest(tmp_path, caplog):
    """The shipped params.yaml sets sample_rate and the chunk, and `dvc exp run -S
    audio.audio_parameters=auto` cannot remove them: auto replaces those two, says so, keeps the rest."""
    sf.write(tmp_path / "a.wav", np.zeros(22050, dtype=np.float32), 22050)
    params = tiny_params()
    params["audio"] = {
        "audio_parameters": "auto",
        "sample_rate": 8000,
        "training_chunk_seconds": 0.8,
        "mel_frequency_bins": 32,
        "max_frequency": 3000,
        "audio_channels": 2,
    }
    exp = config.parse(params)
    with caplog.at_level("INFO"):
        chosen = audio_params.choose([tmp_path / "a.wav"], exp.audio)
    # the window and hop (the defaults, 512 and 128 samples) keep their durations at 8 kHz: 64 ms, 16 ms
    assert chosen == {
        "sample_rate": 22050,
        "training_chunk_seconds": 1.0,
        "stft_window_size": 1411,
        "hop_size": 353,
    }
    assert "replaces params.yaml's audio sample_rate 8000 and training_chunk_seconds 0.8" in caplog.text
    assert "stft_window_size 512 -> 1411 and hop_size 128 -> 353, the same 64.0 ms and 16.0 ms" in caplog.text
    audio = audio_params.resolve(exp, {"audio": chosen}).audio
    assert (audio.audio_parameters, audio.sample_rate, audio.training_chunk_seconds) == ("manual", 22050, 1.0)
    assert (audio.stft_window_size, audio.hop_size) == (1411, 353)
    assert (audio.mel_frequency_bins, audio.max_frequency, audio.audio_channels) == (32, 3000, 2)


def test_auto_at_a_higher_rate_leaves_no_mel_band_empty(tmp_path):
    """params.yaml's 256-sample window is 32 ms at 8 kHz; kept at 256 samples for 48 kHz files, 26 of its 64
    mel bands up to 4 kHz would hold no STFT bin (a constant row of the spectrogram)."""
    from deuterium.data_types.audio.frontend import LogMel

    sf.write(tmp_path / "a.wav", np.zeros(48000, dtype=np.float32), 48000)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["audio"]["audio_parameters"] = "auto"
    exp = config.parse(params)
    chosen = audio_params.choose([tmp_path / "a.wav"], exp.audio)
    audio = audio_params.resolve(exp, {"audio": chosen}).audio
    assert (audio.sample_rate, audio.stft_window_size, audio.hop_size) == (48000, 1536, 768)
    assert (LogMel(audio).fbank.sum(dim=1) > 0).all()
    same_rate = audio_params.choose([tmp_path / "a.wav"], exp.audio.model_copy(update={"sample_rate": 48000}))
    assert "stft_window_size" not in same_rate  # nothing to scale at the rate they were set for


def test_auto_says_when_a_set_frequency_does_not_fit_the_chosen_rate(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(8000, dtype=np.float32), 8000)
    params = tiny_params()
    params["audio"] = {"audio_parameters": "auto", "max_frequency": 6000}
    exp = config.parse(params)  # fine at the default 16 kHz
    with pytest.raises(DataError, match=r"auto chose sample_rate 8000: audio.max_frequency 6000.* Nyquist"):
        audio_params.choose([tmp_path / "a.wav"], exp.audio)


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
    assert info["audio"] == {
        "sample_rate": 8000,
        "training_chunk_seconds": pytest.approx(chunk),
        "stft_window_size": 256,  # the default 512 and 128 samples at the default 16 kHz, halved
        "hop_size": 64,
    }

    resolved = yaml.safe_load((auto_project / "train/fold1/config.yaml").read_text())["audio"]
    assert resolved["audio_parameters"] == "manual"  # the resolved config holds the values it used
    assert resolved["sample_rate"] == 8000 and resolved["training_chunk_seconds"] == pytest.approx(chunk)
    assert resolved["max_frequency"] is None and resolved["stft_window_size"] == 256
    assert resolved["mel_frequency_bins"] == 64  # the rest: defaults
    config.load(auto_project / "train/fold1/config.yaml")  # loadable as a params file

    pre = json.loads((auto_project / "export/preprocessing.json").read_text())
    assert pre["input"]["sample_rate"] == 8000 and pre["input"]["chunk_samples"] == round(chunk * 8000)
    assert json.loads((auto_project / "export/parity.json").read_text())["max_abs_diff"] <= 1e-4


def test_only_the_selected_folds_train(auto_project):
    assert sorted(p.name for p in (auto_project / "train").glob("fold*")) == ["fold1"]
    oof = pd.read_parquet(auto_project / "train/oof.parquet")
    assert set(oof.fold) == {1}
