import numpy as np
import pandas as pd
import pytest
from projects import merge, tiny_params

from deuterium import config, splitting
from deuterium.errors import DataError


def frame(n=60) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "file": [f"{i}.wav" for i in range(n)],
            "digit": np.arange(n) % 10,
            "speaker": [f"s{i % 6}" for i in range(n)],
        }
    )


def dataset(**kw):
    return config.parse(merge(tiny_params(), {"dataset": kw})).dataset


def test_grouped_k_fold_keeps_groups_together():
    folds = splitting.assign_folds(frame(), dataset(number_of_folds=3), seed=1)
    assert sorted(folds.fold.unique()) == [0, 1, 2]
    assert folds.groupby("speaker").fold.nunique().max() == 1


def test_k_fold_random_and_from_a_fold_column():
    ds = dataset(validation_strategy="k_fold", group_column=None, number_of_folds=4)
    folds = splitting.assign_folds(frame(), ds, seed=1)
    assert folds.fold.value_counts().sort_index().tolist() == [15, 15, 15, 15]
    given = frame().assign(my_fold=lambda f: (np.arange(len(f)) % 2) * 10)
    ds = dataset(validation_strategy="k_fold", group_column=None, number_of_folds=2, fold_column="my_fold")
    folds = splitting.assign_folds(given, ds, seed=1)
    assert (folds.fold == (np.arange(60) % 2)).all()


def test_fold_column_with_text_names_the_row():
    given = frame().assign(my_fold=["x"] + [0] * 59)
    ds = dataset(validation_strategy="k_fold", group_column=None, number_of_folds=2, fold_column="my_fold")
    with pytest.raises(DataError, match="row 1.*my_fold"):
        splitting.assign_folds(given, ds, seed=1)


def test_automatic_holdout_and_custom_holdout(tmp_path):
    folds = splitting.assign_folds(
        frame(), dataset(validation_strategy="automatic_holdout", validation_size=0.25), 1
    )
    assert (folds.fold == 0).sum() == 15 and (folds.fold == -1).sum() == 45
    valid = tmp_path / "valid.csv"
    frame(12).to_csv(valid, index=False)
    ds = dataset(validation_strategy="custom_holdout", validation_dataframe=str(valid))
    folds = splitting.assign_folds(frame(), ds, 1)
    assert (folds.fold == 0).sum() == 12 and (folds.fold == -1).sum() == 60
    assert folds.row_id.is_unique


def test_too_few_groups_for_the_folds():
    with pytest.raises(DataError, match="6 groups"):
        splitting.assign_folds(frame(), dataset(number_of_folds=7), 1)


@pytest.mark.parametrize("choice", [["train", "validation"], ["train"], ["validation"]])
def test_data_sample_keeps_a_fraction_of_the_chosen_rows(choice):
    ds = dataset(number_of_folds=3, data_sample=0.2, data_sample_choice=choice)
    folds = splitting.assign_folds(frame(3000), ds, 1)
    assert len(folds) == 3000  # sampled per fold, when training
    valid = (folds.fold == 0).to_numpy()
    trains, kept_valid = splitting.sample_fold(folds, ~valid, valid, ds, 1)
    assert abs(trains.sum() / (~valid).sum() - (0.2 if "train" in choice else 1)) < 0.05
    assert abs(kept_valid.sum() / valid.sum() - (0.2 if "validation" in choice else 1)) < 0.05
    # the same rows in every fold: a row's draw does not depend on the fold
    other = (folds.fold == 1).to_numpy()
    trains1, _ = splitting.sample_fold(folds, ~other, other, ds, 1)
    both = ~valid & ~other
    assert (trains[both] == trains1[both]).all()


def test_a_fold_column_minus_one_means_train_only():
    """Issue 15: -1 in a given fold column was remapped to fold 0 and validated on."""
    given = frame().assign(my_fold=[-1] * 10 + [0] * 25 + [1] * 25)
    ds = dataset(validation_strategy="k_fold", group_column=None, number_of_folds=2, fold_column="my_fold")
    folds = splitting.assign_folds(given, ds, seed=1)
    assert (folds.fold[:10] == -1).all() and set(folds.fold[10:]) == {0, 1}
    with pytest.raises(DataError, match="row 1.*-1: a row that only ever trains"):
        splitting.assign_folds(frame().assign(my_fold=[-2] + [0] * 59), ds, seed=1)


def test_seed_minus_one_draws_one_split_seed_for_the_split_and_the_sampling(monkeypatch):
    """Issue 15: with seed -1 the split and data_sample used seed 0 while training drew a random one."""
    assert splitting.split_seed(7) == 7
    drawn = {splitting.split_seed(-1) for _ in range(5)}
    assert len(drawn) > 1 and all(s >= 0 for s in drawn)  # a real draw, not a fixed 0


def test_fold_assignments_of_k_fold():
    ds = dataset(validation_strategy="k_fold", number_of_folds=4, label_columns=["digit"])
    modulo = splitting.assign_folds(frame(), ds, 1, "modulo")
    assert modulo.fold.tolist() == [i % 4 for i in range(60)]
    stratified = splitting.assign_folds(frame(), ds, 1, "stratified")
    assert stratified.groupby("digit").fold.nunique().min() == 4  # each digit's 6 rows in all 4 folds
    with pytest.raises(DataError, match="no class of 'digit' has 4 rows"):
        splitting.assign_folds(frame(12), ds, 1, "stratified")
    with pytest.raises(ValueError, match="fold assignment 'sequential'"):
        splitting.assign_folds(frame(), ds, 1, "sequential")


def test_a_column_named_as_the_splits_own_is_refused_with_its_name(tmp_path):
    """row_id and fold are the columns the split adds: a user column of either name would be lost (or, in a
    table, learnt from as the fold), so the split names it; a `fold` column that is the fold_column is fine."""
    with pytest.raises(DataError, match=r"column 'row_id': the split adds each row's number"):
        splitting.assign_folds(frame().assign(row_id=7), dataset(), seed=1)
    with pytest.raises(DataError, match=r"column 'fold': .*dataset.fold_column: fold"):
        splitting.assign_folds(frame().assign(fold=1), dataset(), seed=1)
    given = frame().assign(fold=np.arange(60) % 2)
    ds = dataset(validation_strategy="k_fold", group_column=None, number_of_folds=2, fold_column="fold")
    assert (splitting.assign_folds(given, ds, seed=1).fold == np.arange(60) % 2).all()
    valid = tmp_path / "valid.csv"
    frame(12).assign(row_id=1).to_csv(valid, index=False)
    ds = dataset(validation_strategy="custom_holdout", validation_dataframe=str(valid))
    with pytest.raises(DataError, match=r"valid.csv: column 'row_id'"):
        splitting.assign_folds(frame(), ds, 1)


def test_a_class_only_in_a_folds_validation_rows_is_named():
    rows = frame().assign(digit=lambda f: f.digit.astype(str))
    rows.loc[7, "digit"] = "hexagon"  # one row: in one fold's validation rows, in the others' training rows
    folds = splitting.assign_folds(rows, dataset(validation_strategy="k_fold", number_of_folds=3), seed=1)
    fold = int(folds.loc[folds.digit == "hexagon", "fold"].iloc[0])
    lines = splitting.untrained_classes(folds, "digit", [0, 1, 2])
    assert len(lines) == 1 and lines[0].startswith(f"fold {fold}: class 'hexagon' (1 row) of 'digit'")
    assert splitting.untrained_classes(folds, "digit", [k for k in range(3) if k != fold]) == []
    holdout = splitting.assign_folds(rows, dataset(validation_strategy="automatic_holdout"), seed=1)
    in_valid = int(holdout.loc[holdout.digit == "hexagon", "fold"].iloc[0]) == 0
    assert bool(splitting.untrained_classes(holdout, "digit", [0])) == in_valid
