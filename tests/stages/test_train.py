import pandas as pd
import yaml
from safetensors.torch import load_file

from deuterium import config


def test_one_model_per_fold_with_its_resolved_config(pipeline):
    for fold in (0, 1):
        folder = pipeline.train / f"fold{fold}"
        weights = load_file(str(folder / "model.safetensors"))
        assert any(k.startswith("head.") for k in weights)
        exp = config.load(folder / "config.yaml")  # a run can start from it
        assert exp.training.epochs == 1


def test_out_of_fold_predictions_cover_every_row_once(pipeline):
    oof = pd.read_parquet(pipeline.train / "oof.parquet")
    folds = pd.read_parquet(pipeline.split / "folds.parquet")
    assert sorted(oof.row_id) == sorted(folds.row_id)
    probs = oof.filter(like="prob_")
    assert probs.shape[1] == 10
    assert ((probs.sum(axis=1) - 1).abs() < 1e-4).all()


def test_dvclive_curves_are_written(pipeline):
    metrics = pipeline.train / "dvclive" / "plots" / "metrics"
    assert (metrics / "fold0" / "train" / "loss.tsv").is_file()
    assert (metrics / "fold1" / "valid" / "Accuracy.tsv").is_file()


def test_checkpoint_of_the_last_epoch_is_kept_for_resuming(pipeline):
    assert (pipeline.checkpoints / "train" / "fold0" / "last.pt").is_file()
    assert (
        yaml.safe_load((pipeline.train / "fold0" / "config.yaml").read_text())["problem_type"]
        == "audio_classification"
    )
