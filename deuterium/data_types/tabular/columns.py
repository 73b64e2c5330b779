"""Fit the table's columns on the training frame (split stage): which columns the model uses, their kind,
training mean and standard deviation, categorical levels; and the checks that name the bad column.

pandas and scikit-learn: imported by the split and train stages only, never by the scoring side.
"""

from __future__ import annotations

import logging
import reprlib

import numpy as np
import pandas as pd

from deuterium.data_types.tabular.decode import level_text
from deuterium.errors import ConfigError, DataError
from deuterium.splitting import FOLD, ROW_ID

log = logging.getLogger(__name__)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _beyond_float32(values: np.ndarray) -> np.ndarray:
    """Row positions of numbers the graph's float32 input cannot hold (inf, or beyond +-3.4e38); not NaN."""
    return np.flatnonzero(~np.isnan(values) & ~(np.abs(values) <= FLOAT32_MAX))


def _not_float32(value: float) -> str:
    return (
        f"{value!r} is not a finite float32 number (an empty cell for unknown, or a number within +-3.4e38)"
    )


def check_response(frame: pd.DataFrame, exp) -> None:
    """The response column exists, and its kind fits the distribution."""
    s, response = exp.tabular, exp.dataset.label_columns[0]
    if response not in frame.columns:
        raise DataError(
            f"response column {response!r} (dataset.label_columns) is not in the training frame; "
            f"it has: {', '.join(map(str, frame.columns[:20]))}"
        )
    task = exp.problem_type.removeprefix("tabular_")
    numeric = pd.api.types.is_numeric_dtype(frame[response])
    if task == "classification" and s.distribution not in ("auto", "bernoulli", "multinomial"):
        raise ConfigError(
            f"response column {response!r} is categorical (tabular_classification) and tabular.distribution "
            f"is {s.distribution!r}: a categorical response takes auto, bernoulli or multinomial"
        )
    if task == "regression" and (not numeric or s.distribution in ("bernoulli", "multinomial")):
        raise ConfigError(
            f"response column {response!r} is {'not numeric' if not numeric else 'numeric'} and the problem is "
            f"tabular_regression with distribution {s.distribution!r}: regression needs a numeric response "
            "and a distribution other than bernoulli/multinomial (or use tabular_classification)"
        )
    if task == "regression" and numeric and (bad := _outside_domain(frame[response], s.distribution)):
        rows, reason = bad
        first = _plain_number(frame[response].iloc[rows[0] - 1])
        raise DataError(
            f"response column {response!r}, row(s) {', '.join(map(str, rows))} ({first!r}...): {reason}"
        )
    if task == "classification" and s.distribution == "bernoulli" and frame[response].nunique() != 2:
        raise ConfigError(
            f"tabular.distribution bernoulli needs 2 classes; response column {response!r} has "
            f"{frame[response].nunique()}"
        )


DOMAIN = {  # H2O-3's checks of the response for these distributions, with its words
    "poisson": (lambda y: y < 0, "non-negative"),
    "tweedie": (lambda y: y < 0, "non-negative"),
    "gamma": (lambda y: y <= 0, "positive"),
}


def _plain_number(value) -> float:
    return float(pd.to_numeric(value, errors="coerce"))


def _outside_domain(values: pd.Series, distribution: str, most: int = 10) -> tuple[list[int], str] | None:
    """The 1-based rows whose response the distribution cannot take (a negative count for poisson: its
    deviance is NaN, and early stopping on it kept the first epoch's model), and why; None when all fit."""
    if distribution not in DOMAIN:
        return None
    outside, word = DOMAIN[distribution]
    y = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    rows = np.flatnonzero(outside(np.nan_to_num(y, nan=1.0)))
    if not len(rows):
        return None
    return [int(i) + 1 for i in rows[:most]], (
        f"tabular.distribution {distribution} needs a {word} response (H2O-3: 'Response must "
        f"be {word} for {distribution.capitalize()}'); {len(rows)} row(s) are not: choose another distribution "
        "(gaussian, huber, laplace) or fix those values"
    )


def _say_if_mostly_numbers(name: str, values: pd.Series) -> None:
    """Log a text column most of whose values are numbers: one stray '?' or '1,5' in a CSV makes a numeric
    column text, and so a categorical one of as many levels as values, without a word otherwise."""
    present = values.dropna()
    if pd.api.types.is_bool_dtype(values) or len(present) < 10:
        return
    numbers = pd.to_numeric(present.astype(str), errors="coerce")
    if 0.9 <= numbers.notna().mean() < 1:
        odd = present[numbers.isna()].astype(str).unique()[:5]
        log.warning(
            "column %r: %d of %d values are numbers, but %s made it text: it is used as a categorical column; "
            "make those cells empty (or a number) to use it as numbers",
            name,
            int(numbers.notna().sum()),
            len(present),
            ", ".join(repr(v) for v in odd),
        )
        return
    text = present.astype(str)
    commas = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
    if text.str.contains(",", regex=False).any() and commas.notna().mean() >= 0.9:
        log.warning(
            "column %r: its values are numbers written with a decimal comma (%s): pandas reads them as text, "
            "so it is used as a categorical column; save the file with decimal points to use it as numbers",
            name,
            ", ".join(repr(v) for v in text[text.str.contains(",", regex=False)].unique()[:3]),
        )


def _not_inputs(exp) -> set[str]:
    """Columns of the training frame that are not the model's inputs (the split's own among them)."""
    s, d = exp.tabular, exp.dataset
    skip = {*d.label_columns, *s.ignored_columns, ROW_ID, FOLD}
    return skip | {c for c in (s.weights_column, s.offset_column, d.fold_column, d.group_column) if c}


def check_rows(frame: pd.DataFrame, train: pd.DataFrame, exp, most: int = 10) -> list[tuple]:
    """The validate stage's look at a frame's input columns (see DataType.check_rows): a training column
    the frame lacks, text in a column the training frame has as numbers, a number beyond float32; the
    train stage or the evaluate stage would otherwise stop on them after training, or later."""
    skip = _not_inputs(exp) - ({exp.tabular.offset_column} - {None})  # the offset is read from every frame
    found: list[tuple] = _training_frame(train, exp, most) if frame is train else []
    for name in train.columns:
        if name in skip or (exp.tabular.ignore_const_cols and train[name].nunique(dropna=False) == 1):
            continue
        if name not in frame.columns:
            found.append(
                (
                    None,
                    str(name),
                    None,
                    "column missing: the model trains on it (the training dataframe has it); "
                    "add it, with empty cells where unknown",
                )
            )
            continue
        numeric = pd.api.types.is_numeric_dtype(train[name]) and not pd.api.types.is_bool_dtype(train[name])
        if not numeric:
            continue
        values = frame[name].reset_index(drop=True)
        numbers = pd.to_numeric(values, errors="coerce")
        for i in np.flatnonzero((values.notna() & numbers.isna()).to_numpy())[:most]:
            found.append(
                (
                    int(i),
                    str(name),
                    values[i],
                    f"{reprlib.repr(values[i])} is not a number, and the training "
                    "dataframe's column is numeric (an empty cell for unknown)",
                )
            )
        for i in _beyond_float32(numbers.to_numpy(dtype=np.float64, na_value=np.nan))[:most]:
            found.append((int(i), str(name), float(numbers[i]), _not_float32(float(numbers[i]))))
    offset = exp.tabular.offset_column
    if offset and offset in frame.columns:
        empty = frame[offset].reset_index(drop=True).isna().to_numpy()
        for i in np.flatnonzero(empty)[:most]:
            found.append((int(i), str(offset), None, EMPTY_OFFSET))
    return found


def row_weights(frame: pd.DataFrame, column: str) -> np.ndarray:
    """tabular.weights_column's values as training and the metrics take them: an empty or unreadable cell
    is 0 (the row does not count)."""
    return pd.to_numeric(frame[column], errors="coerce").fillna(0).to_numpy(np.float64)


EMPTY_OFFSET = (
    "no offset (tabular.offset_column): every prediction adds its row's offset, so an empty one would be "
    "taken as 0; write the row's offset (0 for none)"
)


def _training_frame(train: pd.DataFrame, exp, most: int) -> list[tuple]:
    """What the split and train stages would stop on in the training frame, found by validate with the
    other problems: an all-missing input column, a negative weight, a response the distribution cannot
    take (row, column, value, reason; row 0-based)."""
    s, found = exp.tabular, []
    for name in train.columns:
        if name not in _not_inputs(exp) and train[name].isna().all():
            found.append((None, str(name), None, _all_missing(name).split(": ", 1)[1]))
    if s.weights_column in train.columns:
        w = pd.to_numeric(train[s.weights_column], errors="coerce")
        for i in np.flatnonzero((w < 0).to_numpy())[:most]:
            found.append(
                (int(i), s.weights_column, float(w[i]), "a negative weight (tabular.weights_column)")
            )
    response = exp.dataset.label_columns[0]
    if exp.problem_type == "tabular_regression" and response in train.columns:
        if bad := _outside_domain(train[response], s.distribution, most):
            rows, reason = bad
            values = [_plain_number(train[response].iloc[r - 1]) for r in rows]
            found += [(r - 1, response, v, f"{v!r}: {reason}") for r, v in zip(rows, values, strict=True)]
    return found


def fit(frame: pd.DataFrame, exp) -> list[dict]:
    """The used columns in frame order; each {name, kind, ...} (see decode.py for what scoring reads)."""
    s = exp.tabular
    check_response(frame, exp)
    skip = _not_inputs(exp)
    for name, what in (
        (s.weights_column, "weights_column"),
        (s.offset_column, "offset_column"),
        *((c, "ignored_columns") for c in s.ignored_columns),
    ):
        if name and name not in frame.columns:
            raise DataError(f"tabular.{what}: column {name!r} is not in the training frame")
    columns = []
    for name in frame.columns:
        if name in skip:
            continue
        values = frame[name]
        if str(name).startswith("Unnamed: "):
            _say_unnamed(str(name), values)
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            if values.isna().all():
                raise DataError(_all_missing(name))
            if not (s.ignore_const_cols and values.nunique(dropna=False) == 1):
                _say_if_mostly_numbers(str(name), values)
                columns.append(_categorical(str(name), values, s))
            continue
        # numeric: one float64 copy serves every check: MNIST's 784 columns took 0.25 s, against 0.56-0.60 s
        # with pandas' isna and nunique and numpy's nan-functions per column (this machine, 2026-12-02)
        v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(v)
        present = v[~missing] if missing.any() else v
        if not len(present):
            raise DataError(_all_missing(name))
        beyond = _beyond_float32(v)  # validate names these first; the split stage may run on its own
        if len(beyond):
            i = int(beyond[0])
            raise DataError(
                f"column {name!r}: {float(v[i])!r} (row {i + 1}) is not a finite float32 number; "
                "make the cell empty (missing) or a number within +-3.4e38"
            )
        if s.ignore_const_cols and len(present) == len(v) and present.min() == present.max():
            continue  # one value and no missing one: pandas' nunique(dropna=False) == 1
        sd = float(np.std(present, ddof=1)) if np.isfinite(present).sum() > 1 else 1.0
        columns.append(
            {"name": str(name), "kind": "numeric", "mean": float(np.mean(present)), "sd": sd or 1.0}
        )
    if s.offset_column:
        columns.append({"name": s.offset_column, "kind": "offset"})
    if not any(c["kind"] != "offset" for c in columns):
        raise DataError("no usable input column: every column is the response, ignored, or constant")
    return columns


def _all_missing(name) -> str:
    return f"column {name!r}: every value is missing; drop it or list it in tabular.ignored_columns"


def decoder_values(values: pd.Series) -> np.ndarray:
    """A column's cells as the decoder takes them from a JSON row (and `serving.score` from a file's row):
    a missing cell None, a date or a duration its text as pandas writes one value ("2020-02-24 00:00:00").
    numpy's own forms differ: pandas' NA (a nullable column of a Parquet file) is neither None nor NaN,
    and a datetime64 reads "2020-02-24T00:00:00.000000", a level that the fitted columns would not hold."""
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_timedelta64_dtype(values):
        return np.array([None if pd.isna(v) else str(v) for v in values.astype(object)], dtype=object)
    if isinstance(values.dtype, pd.api.extensions.ExtensionDtype):  # nullable, categorical, string
        return values.to_numpy(dtype=object, na_value=None)
    return values.to_numpy()


def _say_unnamed(name: str, values: pd.Series) -> None:
    """pandas names a column with an empty header cell 'Unnamed: N'; most often it is the row index that
    pandas' to_csv writes by default. It would be an input that every request must send by that name."""
    index = pd.api.types.is_integer_dtype(values) and np.array_equal(
        values.to_numpy(), np.arange(len(values))
    )
    log.warning(
        "column %r has no name in the header%s: it is used as an input, so every row scored must have it; "
        "list it in tabular.ignored_columns, or save the file without it (pandas: to_csv(index=False))",
        name,
        " and holds the row numbers 0, 1, 2... (pandas' index, saved by to_csv)" if index else "",
    )


def _categorical(name: str, values: pd.Series, s) -> dict:
    values = pd.Series(decoder_values(values), dtype=object)
    texts = values.dropna().map(level_text)
    levels = sorted(texts.unique().tolist())
    if len(texts) >= 20 and len(levels) == len(texts):
        log.warning(
            "column %r: every one of its %d values is different (an identifier, a date or free text?): as a "
            "categorical column it tells the model nothing about a row it has not seen; list it in "
            "tabular.ignored_columns unless that is what you want",
            name,
            len(texts),
        )
    spec: dict = {"name": name, "kind": "categorical", "levels": levels}
    if len(levels) > s.max_categorical_features:  # H2O-3's feature hashing
        spec.update(levels=[], hashed=True, n_codes=s.max_categorical_features + 1)
        log.info("column %r: %d levels hashed into %d buckets", name, len(levels), s.max_categorical_features)
    else:
        spec["n_codes"] = len(levels) + 1  # + the missing level
    from deuterium.data_types.tabular.decode import level_index

    codes = np.array([level_index(spec, v) for v in values.tolist()], dtype=np.float64)
    spec["code_mean"], spec["code_sd"] = float(codes.mean()), float(codes.std() or 1.0)
    if s.categorical_encoding == "eigen":
        from sklearn.decomposition import PCA

        onehot = np.eye(spec["n_codes"])[codes.astype(int)]
        pca = PCA(n_components=1).fit(onehot)
        spec["eigen"] = pca.components_[0].tolist()  # the one-hot row projected on it
    return spec


def fit_all(frame: pd.DataFrame, exp) -> dict:
    """What the split stage records for the tabular section: the columns and, for regression with the
    identity link, the response's mean and sd (the net learns the standardized response, as H2O-3's)."""
    chosen: dict = {"columns": fit(frame, exp)}
    if exp.problem_type == "tabular_regression" and exp.tabular.distribution not in (
        "poisson",
        "gamma",
        "tweedie",
    ):
        y = pd.to_numeric(frame[exp.dataset.label_columns[0]], errors="coerce").to_numpy(np.float64)
        sd = float(np.nanstd(y))
        chosen["response_scale"] = [float(np.nanmean(y)), sd if sd > 0 else 1.0]
    return chosen
