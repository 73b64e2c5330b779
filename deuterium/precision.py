"""Reduced-precision copies of an exported graph: float16 for a GPU, dynamic INT8 for the CPU.

Both keep the data type's front end in float32: a power spectrum overflows float16 (with a 512-point
Hann window a full-scale constant signal reaches 256² = 65,536 > 65,504) and spans far more decades
than 8 bits hold; pixels are resized and normalized before any reduced-precision layer sees them. A
regression's output scale (the targets' mean and sd) stays float32 for the same reason.
Its nodes are found by the module they came from, which torch's exporter records on every node.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from deuterium import data_types, scoring

log = logging.getLogger(__name__)

HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"
INT8_OPS = ["Conv", "MatMul"]  # of the ops here, those onnxruntime has INT8 kernels for


def float32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept float32: those exported from a data type's front-end module and from a
    regression's output scale (models.timm_model.OutputScale, the graph's last step)."""
    # as the modules appear in the exporter's class_hierarchy
    kept = [f"'{dt.front_end}'" for dt in data_types.registered().values()]
    kept.append("'deuterium.models.timm_model.OutputScale'")
    return [
        n.name
        for n in model.graph.node
        if any(p.key == HIERARCHY_KEY and any(f in p.value for f in kept) for p in n.metadata_props)
    ]


def _without_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    # The exporter records the initializers' shapes as value_info too; the quantizer transposes some
    # weights in place, and onnx's shape inference then fails on the stale shape. It recomputes them all.
    del model.graph.value_info[:]
    return model


def to_float16(src: Path, dst: Path, keep_float32: list[str]) -> None:
    """float16 weights and activations except `keep_float32` nodes; inputs and outputs stay float32."""
    from onnxconverter_common.float16 import convert_float_to_float16

    model = _without_value_info(onnx.load(str(src)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one line per weight rounded to float16's range
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep_float32)
    _float32_outputs(half)
    onnx.save(half, str(dst))
    onnx.checker.check_model(str(dst))


def _float32_outputs(model: onnx.ModelProto) -> None:
    """Undo the float16 Cast onnxconverter-common puts after a kept-float32 node that writes a graph output
    (a regression's output scale), which keep_io_types does not catch: the output would overflow at 65,504."""
    outputs = {o.name: o for o in model.graph.output}
    for node in list(model.graph.node):
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type != "Cast" or to != onnx.TensorProto.FLOAT16 or node.output[0] not in outputs:
            continue
        for producer in model.graph.node:
            producer.output[:] = [node.output[0] if o == node.input[0] else o for o in producer.output]
        model.graph.node.remove(node)
        outputs[node.output[0]].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        for info in [v for v in model.graph.value_info if v.name == node.input[0]]:
            model.graph.value_info.remove(info)


def quantize_int8(src: Path, dst: Path, keep_float32: list[str], mode: str, calibration: np.ndarray) -> None:
    """INT8 copy of every Conv and MatMul but the `keep_float32` nodes.

    dynamic: weights quantized now, activations per batch at run time (ConvInteger, which onnxruntime
    runs slower than float32 convolutions on x86); static: activation ranges calibrated on
    `calibration` (input pieces), QuantizeLinear/DequantizeLinear pairs that fuse into QLinearConv.
    """
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.disable(logging.INFO)  # the quantizer logs a line per tensor on the root logger
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plain, ready = Path(tmp) / "plain.onnx", Path(tmp) / "ready.onnx"
            onnx.save(_without_value_info(onnx.load(str(src))), str(plain))
            # onnxruntime's recommended pre-processing, less the graph optimization that would rename the
            # nodes to keep; its symbolic shape inference does not follow the STFT op, onnx's own does.
            quant_pre_process(plain, ready, skip_optimization=True, skip_symbolic_shape=True)
            common = {"op_types_to_quantize": INT8_OPS, "nodes_to_exclude": keep_float32, "per_channel": True}
            if mode == "dynamic":
                q.quantize_dynamic(ready, dst, weight_type=q.QuantType.QInt8, **common)
            else:
                q.quantize_static(
                    ready,
                    dst,
                    _Batches(calibration, onnx.load(str(plain)).graph.input[0].name),
                    quant_format=q.QuantFormat.QDQ,
                    activation_type=q.QuantType.QUInt8,
                    weight_type=q.QuantType.QInt8,
                    **common,
                )
    finally:
        logging.disable(logging.NOTSET)
    onnx.checker.check_model(str(dst))


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over input pieces."""

    def __init__(self, chunks: np.ndarray, input_name: str, batch: int = 16) -> None:
        self.feeds = iter({input_name: chunks[i : i + batch]} for i in range(0, len(chunks), batch))

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def ms_per_chunk(session: ort.InferenceSession, chunks: np.ndarray, repeats: int = 5) -> float:
    """Median milliseconds per chunk of one batched run, after a warm-up run."""
    feed = {session.get_inputs()[0].name: chunks}
    session.run([scoring.OUTPUT_NAME], feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run([scoring.OUTPUT_NAME], feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times)) / len(chunks)
