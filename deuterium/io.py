"""Dataframes and small JSON artifacts in and out, with errors that name the file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES  # read_csv's own missing markers (no public name)

from deuterium.errors import DataError


def read_frame(path: Path | str, text_columns: Iterable[str] = ()) -> pd.DataFrame:
    """A dataframe file as pandas reads it, except `text_columns` (class names), which keep the text as
    written: pandas would read the classes "01" and "02" as the numbers 1 and 2, a class "NA" or "None"
    as missing, and the classes 1 and 2 of a column with an empty cell as 1.0 and 2.0. An empty cell
    there is missing (an unlabelled row)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such dataframe file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".tsv"):
        raise DataError(f"{path}: unsupported dataframe format {path.suffix!r}; use .csv, .tsv or .parquet")
    sep = "\t" if suffix == ".tsv" else ","
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0].dropna()
        names = pd.read_csv(path, sep=sep, nrows=0).columns  # as pandas names them ("Unnamed: 2")
        text = [c for c in dict.fromkeys(text_columns) if c in names]
        frame = pd.read_csv(path, sep=sep, **_as_text(names, text))
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path)) from None
    except Exception as err:  # pandas/pyarrow raise many types for a broken file
        reason = f"{type(err).__name__}: {err}"
        raise DataError(
            f"{path}: cannot be read as a dataframe ({reason}){_other_separator(path, sep)}"
        ) from None
    if frame.shape[1] == 1 and (hint := _other_separator(path, sep)):
        raise DataError(f"{path}: the header is one column, {str(frame.columns[0])[:80]!r}{hint}")
    # pandas renames a second `price` to `price.1`: a column the user never named, found missing later
    twice = sorted(set(header[header.duplicated()]))
    if twice:
        raise DataError(f"{path}: column(s) {twice} appear more than once in the header; rename them")
    for column in text:
        frame[column] = frame[column].where(frame[column].str.strip() != "", None)
    return frame


def _as_text(names: pd.Index, text: list[str]) -> dict:
    """read_csv's arguments that read `text` as written and every other column as pandas does: its missing
    markers ("NA", "None", "null"...) are per column only when keep_default_na is off, so they are listed for
    the others (one parse of the file, not one more per text column)."""
    if not text:
        return {}
    markers = sorted(STR_NA_VALUES)
    na_values = {c: ([""] if c in text else markers) for c in names}
    return {"dtype": dict.fromkeys(text, str), "keep_default_na": False, "na_values": na_values}


def _not_utf8(path: Path) -> str:
    """Name the first line that is not UTF-8 (pandas' own message gives a byte offset into a buffer)."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                text = line.decode("latin-1").rstrip("\r\n")
                return (
                    f"{path}: line {number} is not UTF-8 text (byte {line[err.start]:#04x} in "
                    f"{text[:80]!r}): save the file as UTF-8 (a spreadsheet's 'CSV UTF-8')"
                )
    return f"{path}: not UTF-8 text: save the file as UTF-8 (a spreadsheet's 'CSV UTF-8')"


def _other_separator(path: Path, sep: str) -> str:
    """A hint when the first line is separated by something other than `sep` (a spreadsheet's export in
    a locale that writes decimal commas separates by ';'); "" when it is not."""
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            first = f.readline(100_000)
    except OSError:
        return ""
    if sep in first:
        return ""
    found = next((c for c in (";", "\t", "|", ",") if c != sep and c in first), None)
    if found is None:
        return ""
    if found == ",":  # a comma-separated file named .tsv
        return "; its first line is separated by ',': name the file .csv"
    if found == "\t":
        return "; its first line is separated by tabs: name the file .tsv"
    return (
        f"; its first line is separated by {found!r}: save the file separated by commas (.csv) or tabs (.tsv)"
    )


def _atomic(path: Path, write) -> None:
    """Write to a temporary name beside `path`, then rename: a killed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an artifact is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_frame(frame: pd.DataFrame, path: Path | str) -> None:
    _atomic(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(data: Any, path: Path | str) -> None:
    """Strict JSON: a metric that is not a number (H2O-3's RMSLE of negative values, R2 of one row) is
    null. Python would write NaN, which JSON has not: jq, JavaScript and most JSON libraries refuse the
    whole file."""
    text = json.dumps(_finite(data), indent=2, default=str, allow_nan=False)
    _atomic(Path(path), lambda tmp: tmp.write_text(text + "\n"))


def _finite(data: Any) -> Any:
    if isinstance(data, np.generic):  # a numpy float32 would be written as its str(), a string
        data = data.item()
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def write_text(text: str, path: Path | str) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(text))


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())
