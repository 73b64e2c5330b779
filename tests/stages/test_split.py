import json

import pandas as pd


def test_folds_never_split_a_speaker(pipeline):
    folds = pd.read_parquet(pipeline.split / "folds.parquet")
    assert set(folds.fold) == {0, 1}
    assert folds.groupby("speaker").fold.nunique().max() == 1
    assert len(folds) == len(pd.read_csv(pipeline.root / "data/fsdd/train.csv"))


def test_data_info_records_the_classes(pipeline):
    info = json.loads((pipeline.split / "data_info.json").read_text())
    assert info["labels"] == [str(d) for d in range(10)]
    assert info["target_names"] == ["digit"]


def test_seed_minus_one_is_drawn_once_and_recorded_for_the_sampling(pipeline, tmp_path, monkeypatch):
    """With environment.seed -1 the split draws a seed, records it, and training's data_sample uses it."""
    import yaml

    from deuterium import config, io, splitting
    from stages import split

    params = yaml.safe_load(pipeline.params.read_text())
    params["environment"]["seed"] = -1
    params["dataset"]["validation_strategy"] = "k_fold"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(pipeline.root)
    split.main(tmp_path / "params.yaml", tmp_path / "split")
    info = json.loads((tmp_path / "split" / "data_info.json").read_text())
    seed = info["split_seed"]
    assert seed >= 0
    exp = config.load(tmp_path / "params.yaml")
    again = splitting.assign_folds(io.read_frame(exp.dataset.train_dataframe), exp.dataset, seed)
    assert again.fold.tolist() == pd.read_parquet(tmp_path / "split" / "folds.parquet").fold.tolist()
