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
