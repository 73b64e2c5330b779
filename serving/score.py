"""Score files with an exported model folder, without a service.

    python -m serving.score MODEL_DIR INPUT... [--out predictions.csv]

Each INPUT is a file, a folder (searched recursively for the files the model's data type reads) or a CSV
whose `--column` (default: the column the model was trained with) names files relative to the CSV's
folder (or `--data-folder`). For a model whose data type reads no files (its input is a row of values),
a CSV, TSV or parquet INPUT is a frame whose every row is scored, read as the pipeline reads its
dataframes; its rows are named PATH:N (N = 1 for the first row after the header), in a `row` column
instead of `file`. One row per scored input goes to the output CSV; an input that cannot be scored is
reported on its own line, and the exit status is 1 if any failed, after the others are written.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.progress import track

from deuterium import assets, cli, data_types
from deuterium import io as dio
from deuterium.errors import DataError, DeuteriumError
from deuterium.scoring import Scorer

log = logging.getLogger(__name__)

GROUP = 32  # files decoded and scored together
FRAME_SUFFIXES = frozenset({".csv", ".tsv", ".parquet"})  # frames of rows, for a data type without files


@dataclass(frozen=True)
class Item:
    name: str  # as the user gave it: the argument, the path found in a folder, the CSV cell
    path: Path | None
    error: str | None = None
    row: dict | None = None  # a frame's row (column -> value), for a data type whose input is a row
    origin: str = ""  # where a file named in a CSV was named: "list.csv:3", before its failure

    def failed(self, why: str) -> str:
        """The failure's line: `why` names the input (prefixed with it if not), after the CSV row."""
        why = why if self.name in why else f"{self.name}: {why}"
        return f"{self.origin}: {why}" if self.origin else why


def frame_rows(path: Path, columns: Sequence[dict] = ()) -> list[Item]:
    """Every row of a dataframe file, as the decoder takes it: column -> value, a missing value None; one
    failure for the whole file when it cannot be read or lacks one of the model's `columns` (not one per
    row, and not the end of the run: the other inputs are still scored).

    The model's numeric columns: one cell that is not a number makes pandas read a whole CSV
    column as text; its cells that are numbers are numbers again here, so only the rows with the bad cell
    fail (naming it), not every row."""
    try:
        frame = dio.read_frame(path)
    except DataError as err:
        return [Item(str(path), None, str(err) if str(path) in str(err) else f"{path}: {err}")]
    missing = sorted({c["name"] for c in columns} - set(frame.columns))
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        return [
            Item(
                str(path),
                None,
                f"{path}: no column{'s' if len(missing) > 1 else ''} {shown}: the model was trained with "
                f"{'them' if len(missing) > 1 else 'it'} (an empty cell when unknown)",
            )
        ]
    numeric = {c["name"] for c in columns if c.get("kind") != "categorical"}
    for name in numeric & set(frame.columns):
        if not pd.api.types.is_numeric_dtype(frame[name]):  # text (pandas 3: str, else object)
            parsed = pd.to_numeric(frame[name], errors="coerce")
            frame[name] = parsed.astype(object).where(parsed.notna(), frame[name])
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [Item(f"{path}:{i}", None, row=row) for i, row in enumerate(rows, start=1)]


def collect(
    inputs: list[Path],
    column: str,
    suffixes: frozenset[str],
    data_folder: Path | None = None,
    rows_are_inputs: bool = False,
    columns: Sequence[dict] = (),
) -> list[Item]:
    """`rows_are_inputs`: the model's data type reads no files, so a dataframe file is rows to score
    (`columns`: the model's input columns, see frame_rows)."""
    items: list[Item] = []
    for given in inputs:
        if rows_are_inputs and given.suffix.lower() in FRAME_SUFFIXES:
            items += frame_rows(given, columns)
        elif given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise DataError(
                    f"{given}: no files the model reads ({', '.join(sorted(suffixes))}) in this folder"
                )
            items += [Item(str(p), p) for p in found]
        elif given.suffix.lower() in FRAME_SUFFIXES:
            items += _from_list(given, column, data_folder or given.parent)
        else:
            items.append(Item(str(given), given))
    return items


def _from_list(path: Path, column: str, folder: Path) -> list[Item]:
    """The files a dataframe (.csv, .tsv, .parquet) lists in `column`, read as the pipeline reads its
    dataframes (io.read_frame: Excel's byte-order mark, a file that is not UTF-8 named by its line); a CSV's
    rows are numbered as a spreadsheet shows them (row 1 is the header)."""
    if not path.is_file():  # one failure, like a missing file given on its own: the others still score
        return [Item(str(path), None, f"{path}: no such dataframe file")]
    frame = dio.read_frame(path, text_columns=[column])
    if column not in frame.columns:
        raise DataError(
            f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))}); choose one with --column"
        )
    names = frame[column].tolist()
    items = []
    for row, name in enumerate(names, start=2):  # row 1 is the header
        if name is None or name != name:  # an empty cell
            items.append(Item(f"{path}:{row}", None, f"{path}:{row}: no file named in column {column!r}"))
            continue
        try:
            items.append(Item(name, assets.resolve(folder, name), origin=f"{path}:{row}"))
        except DataError as err:
            items.append(Item(f"{path}:{row}", None, f"{path}:{row}: {err}"))
    return items


def _row(name: str, prediction: dict, key: str = "file") -> dict:
    if "probabilities" in prediction:
        probs = {f"prob_{label}": p for label, p in prediction["probabilities"].items()}
        # multi-label answers name every chosen class: one cell, joined by ";"
        label = prediction["label"] if "label" in prediction else ";".join(prediction["labels"])
        return {key: name, "label": label, **probs}
    return {key: name, **prediction["predictions"]}


def score(scorer: Scorer, items: list[Item], key: str = "file") -> tuple[list[dict], list[str]]:
    """Prediction rows for the inputs that load, and one message per input that does not; `key` is the
    output column naming the input (file, or row)."""
    rows: list[dict] = []
    failures: list[str] = []
    groups = [items[i : i + GROUP] for i in range(0, len(items), GROUP)]
    for group in track(groups, description="scoring", disable=not sys.stderr.isatty()):
        loaded, decoded = [], []
        for item in group:
            if item.error is not None or (item.row is None and not item.path.is_file()):
                failures.append(item.error or item.failed("no such file"))
                continue
            try:
                decoded.append(scorer.load(item.row if item.row is not None else item.path, item.name))
                loaded.append(item)
            except DeuteriumError as err:
                failures.append(item.failed(str(err)))
        for item, prediction in zip(loaded, scorer.predict(decoded), strict=True):
            if "error" in prediction:
                failures.append(item.failed(prediction["error"]))
            else:
                rows.append(_row(item.name, prediction, key))
    return rows, failures


def _check_out(out: Path, read: list[Path]) -> None:
    """The output must not replace an input (a CSV of rows scored into itself) nor be a folder."""
    if out.is_dir():
        raise DataError(f"--out {out}: a folder; name the CSV file to write")
    target = out.resolve()
    for path in read:
        if path.resolve() == target:
            raise DataError(
                f"--out {out} is also an input ({path}); it would be overwritten: choose another file"
            )


def _given_path(text: str) -> Path:
    """An argument path; an empty one (a shell variable that was not set) is not the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def write_csv(rows: list[dict], columns: list[str], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    dio.write_text(buffer.getvalue(), out)


def main(
    model_dir: Path,
    inputs: list[Path],
    out: Path = Path("predictions.csv"),
    column: str | None = None,
    data_folder: Path | None = None,
    providers: list[str] | None = None,
) -> int:
    """Score every input into `out`; returns how many files failed."""
    scorer = Scorer(model_dir, providers=providers)
    data_type = data_types.get(scorer.pre.data_type)
    rows_are_inputs = not data_type.column_key  # no column of files: a row of values is the input
    if not rows_are_inputs:
        column = column or scorer.pre.column or data_type.dataset_fields[data_type.column_key][1]
    columns = scorer.pre.input.get("columns") or []
    items = collect(inputs, column or "", data_type.file_suffixes, data_folder, rows_are_inputs, columns)
    _check_out(out, [*inputs, *(item.path for item in items if item.path is not None)])
    key = "row" if rows_are_inputs else "file"
    rows, failures = score(scorer, items, key)
    pre = scorer.pre
    outputs = (
        ["label", *(f"prob_{label}" for label in pre.labels)] if pre.is_classification else pre.target_names
    )
    for message in failures:
        log.error("failed: %s", message)
    if not rows:  # a mistyped path must not replace the predictions of an earlier run with an empty file
        log.error("nothing scored: %s is not written", out)
        return max(1, len(failures))
    write_csv(rows, [key, *outputs], out)
    log.info("%d of %d inputs scored into %s; %d failed", len(rows), len(items), out, len(failures))
    return len(failures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=_given_path, help="folder with model.onnx and preprocessing.json")
    parser.add_argument(
        "inputs",
        type=_given_path,
        nargs="+",
        help="files, folders of them, or dataframes naming them (.csv, .tsv, .parquet)",
    )
    parser.add_argument("--out", type=_given_path, default=Path("predictions.csv"))
    parser.add_argument(
        "--column",
        help="the dataframe column with the file names (default: the one the model was trained with)",
    )
    parser.add_argument(
        "--data-folder", type=_given_path, help="where a dataframe's file names point (default: its folder)"
    )
    parser.add_argument(
        "--providers",
        default="CUDAExecutionProvider,CPUExecutionProvider",
        help="onnxruntime execution providers, in order of preference",
    )
    args = parser.parse_args()
    failed = cli.run(
        main, args.model_dir, args.inputs, args.out, args.column, args.data_folder, args.providers.split(",")
    )
    sys.exit(1 if failed else 0)
