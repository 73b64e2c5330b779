"""Export the fold models as one ONNX graph (waveform in, averaged prediction out) and check it against PyTorch."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from deuterium import audio_io, io, paths, scoring
from deuterium.errors import DeuteriumError
from deuterium.problems.base import ProblemType
from deuterium.settings import ExperimentBase

log = logging.getLogger(__name__)

OPSET = 18


class ExportError(DeuteriumError):
    """The exported graph does not match the PyTorch models."""


class ScoringModule(nn.Module):
    """Raw waveform chunks [batch, samples] -> activated outputs averaged over the fold models."""

    def __init__(self, models: list[nn.Module], problem: ProblemType):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.problem = problem

    def forward(self, waveform: Tensor) -> Tensor:
        outs = [self.problem.activate(m(waveform)) for m in self.models]
        return torch.stack(outs).mean(dim=0)


def preprocessing(exp: ExperimentBase, info: dict) -> scoring.Preprocessing:
    return scoring.Preprocessing(
        problem_type=exp.problem_type,
        experiment_name=exp.experiment_name,
        sample_rate=exp.audio.sample_rate,
        chunk_samples=exp.inference_chunk_samples,
        target_names=list(info["target_names"]),
        labels=list(info.get("labels", [])),
    )


def to_onnx(module: ScoringModule, chunk: int, path: Path) -> None:
    module.eval()
    example = torch.zeros(2, chunk)
    # Length is fixed (the scorer cuts clips into chunks of this size); batch is dynamic.
    batch = torch.export.Dim("batch", min=1)
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
            input_names=[scoring.INPUT_NAME],
            output_names=[scoring.OUTPUT_NAME],
            dynamic_shapes={"waveform": {0: batch}},
            verbose=False,
        )
    program.save(str(path))
    onnx.checker.check_model(str(path))


@torch.no_grad()
def parity(module: ScoringModule, model_dir: Path, files: list[Path], tolerance: float) -> dict:
    """Largest |onnxruntime - PyTorch| over real clips, through the scorer's own loading and chunking."""
    scorer = scoring.Scorer(model_dir)
    waves = [audio_io.load(f, scorer.pre.sample_rate) for f in files]
    onnx_out = scorer.raw(waves)
    torch_out = np.stack(
        [
            module(torch.from_numpy(audio_io.chunks(w, scorer.pre.chunk_samples))).mean(0).numpy()
            for w in waves
        ]
    )
    diff = float(np.abs(onnx_out - torch_out).max())
    report = {
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "clips": len(files),
        "opset": OPSET,
        "file_size_bytes": (model_dir / paths.ONNX_FILE).stat().st_size,
        "providers": scorer.providers,
    }
    if not diff <= tolerance:
        raise ExportError(
            f"ONNX output differs from PyTorch by {diff:.3g} on real clips (tolerance {tolerance:g})"
        )
    return report


def export(
    exp: ExperimentBase,
    problem: ProblemType,
    info: dict,
    models: list[nn.Module],
    files: list[Path],
    out_dir: Path,
    tolerance: float = 1e-4,
) -> dict:
    module = ScoringModule([m.cpu().eval() for m in models], problem)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    to_onnx(module, exp.inference_chunk_samples, tmp / paths.ONNX_FILE)
    io.write_json(dataclasses.asdict(preprocessing(exp, info)), tmp / paths.PREPROCESSING_FILE)
    report = parity(module, tmp, files, tolerance)
    io.write_json(report, tmp / paths.PARITY_FILE)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info(
        "ONNX model %s (%.1f MB), parity max |diff| %.2g on %d clips",
        out_dir / paths.ONNX_FILE,
        report["file_size_bytes"] / 1e6,
        report["max_abs_diff"],
        report["clips"],
    )
    return report
