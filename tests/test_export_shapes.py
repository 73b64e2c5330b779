"""The scoring contract for multi-channel models and varying-length inference, on freshly built models (no training):
the ONNX graph, preprocessing.json and the scorer agree with PyTorch's predictions."""

import json

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch
from projects import tiny_params

from deuterium import config, export, inference, problems, scoring
from deuterium.data_types.audio import chunk_samples

RATE = 8000
INFO = {"labels": [str(d) for d in range(10)], "target_names": ["digit"]}


def clips(folder, seconds=(0.3, 0.8, 1.7), channels=2):
    rng = np.random.default_rng(0)
    files = []
    for i, s in enumerate(seconds):
        path = folder / f"clip{i}.wav"
        sf.write(path, (0.3 * rng.standard_normal((int(s * RATE), channels))).astype(np.float32), RATE)
        files.append(path)
    return files


def build(overrides):
    exp = config.parse(tiny_params(overrides))
    problem = problems.of(exp)
    torch.manual_seed(0)
    return exp, problem, [problem.model(exp, 10).eval()]


def torch_predictions(exp, problem, models, files):
    return inference.predict(models, problem, files, exp, torch.device("cpu"))


def test_two_channel_model_exports_with_a_channel_axis(tmp_path):
    exp, problem, models = build({"audio": {"audio_channels": 2}})
    assert models[0].backbone.conv_stem.in_channels == 2  # the timm backbone takes both channels
    files = clips(tmp_path)
    report = export.export(exp, problem, INFO, models, files, tmp_path / "export")
    assert report["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(tmp_path / "export" / "model.onnx"))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert len(dims) == 3 and dims[1].dim_value == 2 and dims[2].dim_value == chunk_samples(exp)
    pre = json.loads((tmp_path / "export" / "preprocessing.json").read_text())
    assert pre["input"]["channels"] == 2
    scorer = scoring.Scorer(tmp_path / "export")
    waves = [scorer.load(f) for f in files]
    assert waves[0].shape[0] == 2
    assert np.abs(scorer.raw(waves) - torch_predictions(exp, problem, models, files)).max() < 1e-4
    # a mono clip (a JSON waveform) is zero-padded to the model's channels, not rejected
    mono = scorer.raw([waves[0].mean(axis=0)])
    assert mono.shape == (1, 10) and np.isfinite(mono).all()


def test_audio_channels_changes_what_the_model_hears(tmp_path):
    files = clips(tmp_path, channels=2)
    one, problem1, models1 = build({"audio": {"audio_channels": 1}})
    two, problem2, models2 = build({"audio": {"audio_channels": 2}})
    a = torch_predictions(one, problem1, models1, files)
    b = torch_predictions(two, problem2, models2, files)
    assert a.shape == b.shape and not np.allclose(a, b)


def test_varying_chunks_export_a_graph_of_any_length(tmp_path):
    overrides = {"prediction": {"inference_chunk_method": "varying", "max_inference_chunk_seconds": 1.0}}
    exp, problem, models = build(overrides)
    files = clips(tmp_path, channels=1)
    report = export.export(exp, problem, INFO, models, files, tmp_path / "export")
    assert report["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(tmp_path / "export" / "model.onnx"))
    length = graph.graph.input[0].type.tensor_type.shape.dim[1]
    assert length.dim_param and not length.dim_value  # symbolic: any clip length
    scorer = scoring.Scorer(tmp_path / "export")
    assert scorer.pre.input["chunk_method"] == "varying" and scorer.pre.input["chunk_samples"] == RATE
    waves = [scorer.load(f) for f in files]
    varying = scorer.raw(waves)
    assert np.abs(varying - torch_predictions(exp, problem, models, files)).max() < 1e-4
    # the same model cut into fixed, padded chunks predicts differently: the setting has an effect
    fix = exp.model_copy(
        update={"prediction": exp.prediction.model_copy(update={"inference_chunk_method": "fix"})}
    )
    assert not np.allclose(varying, torch_predictions(fix, problem, models, files), atol=1e-4)


@pytest.mark.parametrize("setting,expected", [(0, 16), (3, 3)])
def test_batch_size_inference(tmp_path, setting, expected):
    """0 means the training batch size; the model never sees more pieces at once than that."""
    exp, problem, models = build(
        {"prediction": {"batch_size_inference": setting}, "training": {"batch_size": 16}}
    )
    assert exp.inference_batch_size == expected
    sizes = []
    models[0].register_forward_hook(lambda module, args, out: sizes.append(len(args[0])))
    files = clips(tmp_path, seconds=[1.7] * 8, channels=1)  # 4 chunks of 0.5 s each: 32 pieces
    torch_predictions(exp, problem, models, files)
    assert max(sizes) == expected and sum(sizes) == 32


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_a_regression_in_large_units_exports_in_float32_and_float16(tmp_path, device):
    """A price of 150,000: float32 holds it to about 0.01 (parity is checked relative to the output's size),
    and float16 not at all (past 65,504): the float16 copy keeps the output scale float32."""
    exp = config.parse(
        tiny_params(
            {
                "problem_type": "audio_regression",
                "training": {"loss_function": "mse"},
                "prediction": {"metric": "MAE"},
                "export": {"onnx_device": device},
            }
        )
    )
    problem = problems.of(exp)
    info = {"target_names": ["price"], "target_mean": [150000.0], "target_sd": [40000.0]}
    torch.manual_seed(0)
    models = [problem.model(exp, 1, problem.target_scale(exp, info)).eval() for _ in range(2)]
    files = clips(tmp_path, channels=1)
    report = export.export(exp, problem, info, models, files, tmp_path / "export")
    assert report["max_scaled_diff"] <= 1e-4 and report["max_abs_diff"] > 1e-4  # absolute would fail
    graph = onnx.load(str(tmp_path / "export" / "model.onnx"))
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    expected = np.concatenate([torch_predictions(exp, problem, models, [f]) for f in files])
    got = scoring.Scorer(tmp_path / "export").raw(
        [scoring.Scorer(tmp_path / "export").load(f) for f in files]
    )
    assert np.all(np.abs(expected - 150000) < 5 * 40000)  # in the targets' units
    assert np.allclose(got, expected, rtol=1e-4)
    if device == "gpu":
        reduced = report["reduced_precision"]
        assert reduced["precision"] == "float16" and reduced["max_scaled_diff"] < 1e-3
