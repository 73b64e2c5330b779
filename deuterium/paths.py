"""Where each stage writes. dvc.yaml passes these same paths; this module is their one Python home."""

from pathlib import Path

ARTIFACTS = Path("artifacts")
SETTINGS = ARTIFACTS / "settings"
PREPARE = ARTIFACTS / "prepare"
VALIDATE = ARTIFACTS / "validate"
SPLIT = ARTIFACTS / "split"
TRAIN = ARTIFACTS / "train"
PSEUDO = ARTIFACTS / "pseudo"
EVALUATE = ARTIFACTS / "evaluate"
EXPORT = ARTIFACTS / "export"
PACKAGE = ARTIFACTS / "package"
SEARCH = ARTIFACTS / "search"  # the hyperparameter search (not a dvc.yaml stage)
CHECKPOINTS = ARTIFACTS / "checkpoints"  # persisted between runs for resuming; never cached

METRICS = Path("metrics.json")
PLOTS = Path("plots")

DATA_SETTINGS_FILE = "data.json"
PREPARE_SETTINGS_FILE = "prepare.json"
FOLDS_FILE = "folds.parquet"
DATA_INFO_FILE = "data_info.json"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
OOF_FILE = "oof.parquet"
SEEDS_FILE = "seeds.json"  # every seed's score per fold, with number_of_seeds > 1
ONNX_FILE = "model.onnx"
PREPROCESSING_FILE = "preprocessing.json"
PARITY_FILE = "parity.json"
BENTO_TAG_FILE = "bento.txt"


def fold_dir(root: Path, fold: int) -> Path:
    return root / f"fold{fold}"
