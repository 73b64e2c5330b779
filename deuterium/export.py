"""Export the fold models as one ONNX graph (decoded input in, averaged prediction out) and check it against PyTorch."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from deuterium import io, paths, scoring
from deuterium import precision as precision_tools
from deuterium.errors import DeuteriumError
from deuterium.problems import ProblemType
from deuterium.settings import ExperimentBase, ExportSettings

log = logging.getLogger(__name__)

OPSET = 18
REDUCED_TOLERANCE = {"float16": 1e-2, "int8": 5e-2}  # reported against, not enforced


class ExportError(DeuteriumError):
    """The exported graph does not match the PyTorch models."""


class ScoringModule(nn.Module):
    """The data type's decoded input [batch, ...] -> activated outputs averaged over the fold models."""

    def __init__(self, models: list[nn.Module], problem: ProblemType):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.problem = problem
        # A regression's models share the training targets' scale: the mean is taken in standardized units
        # and scaled last, so the graph's only values in the targets' units are its float32 output (a
        # float16 copy would overflow at 65,504; precision.float32_nodes keeps the scale itself float32).
        scales = [getattr(m, "output_scale", None) for m in models]
        shared = scales[0] is not None and all(
            s is not None and torch.equal(s.scale, scales[0].scale) for s in scales
        )
        self.output_scale = copy.deepcopy(scales[0]) if shared else None

    def forward(self, x: Tensor) -> Tensor:
        if self.output_scale is not None:  # regression: no activation
            return self.output_scale(torch.stack([m.standardized(x) for m in self.models]).mean(dim=0))
        outs = [self.problem.activate(m(x)) for m in self.models]
        return torch.stack(outs).mean(dim=0)


def preprocessing(exp: ExperimentBase, problem: ProblemType, info: dict) -> scoring.Preprocessing:
    return scoring.Preprocessing(
        problem_type=exp.problem_type,
        data_type=problem.data.name,
        experiment_name=exp.experiment_name,
        target_names=list(info["target_names"]),
        input=problem.data.preprocessing(exp),
        column=problem.data.column(exp),
        labels=list(info.get("labels", [])),
        multi_label=bool(info.get("multi_label", False)),
    )


def to_onnx(module: ScoringModule, example: Tensor, dims: dict, input_name: str, path: Path) -> None:
    """The batch is dynamic, and the dimensions in `dims` (a length, a height and width)."""
    module.eval()
    dims = {0: torch.export.Dim("batch", min=1), **dims}
    path.parent.mkdir(parents=True, exist_ok=True)
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[input_name],
            output_names=[scoring.OUTPUT_NAME],
            dynamic_shapes=(dims,),
            verbose=False,
        )
    program.save(str(path))
    onnx.checker.check_model(str(path))


@dataclasses.dataclass(frozen=True)
class Reference:
    """Real inputs as the scorer decodes them, and the PyTorch models' outputs on them."""

    inputs: list[np.ndarray]
    outputs: np.ndarray  # one row per input, the mean over its pieces
    chunks: (
        np.ndarray
    )  # every input's pieces of the first piece's shape, stacked: the batch the speed figures time


@torch.no_grad()
def reference(module: ScoringModule, decoder, files: list[Path]) -> Reference:
    inputs = [decoder.load(f) for f in files]
    pieces = [decoder.pieces(x) for x in inputs]
    weights = [decoder.piece_weights(x) for x in inputs]
    # Each piece on its own (varying pieces differ in length), averaged as the scorer weighs them.
    outputs = np.stack(
        [
            np.average(
                np.concatenate([module(torch.from_numpy(p[None])).numpy() for p in item]), axis=0, weights=w
            )
            for item, w in zip(pieces, weights, strict=True)
        ]
    )
    timed = [p for item in pieces for p in item if p.shape == pieces[0][0].shape]
    return Reference(inputs, outputs, np.stack(timed))


def scaled_diff(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|out - ref| in units of max(1, |ref|): absolute for probabilities and small values, relative for a
    regression in large units (float32 holds a price of 150,000 to about 0.01, never to 1e-4)."""
    return np.abs(out - ref) / np.maximum(1.0, np.abs(ref))


def parity(ref: Reference, model_dir: Path, tolerance: float) -> dict:
    """Largest |onnxruntime - PyTorch| over real inputs, through the scorer's own decoding and pieces; the
    check is on `scaled_diff`, the same figure for outputs within [-1, 1]."""
    scorer = scoring.Scorer(model_dir)
    out = scorer.raw(ref.inputs)
    diff = float(scaled_diff(out, ref.outputs).max())
    report = {
        "max_abs_diff": float(np.abs(out - ref.outputs).max()),
        "max_scaled_diff": diff,
        "tolerance": tolerance,
        "clips": len(ref.inputs),
        "opset": OPSET,
        "file_size_bytes": (model_dir / paths.ONNX_FILE).stat().st_size,
        "providers": scorer.providers,
    }
    if not diff <= tolerance:
        raise ExportError(
            f"ONNX output differs from PyTorch by {report['max_abs_diff']:.3g} on real inputs ({diff:.3g} in "
            f"units of max(1, |output|); tolerance {tolerance:g})"
        )
    return report


def reduce_precision(
    ref: Reference, model_dir: Path, settings: ExportSettings, calibration: np.ndarray | None = None
) -> dict:
    """Replace model_dir's float32 graph by its float16 (GPU) or INT8 (CPU) copy; how it compares.

    `calibration`: input pieces for static INT8 (default: the parity inputs' own).

    Reduced precision cannot match PyTorch to 1e-4: the report gives its difference, how often it picks
    the same class, and its speed against float32 on the device it is meant for. Export fails only
    when the copy gives a non-finite output.
    """
    precision = "float16" if settings.onnx_device == "gpu" else "int8"
    full, reduced = model_dir / "model.float32.onnx", model_dir / paths.ONNX_FILE
    reduced.rename(full)
    keep = precision_tools.float32_nodes(onnx.load(str(full), load_external_data=False))
    if not keep:
        raise ExportError(
            "the front end is not marked in the exported graph, so it cannot be kept float32; "
            "set export.onnx_device: cpu and export.int8_quantization: false (or check torch's exporter)"
        )
    report: dict = {"precision": precision, "float32_file_size_bytes": full.stat().st_size}
    if precision == "float16":
        precision_tools.to_float16(full, reduced, keep)
    else:
        calibration = ref.chunks if calibration is None else calibration
        mode = settings.int8_quantization
        precision_tools.quantize_int8(full, reduced, keep, mode, calibration)
        report |= {"int8_quantization": mode} | (
            {"calibration_chunks": len(calibration)} if mode == "static" else {}
        )
    # CUDA only where torch sees a GPU: elsewhere onnxruntime-gpu prints a page of errors before falling back.
    gpu = precision == "float16" and torch.cuda.is_available()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else None
    try:
        scorer = scoring.Scorer(model_dir, providers=wanted)
    except Exception as err:  # onnxruntime's own error types: a kernel missing on this device
        report["checked"] = f"no: onnxruntime cannot run it here ({str(err).splitlines()[0][:200]})"
        log.warning("%s graph not checked: %s", precision, report["checked"])
        full.unlink()
        return report
    out = scorer.raw(ref.inputs)
    if not np.all(np.isfinite(out)):
        raise ExportError(f"the {precision} graph gives NaN or infinite outputs on real inputs")
    diff = np.abs(out - ref.outputs)
    report |= {
        "checked": f"yes, on {scorer.providers[0]}",
        "providers": scorer.providers,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_scaled_diff": float(scaled_diff(out, ref.outputs).max()),
        "tolerance": REDUCED_TOLERANCE[precision],
    }
    if scorer.pre.multi_label:  # every class decision, each at the scorer's threshold
        cut = scoring.MULTI_LABEL_THRESHOLD
        report["label_agreement"] = float(np.mean((out >= cut) == (ref.outputs >= cut)))
    elif scorer.pre.is_classification:
        report["label_agreement"] = float(np.mean(out.argmax(1) == ref.outputs.argmax(1)))
    if not report["max_scaled_diff"] <= report["tolerance"] or report.get("label_agreement", 1.0) < 1.0:
        log.warning(
            "%s graph: max |diff| %.3g vs PyTorch (%.3g in units of max(1, |output|); tolerance %g), "
            "label agreement %s on %d inputs",
            precision,
            report["max_abs_diff"],
            report["max_scaled_diff"],
            report["tolerance"],
            report.get("label_agreement", "n/a"),
            len(ref.inputs),
        )
    # Speed on the device the copy is for, against float32 on the same device in the same run.
    on = scorer.providers[0]
    if on == ("CUDAExecutionProvider" if precision == "float16" else "CPUExecutionProvider"):
        float32 = scoring.session(full, [on])
        ms = {
            "float32": precision_tools.ms_per_chunk(float32, ref.chunks),
            precision: precision_tools.ms_per_chunk(scorer.session, ref.chunks),
        }
        report |= {"ms_per_chunk": ms, "speedup": ms["float32"] / ms[precision], "timed_on": on}
        if ms[precision] >= ms["float32"]:
            log.warning("the %s graph is not faster than float32 on %s: %s ms per chunk", precision, on, ms)
    else:
        report["timed_on"] = f"not timed: {precision} is for {settings.onnx_device}, this run has {on}"
    full.unlink()
    return report


def export(
    exp: ExperimentBase,
    problem: ProblemType,
    info: dict,
    models: list[nn.Module],
    files: list[Path],
    out_dir: Path,
    tolerance: float = 1e-4,
    calibration_files: list[Path] | None = None,
) -> dict:
    """model.onnx, preprocessing.json and parity.json in `out_dir`; `files` are the parity inputs,
    `calibration_files` other inputs for static INT8 (default: the parity inputs)."""
    module = ScoringModule([m.cpu().eval() for m in models], problem)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    pre = preprocessing(exp, problem, info)
    decoder = pre.decoder(bounded=False)
    example, dims = problem.data.example_input(exp)
    to_onnx(module, example, dims, decoder.input_name, tmp / paths.ONNX_FILE)
    io.write_json(dataclasses.asdict(pre), tmp / paths.PREPROCESSING_FILE)
    ref = reference(module, decoder, files)
    report = parity(ref, tmp, tolerance)  # the float32 graph against PyTorch, always
    report |= {"onnx_device": exp.export.onnx_device, "precision": "float32"}
    if exp.export.onnx_device == "gpu" or exp.export.int8_quantization:
        calibration = None
        if exp.export.int8_quantization == "static" and calibration_files:
            calibration = reference(module, decoder, calibration_files).chunks
        reduced = reduce_precision(ref, tmp, exp.export, calibration)
        report |= {"precision": reduced["precision"], "reduced_precision": reduced}
        report["file_size_bytes"] = (tmp / paths.ONNX_FILE).stat().st_size
    io.write_json(report, tmp / paths.PARITY_FILE)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info(
        "ONNX model %s (%s, %.1f MB), float32 parity max |diff| %.2g on %d inputs",
        out_dir / paths.ONNX_FILE,
        report["precision"],
        report["file_size_bytes"] / 1e6,
        report["max_abs_diff"],
        report["clips"],
    )
    return report
