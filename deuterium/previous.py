"""Start from a previous experiment (H2O Hydrogen Torch's "From experiment" and "Use previous experiment weights").

`previous_experiment` names a folder of trained models: what the train or pseudo_label stage wrote
(`artifacts/train`: fold{k}/model.safetensors and config.yaml, data_info.json) or one model's
folder. Three things come from it:
- settings: every key params.yaml leaves out is taken from the previous experiment's resolved config
  (`config.load` merges them in before validation);
- weights, with use_previous_experiment_weights: each fold's model starts from the previous fold{k}
  model (the first previous model when it has no fold k). The problem type and backbone must match;
  layers whose shape differs (a head for other classes) keep their fresh initialisation;
- inference only, with dataset.train_dataframe null: the previous models are this experiment's
  models, and evaluate and export score the test dataframe with them.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from deuterium import io, paths
from deuterium.errors import ConfigError

log = logging.getLogger(__name__)

NOT_INHERITED = ("previous_experiment", "use_previous_experiment_weights")


def model_folders(root: Path) -> list[Path]:
    """The model folders of a previous experiment, fold0 first."""
    root = Path(root)
    if (root / paths.MODEL_FILE).is_file():
        return [root]
    found = [*root.glob(f"fold*/{paths.MODEL_FILE}"), *root.glob(f"fold*/seed*/{paths.MODEL_FILE}")]
    folders = sorted(p.parent for p in found)
    if not folders:
        raise ConfigError(
            f"previous_experiment {root}: no trained models there; name the folder the train stage wrote "
            f"(for example another project's artifacts/train) or one model's folder ({paths.MODEL_FILE} "
            f"and {paths.CONFIG_FILE})"
        )
    return folders


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def inherit(data: dict) -> dict:
    """params as given, with the keys they leave out taken from previous_experiment's resolved config."""
    root = data.get("previous_experiment")
    if root is None:
        return data
    source = model_folders(Path(root))[0] / paths.CONFIG_FILE
    try:
        base = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"previous_experiment: cannot read {source} ({err})") from None
    if not isinstance(base, dict):
        raise ConfigError(f"previous_experiment: {source} is not a resolved config")
    for key in NOT_INHERITED:
        base.pop(key, None)
    return _merge(base, data)


def data_info(root: Path) -> dict:
    """The labels the previous models were trained with (written next to them by the train stage)."""
    root = Path(root)
    for candidate in (root, root.parent, root.parent.parent, root.parent / "split"):
        if (candidate / paths.DATA_INFO_FILE).is_file():
            return io.read_json(candidate / paths.DATA_INFO_FILE)
    raise ConfigError(f"previous_experiment {root}: no {paths.DATA_INFO_FILE} with the models' labels")


def copy_models(root: Path, out_dir: Path) -> None:
    """Inference only: the previous models become this experiment's trained models (no oof rows)."""
    import pandas as pd

    from deuterium import splitting

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for k, folder in enumerate(model_folders(root)):
        dest = tmp / (folder.relative_to(root) if folder != Path(root) else Path(f"fold{k}"))
        dest.mkdir(parents=True)
        for name in (paths.MODEL_FILE, paths.CONFIG_FILE):
            shutil.copy(folder / name, dest / name)
    io.write_json(data_info(root), tmp / paths.DATA_INFO_FILE)
    io.write_frame(pd.DataFrame(columns=[splitting.ROW_ID, splitting.FOLD]), tmp / paths.OOF_FILE)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("train_dataframe null: the models of %s pass through to %s", root, out_dir)


def load_weights(model, exp, fold: int) -> None:
    """Start `model` (fold `fold` of `exp`) from the previous experiment's weights, when asked to."""
    if not exp.use_previous_experiment_weights:
        return
    from safetensors.torch import load_file

    from deuterium import config

    folders = model_folders(exp.previous_experiment)
    folder = next(
        (f for f in folders if f.name == f"fold{fold}" or f.parent.name == f"fold{fold}"), folders[0]
    )
    prev = config.load(folder / paths.CONFIG_FILE, inherit=False)
    for what, mine, theirs in (
        ("problem_type", exp.problem_type, prev.problem_type),
        ("architecture.backbone", exp.architecture.backbone, prev.architecture.backbone),
    ):
        if mine != theirs:
            raise ConfigError(
                f"use_previous_experiment_weights: the previous experiment's {what} is {theirs!r}, this one's "
                f"is {mine!r}; weights carry over only between experiments of the same problem type and backbone"
            )
    state = load_file(str(folder / paths.MODEL_FILE))
    own = model.state_dict()
    # the target scale stays this data's (set_output_scale): the loss standardizes by it
    usable = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and not k.startswith("output_scale.")
    }
    fresh = sorted(k for k in own if k not in usable)
    if not any(k.startswith("backbone.") for k in usable):
        raise ConfigError(
            f"use_previous_experiment_weights: no backbone weights of {folder} fit this model "
            "(the data type's input channels or the architecture differ)"
        )
    model.load_state_dict(usable, strict=False)
    log.info(
        "fold %d: weights from %s%s",
        fold,
        folder,
        f"; kept fresh (shapes differ): {', '.join(fresh)}" if fresh else "",
    )
