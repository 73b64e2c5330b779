"""Put an exported model folder into the BentoML model store and build the bento that serves it."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import bentoml

from deuterium import io, paths
from deuterium.errors import DataError
from deuterium.scoring import Preprocessing

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BENTOFILE = PROJECT_ROOT / "serving" / "bentofile.yaml"
MODEL_FILES = (paths.ONNX_FILE, paths.PREPROCESSING_FILE, paths.PARITY_FILE)


def store_name(experiment_name: str) -> str:
    """A BentoML tag name (lowercase letters, digits, '_', '-', '.', at most 63) from an experiment name."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", experiment_name.lower())[:63].strip("_.-")
    return name or "deuterium"


def _digest(files: list[Path]) -> str:
    sha = hashlib.sha256()
    for f in files:
        sha.update(f.name.encode() + b"\0" + f.read_bytes())
    return sha.hexdigest()


def save_model(model_dir: Path) -> bentoml.Model:
    """The model folder (model.onnx, preprocessing.json, parity.json if there) as a model-store entry.

    An entry with the same files already in the store is reused, so rerunning the stage adds no copies.
    """
    for required in (paths.ONNX_FILE, paths.PREPROCESSING_FILE):
        if not (model_dir / required).is_file():
            raise DataError(f"{model_dir / required}: missing; run the export stage first (dvc repro export)")
    files = [model_dir / f for f in MODEL_FILES if (model_dir / f).is_file()]
    pre = Preprocessing.read(model_dir / paths.PREPROCESSING_FILE)
    name, digest = store_name(pre.experiment_name), _digest(files)
    for existing in bentoml.models.list():  # list(name) raises when there is none yet
        if existing.tag.name == name and existing.info.metadata.get("sha256") == digest:
            log.info("model %s already holds these files", existing.tag)
            return existing
    parity_file = model_dir / paths.PARITY_FILE
    metadata = {
        "sha256": digest,
        "experiment_name": pre.experiment_name,
        "data_type": pre.data_type,
        "input": pre.input,
        "labels": pre.labels,
        "target_names": pre.target_names,
        "parity": json.loads(parity_file.read_text()) if parity_file.is_file() else None,
    }
    labels = {"project": "deuterium", "problem_type": pre.problem_type, "data_type": pre.data_type}
    with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
        for f in files:
            shutil.copyfile(f, Path(model.path) / f.name)
    model = bentoml.models.get(model.tag)  # the stored entry, not the folder it was written in
    log.info("model %s stored in %s", model.tag, model.path)
    return model


def build_bento(model: bentoml.Model) -> bentoml.Bento:
    """The bento of serving/service.py (see serving/bentofile.yaml) packing `model`, named after it."""
    return bentoml.bentos.build_bentofile(
        str(BENTOFILE),
        build_ctx=str(PROJECT_ROOT),
        name=model.tag.name,
        labels={"model": str(model.tag)},
        args={"model_tag": str(model.tag)},
        reload=True,  # the service module reads model_tag when imported; a stale import would pack another model
    )


def package(model_dir: Path, out_dir: Path) -> str:
    """Store the model, build its bento, write the bento tag to `out_dir`/bento.txt; returns the tag."""
    model = save_model(model_dir)
    bento = build_bento(model)
    io.write_text(f"{bento.tag}\n", out_dir / paths.BENTO_TAG_FILE)
    log.info("bento %s in %s (serve it with: bentoml serve %s)", bento.tag, bento.path, bento.tag)
    return str(bento.tag)
