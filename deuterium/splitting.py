"""Assign validation folds with scikit-learn splitters.

The result is the labeled data in one frame with a `fold` column: a row with fold k is
validation data for fold k and training data for every other fold; fold -1 is never
validation (the training rows of a holdout strategy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, train_test_split

from deuterium import io
from deuterium.errors import DataError
from deuterium.settings import DatasetSettings

log = logging.getLogger(__name__)

FOLD = "fold"
ROW_ID = "row_id"


def reserved_column(columns, ds: DatasetSettings) -> tuple[str, str] | None:
    """A labeled frame's column that clashes with the columns the split adds, and why (None: none does). The split
    writes each row's number as `row_id` and its fold as `fold` beside the user's columns, so a user column
    of either name would be lost or, in a table, learnt from as the fold; a `fold` column given as
    dataset.fold_column is the folds themselves."""
    names = {str(c) for c in columns}
    if ROW_ID in names:
        return ROW_ID, "the split adds each row's number under this name; rename the column"
    if FOLD in names and ds.fold_column != FOLD:
        return FOLD, (
            "the split writes the folds under this name; rename the column, or split by it with "
            f"dataset.validation_strategy: k_fold and dataset.fold_column: {FOLD}"
        )
    return None


# how k_fold deals rows into folds (a data type may choose; see DataType.fold_assignment):
# random (KFold, shuffled), modulo (row i -> fold i % k), stratified (StratifiedKFold on the label column)
FOLD_ASSIGNMENTS = ("random", "modulo", "stratified")


def split_seed(seed: int) -> int:
    """environment.seed, or with -1 a seed drawn now (the split stage records it in data_info.json, and
    data_sample reads it back, so the split, the sampling and a rerun of the same split agree)."""
    import random

    return seed if seed >= 0 else random.SystemRandom().randrange(2**31)


def assign_folds(
    frame: pd.DataFrame,
    ds: DatasetSettings,
    seed: int,
    assignment: str = "random",
    read: Callable[[Path], pd.DataFrame] = io.read_frame,
) -> pd.DataFrame:
    """`assignment` (one of FOLD_ASSIGNMENTS) is for k_fold without a fold_column; the others ignore it.
    `read` reads the custom holdout's file (the problem type's, which keeps class names as written)."""
    if assignment not in FOLD_ASSIGNMENTS:
        raise ValueError(f"fold assignment {assignment!r}; known: {', '.join(FOLD_ASSIGNMENTS)}")
    if clash := reserved_column(frame.columns, ds):
        raise DataError(f"{ds.train_dataframe}: column {clash[0]!r}: {clash[1]}")
    frame = frame.reset_index(drop=True).copy()
    frame.insert(0, ROW_ID, np.arange(len(frame)))
    seed = max(seed, 0)
    if ds.validation_strategy == "custom_holdout":
        valid = read(ds.validation_dataframe)
        if clash := reserved_column(valid.columns, ds):
            raise DataError(f"{ds.validation_dataframe}: column {clash[0]!r}: {clash[1]}")
        valid = valid.reset_index(drop=True)
        valid.insert(0, ROW_ID, np.arange(len(frame), len(frame) + len(valid)))
        frame[FOLD] = -1
        valid[FOLD] = 0
        out = pd.concat([frame, valid], ignore_index=True)
    elif ds.validation_strategy == "automatic_holdout":
        _, valid_idx = train_test_split(
            np.arange(len(frame)), test_size=ds.validation_size, random_state=seed
        )
        frame[FOLD] = -1
        frame.loc[valid_idx, FOLD] = 0
        out = frame
    elif ds.validation_strategy == "k_fold" and ds.fold_column:
        if ds.fold_column not in frame:
            raise DataError(f"{ds.train_dataframe}: fold_column {ds.fold_column!r} is not a column")
        folds = pd.to_numeric(frame[ds.fold_column], errors="coerce")
        bad = folds.isna() | (folds % 1 != 0) | (folds < -1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{ds.train_dataframe}: row {row + 1}: column {ds.fold_column!r} must hold whole fold numbers "
                "(-1: a row that only ever trains)"
            )
        # the given fold numbers, in order, become 0, 1, ...; -1 stays -1: train only, never validated
        codes = {v: i for i, v in enumerate(sorted(folds[folds >= 0].unique()))} | {-1: -1}
        frame[FOLD] = folds.map(codes).astype(int)
        out = frame
    else:
        if ds.validation_strategy == "grouped_k_fold":
            groups = frame[ds.group_column].astype(str)
            if groups.nunique() < ds.number_of_folds:
                raise DataError(
                    f"{ds.train_dataframe}: {groups.nunique()} groups in {ds.group_column!r} cannot fill "
                    f"{ds.number_of_folds} folds; lower dataset.number_of_folds"
                )
            splits = GroupKFold(n_splits=ds.number_of_folds, shuffle=True, random_state=seed).split(
                frame, groups=groups
            )
        else:
            if len(frame) < ds.number_of_folds:
                raise DataError(
                    f"{ds.train_dataframe}: {len(frame)} rows cannot fill {ds.number_of_folds} folds"
                )
            splits = _k_fold(frame, ds, seed, assignment)
        frame[FOLD] = -1
        for k, (_, valid_idx) in enumerate(splits):
            frame.loc[valid_idx, FOLD] = k
        out = frame
    return out


def _k_fold(frame: pd.DataFrame, ds: DatasetSettings, seed: int, assignment: str):
    k = ds.number_of_folds
    if assignment == "modulo":
        rows = np.arange(len(frame))
        return [(rows[rows % k != i], rows[rows % k == i]) for i in range(k)]
    if assignment == "stratified":
        labels = frame[ds.label_columns[0]].astype(str)  # a missing label is a class of its own
        counts = labels.value_counts()
        if counts.max() < k:
            raise DataError(
                f"{ds.train_dataframe}: stratified folds: no class of {ds.label_columns[0]!r} has "
                f"{k} rows (the most is {counts.max()}); lower dataset.number_of_folds"
            )
        return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(frame, labels)
    return KFold(n_splits=k, shuffle=True, random_state=seed).split(frame)


def sample_fold(
    frame: pd.DataFrame, trains: np.ndarray, valid: np.ndarray, ds: DatasetSettings, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One fold's (training, validation) row masks after dataset.data_sample of data_sample_choice.

    A row is kept by a draw tied to its row id and the seed, so it is kept or dropped alike in every
    fold and stage, and the rows pseudo_label adds do not change which labeled rows are kept.
    """
    if ds.data_sample >= 1:
        return trains, valid
    draws = np.random.default_rng(max(seed, 0)).random(int(frame[ROW_ID].max()) + 1)
    keep = draws[frame[ROW_ID].to_numpy()] < ds.data_sample
    if "train" in ds.data_sample_choice:
        trains = trains & keep
    if "validation" in ds.data_sample_choice:
        valid = valid & keep
    log.info(
        "data_sample %.3g of %s: %d training and %d validation rows",
        ds.data_sample,
        " and ".join(ds.data_sample_choice),
        trains.sum(),
        valid.sum(),
    )
    return trains, valid


def untrained_classes(folds: pd.DataFrame, column: str, selected: list[int]) -> list[str]:
    """One line per selected fold whose validation rows hold a class that none of its training rows has:
    the fold's model cannot learn it, and its rows count against the validation metrics. A warning, not
    an error (as scikit-learn's StratifiedKFold warns of a class smaller than the folds): a rare class
    of a real dataset is worth training on, but the user should know."""
    labels = folds[column].where(folds[column].isna(), folds[column].astype(str))  # as class_index reads them
    lines = []
    for fold in selected:
        valid = (folds[FOLD] == fold).to_numpy()
        unseen = sorted(set(labels[valid].dropna()) - set(labels[~valid].dropna()))
        if unseen:
            counts = labels[valid].value_counts()
            shown = ", ".join(f"{c!r} ({counts[c]} row{'s' if counts[c] > 1 else ''})" for c in unseen[:10])
            more = f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
            lines.append(
                f"fold {fold}: class {shown}{more} of {column!r} has no training rows, only validation ones: "
                "the model cannot learn it and it counts against the validation metrics; add rows of it "
                "(or drop its rows)"
            )
    return lines


def fold_frames(folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of one fold."""
    valid = folds[FOLD] == fold
    return folds[~valid].reset_index(drop=True), folds[valid].reset_index(drop=True)
