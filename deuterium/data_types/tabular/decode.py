"""Torch-free, pandas-free: rows of a table -> the float32 matrix the ONNX graph takes (`features`).

One column of the matrix per used column of the training frame, in the order of the fitted `columns`
(preprocessing.json's `input.columns`): a numeric column as its value (NaN when missing), a categorical
column as the index of its level. What a string level is cannot live in an ONNX graph exported from torch,
so this lookup is the only preprocessing outside it; imputation, standardization and the categorical
encoding (one-hot, binary, eigen, label) are in the graph.

A missing categorical value is its own level (index `len(levels)`, H2O-3's NA level); a level not seen
in training scores as that missing level too (H2O-3 does the same), never as an error. Above
`max_categorical_features` levels a column is hashed into that many buckets (crc32 of the text), H2O-3's
feature hashing.

`encode` is used on whole frames in training and on one JSON row in the service, so both agree.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deuterium.data_types.base import Decoder
from deuterium.errors import InputError


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


WHOLE_NUMBER_TEXT = re.compile(r"([+-]?\d+)\.0*")
BOOL_TEXT = {"true": "True", "false": "False"}  # str(True), str(np.True_): a boolean column's levels


def level_text(value: Any) -> str:
    """A categorical value as its level's name: 3, 3.0, "3" and "3.0" are one level. A column that one
    bad cell made text holds "3.0" where a test frame's numeric column (or a JSON number) holds 3.0.
    Likewise true, "true", "TRUE" and "True" are one level: pandas reads all three spellings of a CSV
    as a boolean ("True"), and a client may send JSON's true or the text."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        if whole := WHOLE_NUMBER_TEXT.fullmatch(text):
            return str(int(whole.group(1)))
        if text.lower() in BOOL_TEXT:
            return BOOL_TEXT[text.lower()]
    return str(value)


def lookup(spec: dict) -> dict[str, int]:
    """Level name -> code; the names as level_text makes them (a model exported before it read "3.0" as
    "3" has "3.0" among its levels)."""
    codes: dict[str, int] = {}
    for i, name in enumerate(spec["levels"]):
        codes.setdefault(level_text(name), i)
    return codes


def level_index(spec: dict, value: Any, levels: dict[str, int] | None = None) -> int:
    """The graph's code of a categorical value; missing and unseen values are the missing level."""
    if _missing(value):
        return spec["n_codes"] - 1
    text = level_text(value)
    if spec.get("hashed"):
        return zlib.crc32(text.encode()) % (spec["n_codes"] - 1)
    return (levels if levels is not None else lookup(spec)).get(text, spec["n_codes"] - 1)


def encode(
    columns: list[dict], data: Mapping[str, Sequence], n: int, lookups: dict[str, dict] | None = None
) -> np.ndarray:
    """`data` (column name -> n values) as float32 [n, len(columns)], column-major; InputError naming a
    missing column or a value of the wrong type. `lookups`: each categorical column's level -> code, when already made."""
    # Filled a column at a time, so column-major (a column is contiguous there), and returned so: writing
    # the columns of a row-major MNIST frame (60,000 x 717) one by one made trainer.table take 1.29 s;
    # column-major 0.10 s, plus 0.4-0.65 s to copy it row-major, which training does not need (it
    # preprocesses chunks of rows into new tensors) (bench/h2o_mnist's training frame, this 2-core machine,
    # 2026-12-02).
    out = np.empty((len(columns), n), np.float32).T
    for j, spec in enumerate(columns):
        name = spec["name"]
        if name not in data:
            raise InputError(
                f"{name}: column missing; the model was trained with it (send null when unknown)"
            )
        values = data[name]
        if spec["kind"] == "categorical":
            levels = (lookups or {}).get(name) or lookup(spec)
            out[:, j] = [level_index(spec, v, levels) for v in values]
            continue
        try:
            column = np.asarray(
                [np.nan if _missing(v) else v for v in values]
                if not isinstance(values, np.ndarray)
                else values,
                dtype=np.float64,
            )
        except (TypeError, ValueError, OverflowError):
            raise InputError(_first_bad(name, values)) from None
        if column.dtype == object or column.shape != (n,):
            raise InputError(f"{name}: one number per row expected")
        if spec["kind"] == "offset" and np.isnan(column).any():  # the graph would add 0
            i = int(np.flatnonzero(np.isnan(column))[0])
            where = f" (row {i + 1})" if n > 1 else ""
            raise InputError(
                f"{name}: no value{where}; it is the offset (tabular.offset_column) the prediction adds, so "
                "every row needs one (0 for none)"
            )
        with np.errstate(over="ignore"):  # beyond float32: inf, refused just below
            out[:, j] = column
        infinite = np.flatnonzero(np.isinf(out[:, j]))  # inf, or beyond float32's range (the graph's input)
        if len(infinite):
            i = int(infinite[0])
            where = f" (row {i + 1})" if n > 1 else ""
            raise InputError(
                f"{name}: {float(column[i])!r}{where} is not a finite float32 number (a numeric column; null when "
                "unknown)"
            )
    return out


def _number(v: Any) -> bool:
    """A JSON value a numeric column takes: a number (however large: encode refuses it beyond float32's
    range, with its own message) or a missing one; not text, a bool, a list or an object."""
    if _missing(v):
        return True
    try:
        float(v)
    except OverflowError:  # an integer beyond any float
        return True
    except (TypeError, ValueError):
        return False
    return not isinstance(v, str | bool | list | dict)


def _first_bad(name: str, values) -> str:
    """The message for a numeric column that numpy could not read as float64: its first value that is not a
    number (a CSV column with one bad cell is text throughout, so the text "0.5" must count as a number)."""
    for i, v in enumerate(values):
        if _missing(v):
            continue
        try:
            float(v)
        except OverflowError:
            why = "is beyond float32's range"
        except (TypeError, ValueError):
            why = "is not a number"
        else:
            if not isinstance(v, bool | list | dict):
                continue
            why = "is not a number"
        where = f" (row {i + 1})" if len(values) > 1 else ""
        return f"{name}: {reprlib.repr(v)}{where} {why} (a numeric column; null when unknown)"
    return f"{name}: one number per row expected"


class TabularDecoder(Decoder):
    input_name = "features"

    def __init__(self, settings: dict, bounded: bool = True):
        super().__init__(settings, bounded)
        self.columns = list(settings.get("columns") or [])
        self.lookups = {c["name"]: lookup(c) for c in self.columns if c["kind"] == "categorical"}

    def load(self, source: Path | str | bytes | Mapping, name: str | None = None) -> np.ndarray:
        """A row: a mapping (column -> value), or a JSON object as bytes or text."""
        if not isinstance(source, Mapping):
            try:
                raw = source.read_bytes() if isinstance(source, Path) else source
                source = json.loads(raw)
            except RecursionError:  # nested deeper than Python's stack: JSON, but no row of values
                raise InputError(
                    f"{name or 'row'}: JSON nested too deeply for a row of column values"
                ) from None
            except (OSError, ValueError, UnicodeDecodeError) as err:
                raise InputError(f"{name or 'row'}: not a JSON object of column values ({err})") from None
            if not isinstance(source, dict):
                raise InputError(f"{name or 'row'}: a JSON object of column values expected")
            if list(source) == ["input"] and isinstance(source["input"], dict) and not self._has("input"):
                source = source["input"]  # a file saved as /predict_json's request body
        try:
            return self._row(source)
        except InputError as err:  # the input's name first, as the other data types' decoders say it
            raise InputError(
                f"{name}: {err}" if name and not str(err).startswith(name) else str(err)
            ) from None

    def _row(self, source: Mapping) -> np.ndarray:
        """Other keys than the model's columns are left alone (a client may send a whole record), but not
        without end: a row of millions of keys costs the service seconds and memory per request."""
        if len(source) > self.max_keys:
            raise InputError(
                f"{len(source)} keys: a row takes at most {self.max_keys} (the model's {len(self.columns)} "
                "columns, and others it does not read)"
            )
        for column in self.columns:
            value = source.get(column["name"])
            # reprlib: a 20 MB string sent as a value is not echoed whole into the answer and the log
            if column["kind"] != "categorical" and not _number(value):
                raise InputError(
                    f"{column['name']}: {reprlib.repr(value)} is not a number (a numeric column)"
                )
            if column["kind"] == "categorical" and isinstance(value, list | dict):
                raise InputError(
                    f"{column['name']}: {reprlib.repr(value)} is not a level (a categorical column)"
                )
        row = {
            c["name"]: [source[c["name"]]] for c in self.columns if c["name"] in source
        }  # only the model's
        return encode(self.columns, row, 1, self.lookups)[0]

    def _has(self, column: str) -> bool:
        return any(c["name"] == column for c in self.columns)

    @property
    def max_keys(self) -> int:
        return max(1000, 4 * len(self.columns))

    def max_json_bytes(self) -> int:
        """1 MiB, or 2 KiB a column for a wide table: a row of numbers is about 20 bytes a column."""
        return max(1 << 20, 2048 * len(self.columns))

    def from_json(self, payload: dict[str, Any]) -> np.ndarray:
        if not isinstance(payload, dict):
            raise InputError("input: an object of column values")
        return self.load(payload)

    def limits(self) -> dict:
        return {
            "n_columns": len(self.columns),
            "column_names": [c["name"] for c in self.columns][:100],
            "max_keys": self.max_keys,
            "max_json_bytes": self.max_json_bytes(),
        }


class FrameRows(Sequence):
    """A frame's rows as the pipeline's inputs: item i is row i as a dict; `.frame` is the whole frame, so
    training and the split stage work on columns at once."""

    def __init__(self, frame):
        self.frame = frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return FrameRows(self.frame.iloc[i])
        return {k: (None if _missing(v) else v) for k, v in self.frame.iloc[i].to_dict().items()}

    def __bool__(self) -> bool:
        return len(self) > 0
