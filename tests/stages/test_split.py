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


def test_class_names_are_kept_as_written(pipeline, tmp_path, monkeypatch):
    """Codes "01"/"02", classes named "NA" or "None", and integer classes in a column with an unlabelled
    (empty) row: pandas alone reads them as 1, 2, missing, and 1.0, 2.0; the classes are what the file says."""
    import yaml

    from stages import split

    frame = pd.read_csv(pipeline.root / "data/fsdd/train.csv")
    names = {0: "00", 1: "01", 2: "NA", 3: "None", 4: "null"}
    frame["code"] = [names.get(d, f"0{d}") for d in frame.digit]
    frame["digit"] = frame.digit.astype(object)
    frame.loc[0, ["code", "digit"]] = ""  # an unlabelled row: missing, not a class ""
    frame.to_csv(tmp_path / "train.csv", index=False)
    params = yaml.safe_load(pipeline.params.read_text())
    params["dataset"]["train_dataframe"] = str(tmp_path / "train.csv")
    monkeypatch.chdir(pipeline.root)
    for column, expected in (
        ("code", sorted({*names.values(), *(f"0{d}" for d in range(5, 10))})),
        ("digit", [str(d) for d in range(10)]),
    ):
        params["dataset"]["label_columns"] = [column]
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        split.main(tmp_path / "params.yaml", tmp_path / column)
        info = json.loads((tmp_path / column / "data_info.json").read_text())
        assert info["labels"] == expected
        folds = pd.read_parquet(tmp_path / column / "folds.parquet")
        assert folds[column].isna().tolist() == [True] + [False] * (len(frame) - 1)
