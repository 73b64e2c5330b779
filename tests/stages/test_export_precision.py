"""export.onnx_device: gpu (float16) and export.int8_quantization (dynamic, static) on the tiny pipeline's models."""

import json

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto

from deuterium import precision, scoring
from deuterium.data_types.audio import io as audio_io
from stages import export

VARIANTS = {
    "float16": {"onnx_device": "gpu", "int8_quantization": False},
    "int8-dynamic": {"onnx_device": "cpu", "int8_quantization": "dynamic"},
    "int8-static": {"onnx_device": "cpu", "int8_quantization": "static"},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, pipeline):
    params = yaml.safe_load(pipeline.params.read_text())
    params["export"] = VARIANTS[request.param]
    path = pipeline.root / f"params_{request.param}.yaml"
    path.write_text(yaml.safe_dump(params))
    out = pipeline.root / "artifacts" / f"export_{request.param}"
    export.main(path, pipeline.split, pipeline.pseudo, out)
    return request.param, out


def test_reduced_precision_is_deployed_and_reported(variant, pipeline):
    name, out = variant
    parity = json.loads((out / "parity.json").read_text())
    assert parity["max_abs_diff"] <= parity["tolerance"] <= 1e-4  # the float32 graph, checked first
    reduced = parity["reduced_precision"]
    assert parity["precision"] == reduced["precision"] == name.split("-")[0]
    assert reduced["checked"].startswith("yes")  # this machine's CPU runs every variant
    assert reduced["label_agreement"] >= 0.75 and reduced["max_abs_diff"] < 0.1
    assert parity["file_size_bytes"] < reduced["float32_file_size_bytes"]
    if name.startswith("int8"):  # timed on the CPU it is for, against float32 in the same run
        assert set(reduced["ms_per_chunk"]) == {"float32", "int8"} and reduced["speedup"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "parity.json", "preprocessing.json"]


def test_inputs_outputs_and_front_end_stay_float32(variant):
    name, out = variant
    model = onnx.load(str(out / "model.onnx"))
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {TensorProto.FLOAT}
    front = set(precision.float32_nodes(model))
    assert front, "the front end's nodes keep their exporter metadata"
    ops = {n.op_type for n in model.graph.node}
    if name == "float16":
        types = {t.data_type for t in model.graph.initializer}
        assert TensorProto.FLOAT16 in types
        half = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16}
        front_inputs = {i for n in model.graph.node if n.name in front for i in n.input}
        assert not half & front_inputs  # the spectrogram's DFT basis and filterbank stay float32
    else:
        assert ops & {"ConvInteger", "QLinearConv", "DynamicQuantizeLinear", "QuantizeLinear"}
        quantized = {n.name for n in model.graph.node if n.op_type in ("ConvInteger", "QLinearConv")}
        assert not quantized & front


def test_the_scorer_runs_the_reduced_graph(variant, pipeline):
    _, out = variant
    scorer = scoring.Scorer(out)
    files = sorted((pipeline.root / "data/fsdd/recordings").glob("*.wav"))[:4]
    probs = scorer.raw([audio_io.load(f, scorer.pre.input["sample_rate"]) for f in files])
    assert probs.shape == (4, len(scorer.pre.labels)) and np.all(np.isfinite(probs))
    assert np.allclose(probs.sum(1), 1, atol=1e-2)
