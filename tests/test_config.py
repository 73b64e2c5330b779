from pathlib import Path

import pytest
import yaml
from projects import REPO, merge, tiny_params

from deuterium import config, problems
from deuterium.data_types.audio import chunk_samples
from deuterium.errors import ConfigError


def parse(overrides: dict, base: dict | None = None):
    return config.parse(merge(base or tiny_params(), overrides), "params.yaml")


def error(overrides: dict, base: dict | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(overrides, base)
    return str(exc.value)


def test_shipped_params_files_are_valid():
    assert config.load(REPO / "params.yaml").problem_type == "audio_classification"
    assert config.load(REPO / "configs" / "fsdd_regression.yaml").problem_type == "audio_regression"
    for path in sorted((REPO / "configs").glob("*.yaml")):  # every one the README names
        assert config.load(path).problem_type in problems.names(), path


def test_unknown_key_is_named():
    msg = error({"training": {"learnig_rate": 0.1}})
    assert "training.learnig_rate" in msg and "unknown key" in msg


def test_wrong_type_is_named_with_the_value():
    msg = error({"training": {"epochs": "many"}})
    assert "training.epochs" in msg and "'many'" in msg


def test_a_misspelt_backbone_stops_at_load_with_the_closest_timm_names():
    """Not at the train stage, after validate and split have run."""
    msg = error({"architecture": {"backbone": "efficientnet-b0"}})
    assert "architecture.backbone" in msg and "'efficientnet-b0' is not a timm model" in msg
    assert "'efficientnet_b0'" in msg
    assert parse({"architecture": {"backbone": "efficientnet_b0"}}).architecture.backbone == "efficientnet_b0"


def test_option_not_valid_for_the_problem_type_lists_the_allowed_values():
    msg = error({"training": {"loss_function": "mae"}})  # a regression loss in a classification experiment
    assert "training.loss_function" in msg and "cross_entropy" in msg
    msg = error({"prediction": {"metric": "Accuracy"}}, tiny_params({"problem_type": "audio_regression"}))
    assert "prediction.metric" in msg and "MAE" in msg


def test_unknown_problem_type_lists_the_registered_ones():
    msg = error({"problem_type": "audio_translation"})
    assert "problem_type" in msg
    for name in problems.names():
        assert name in msg


def test_strategy_needs_its_column_and_folds_must_exist():
    params = tiny_params()
    del params["dataset"]["group_column"]
    assert "group_column" in error({}, params)
    assert "selected_folds" in error({"dataset": {"selected_folds": [0, 7]}})


def test_audio_settings_are_checked_against_each_other():
    assert "Nyquist" in error({"audio": {"sample_rate": 8000, "max_frequency": 6000}})
    assert "hop_size" in error({"audio": {"hop_size": 1024, "stft_window_size": 256}})


def test_missing_or_broken_params_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such params file"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(bad)


def test_resolved_config_round_trips(tmp_path: Path):
    exp = parse({"training": {"epochs": 3}})
    path = tmp_path / "config.yaml"
    path.write_text(config.dump(exp))
    again = config.load(path)
    assert again == exp
    assert (
        yaml.safe_load(path.read_text())["training"]["loss_function"] == "cross_entropy"
    )  # defaults written out


def test_export_settings_default_to_a_float32_cpu_graph_and_int8_needs_the_cpu():
    assert parse({}).export.onnx_device == "cpu" and parse({}).export.int8_quantization is False
    assert parse({"export": {"int8_quantization": "static"}}).export.int8_quantization == "static"
    msg = error({"export": {"onnx_device": "gpu", "int8_quantization": "dynamic"}})
    assert "export" in msg and "onnx_device 'cpu'" in msg
    msg = error({"export": {"int8_quantization": True}})
    assert "export.int8_quantization" in msg and "'dynamic'" in msg


def test_data_audio_and_prediction_settings_are_checked_against_each_other():
    assert "data_sample_choice" in error({"dataset": {"data_sample_choice": ["train", "train"]}})
    assert "data_sample_choice" in error({"dataset": {"data_sample_choice": ["test"]}})
    assert "audio_channels" in error({"audio": {"audio_channels": 0}})
    msg = error({"prediction": {"inference_chunk_method": "varying", "inference_chunk_seconds": 2.0}})
    assert "max_inference_chunk_seconds" in msg
    exp = parse({"prediction": {"inference_chunk_method": "varying", "max_inference_chunk_seconds": 2.0}})
    assert chunk_samples(exp) == 2 * exp.audio.sample_rate
    assert "unlabeled_dataframe needs a train_dataframe" in error(
        {"previous_experiment": "x", "dataset": {"train_dataframe": None, "unlabeled_dataframe": "u.csv"}}
    )


def test_a_bare_yaml_no_means_no_normalization(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(tiny_params()).replace(
            "spectrogram_normalization: image", "spectrogram_normalization: no"
        )
    )
    assert "spectrogram_normalization: no" in params.read_text()
    assert config.load(params).audio.spectrogram_normalization == "no"
