"""The validate stage: great-expectations checks over every dataframe the experiment names.

Each frame gets one expectation suite and one validation result. What GX can say about a
column (present, not null, unique) is a GX expectation; what needs the file system (the
asset resolves inside its data folder, exists, is readable by its data type) is computed
into a per-row boolean column first and then checked by a GX expectation, so every check of
a frame lands in the same result and the same Data Docs page. Failing rows are named by a
row id column, never by GX's pandas index.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

os.environ["DO_NOT_TRACK"] = "1"  # before great_expectations is imported: it reads them then
os.environ["GX_ANALYTICS_ENABLED"] = "false"
logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO lines drown the stage's own

import great_expectations as gx  # noqa: E402
import great_expectations.expectations as gxe  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

from deuterium import assets, io, problems, splitting  # noqa: E402
from deuterium.errors import DataError  # noqa: E402
from deuterium.settings import ExperimentBase  # noqa: E402

log = logging.getLogger(__name__)

ROW = "_row"
ROW_NUMBERING = "row N is the N-th data row, counted from 1 without the header (line N+1 of a CSV)"
REPORT_FILE = "report.json"
DOCS_DIR = "docs"
MAX_LISTED = 10

Labels = Literal["required", "optional", "none"]


@dataclass(frozen=True)
class FrameSpec:
    name: str
    path: Path
    data_folder: Path
    labels: Labels


@dataclass
class Check:
    name: str
    column: str | None  # the user's column the check is about (None: the whole frame)
    expectation: gxe.Expectation
    reason: str = ""  # for every failing row, unless `reasons` has one for that row
    reasons: dict[int, str] | None = None


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    column: str | None
    value: object
    reason: str
    check: str

    def line(self) -> str:
        where = f"{self.file}:row {self.row}" if self.row is not None else self.file
        column = f" column {self.column!r}:" if self.column is not None else ""
        return f"{where}:{column} {self.reason}"

    def as_dict(self) -> dict:
        return {
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "reason": self.reason,
            "check": self.check,
        }


def validate(exp: ExperimentBase, out_dir: Path, test_classes: bool = True) -> dict:
    """Check every dataframe of `exp`; write report.json and the Data Docs under `out_dir`. `test_classes`:
    also that a labeled test frame has no class the training rows lack (False where the training frame
    holds only some of the training rows).

    Returns the report. Raises DataError listing the first problems (after writing the report).
    """
    out_dir = Path(out_dir)
    problem = problems.of(exp)
    out_dir.mkdir(parents=True, exist_ok=True)
    build = out_dir / f".{DOCS_DIR}.tmp"
    shutil.rmtree(build, ignore_errors=True)
    context = _context(build)
    source = context.data_sources.add_pandas("deuterium")

    frames: dict[str, dict] = {}
    found: list[Problem] = []
    read: dict[str, pd.DataFrame] = {}  # each frame as read, for the checks across frames
    for spec in _frames(exp):
        frame_report, frame_problems, read[spec.name] = _validate_frame(context, source, spec, exp, problem)
        frames[spec.name] = frame_report
        found += frame_problems
    read = {name: frame for name, frame in read.items() if frame is not None}  # an unreadable one: said
    # the checks across frames, whatever else was found: one run names every problem it can
    if "train" in read:  # the input columns of every frame, against the training frame's
        for spec in _frames(exp):
            rows = _row_problems(exp, problem, spec, read)
            found += rows
            if rows:
                frames[spec.name]["success"] = False
                frames[spec.name]["problems"] += [p.as_dict() for p in rows]
    _say_lookalike_classes(exp, problem, read)
    if test_classes:
        unseen = _unseen_classes(exp, problem, read)
        found += unseen
        if unseen:
            frames["test"]["success"] = False
            frames["test"]["problems"] += [p.as_dict() for p in unseen]
    for spec in _frames(exp):
        log.info("%s (%s): %d problem(s)", spec.name, spec.path, len(frames[spec.name]["problems"]))

    context.build_data_docs()
    index = _docs_index(context, build)
    docs = out_dir / DOCS_DIR
    shutil.rmtree(docs, ignore_errors=True)
    build.rename(docs)

    report = {
        "success": not found,
        "problem_type": exp.problem_type,
        "row_numbering": ROW_NUMBERING,
        "problem_count": len(found),
        "docs": str((docs / index).relative_to(out_dir)) if index else None,
        "frames": frames,
    }
    io.write_json(report, out_dir / REPORT_FILE)
    log.info("validation report: %s; data docs: %s", out_dir / REPORT_FILE, docs / (index or ""))
    if found:
        raise DataError(_message(found, out_dir))
    return report


def _frames(exp: ExperimentBase) -> list[FrameSpec]:
    d = exp.dataset
    specs = []
    if d.train_dataframe is not None:  # null: inference only
        specs.append(FrameSpec("train", d.train_dataframe, d.data_folder, "required"))
    if d.validation_dataframe is not None:
        specs.append(FrameSpec("validation", d.validation_dataframe, d.data_folder, "required"))
    if d.test_dataframe is not None:
        specs.append(FrameSpec("test", d.test_dataframe, d.test_data_folder, "optional"))
    if d.unlabeled_dataframe is not None:
        specs.append(FrameSpec("unlabeled", d.unlabeled_dataframe, d.data_folder, "none"))
    return specs


def _context(root: Path):
    context = gx.get_context(mode="file", project_root_dir=root)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _docs_index(context, root: Path) -> Path | None:
    """The local site's index.html relative to the context root."""
    for site in context.get_docs_sites_urls():
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            path = Path(url.removeprefix("file://"))
            if path.is_relative_to(root.resolve()):
                return path.relative_to(root.resolve())
    return None


def _validate_frame(context, source, spec: FrameSpec, exp: ExperimentBase, problem):
    file = str(spec.path)
    report = {"path": file, "data_folder": str(spec.data_folder), "rows": None, "success": False}
    try:
        frame = problem.read_frame(spec.path)
    except DataError as err:
        issue = Problem(file, None, None, None, str(err).removeprefix(f"{file}: "), "dataframe readable")
        report.update(checks=[], problems=[issue.as_dict()])
        return report, [issue], None
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    report["rows"] = len(frame)

    found: list[Problem] = []
    if spec.name in ("train", "validation") and (
        clash := splitting.reserved_column(frame.columns, exp.dataset)
    ):
        found.append(Problem(file, None, clash[0], None, clash[1], "column name not reserved"))
    if not spec.data_folder.is_dir():
        reason = f"the data folder {spec.data_folder} does not exist or is not a folder"
        found.append(Problem(file, None, None, None, reason, "data folder exists"))

    work = frame.copy()
    work[ROW] = np.arange(1, len(frame) + 1)
    checks = _checks(frame, work, spec, exp, problem)

    asset = source.add_dataframe_asset(spec.name)
    batch = asset.add_batch_definition_whole_dataframe(spec.name)
    suite = context.suites.add(gx.ExpectationSuite(name=spec.name))
    for i, check in enumerate(checks):
        check.expectation.meta = {"check": check.name, "id": i}
        suite.add_expectation(check.expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=spec.name, data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": work},
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [ROW],
            "return_unexpected_index_query": False,
        },
    )

    summary = []
    for res in sorted(result.results, key=lambda r: r.expectation_config.meta["id"]):
        check = checks[res.expectation_config.meta["id"]]
        rows = [] if res.success else _failing_rows(res, work)
        summary.append(
            {
                "check": check.name,
                "column": check.column,
                "expectation": res.expectation_config.type,
                "success": bool(res.success),
                "failing_rows": len(rows),
            }
        )
        if res.success:
            continue
        error = _exception(res)
        if error:
            found.append(
                Problem(
                    file, None, check.column, None, f"check '{check.name}' could not run: {error}", check.name
                )
            )
        elif not rows:
            found.append(Problem(file, None, check.column, None, check.reason, check.name))
        for row in rows:
            value = _plain(frame.at[row - 1, check.column]) if check.column in frame.columns else None
            reason = (check.reasons or {}).get(row, check.reason)
            found.append(Problem(file, row, check.column, value, reason, check.name))

    order = {c.name: i for i, c in enumerate(checks)}
    found.sort(key=lambda p: (p.row is not None, p.row or 0, order.get(p.check, -1)))
    report.update(
        success=not found,
        checks=summary,
        problems=[p.as_dict() for p in found],
    )
    return report, found, frame


def _row_problems(
    exp: ExperimentBase, problem, spec: FrameSpec, read: dict[str, pd.DataFrame]
) -> list[Problem]:
    """The data type's check_rows of one frame, as Problems naming its file."""
    if spec.name not in read:
        return []
    found = problem.data.check_rows(read[spec.name], read["train"], exp)
    return [
        Problem(
            str(spec.path), None if row is None else row + 1, column, _plain(value), reason, "input columns"
        )
        for row, column, value, reason in found[:MAX_LISTED]
    ]


def _say_lookalike_classes(exp: ExperimentBase, problem, read: dict[str, pd.DataFrame]) -> None:
    """Warn of training classes that differ only by spaces around them or by case ("yes", "yes ", "Yes"):
    class names are kept as written, so they are different classes, which a spreadsheet's stray space
    makes without the user seeing it. A warning, not a problem: the data may mean them apart."""
    d = exp.dataset
    if problem.label_kind != "categorical" or "train" not in read:
        return
    for column in [c for c in d.label_columns if c in read["train"].columns]:
        groups: dict[str, list[str]] = {}
        for name in read["train"][column].dropna().astype(str).unique():
            groups.setdefault(name.strip().casefold(), []).append(name)
        alike = [sorted(names) for names in groups.values() if len(names) > 1]
        spaced = sorted(n for names in groups.values() if len(names) == 1 for n in names if n != n.strip())
        if alike or spaced:
            log.warning(
                "%s: column %r: %s are different classes; if each is meant as one, write it one way",
                d.train_dataframe,
                column,
                "; ".join(
                    [" and ".join(map(repr, names)) for names in alike[:10]]
                    + [f"{n!r} (spaces around it)" for n in spaced[:10]]
                ),
            )


def _unseen_classes(exp: ExperimentBase, problem, read: dict[str, pd.DataFrame]) -> list[Problem]:
    """A labeled test frame's classes that no training row has: the evaluate stage cannot score them, and
    found here they cost no training run. Single-label classification; each class at its first row.
    `read`: the frames as validated, by FrameSpec name."""
    d = exp.dataset
    if problem.label_kind != "categorical" or len(d.label_columns) != 1 or not {"train", "test"} <= set(read):
        return []
    column = d.label_columns[0]
    test = read["test"]
    if column not in test.columns or column not in read["train"].columns:
        return []  # a test frame without labels: predictions only (a training frame without: said)
    known: set[str] = set()
    for name in ("train", "validation"):
        if name in read and column in read[name].columns:
            known |= {str(v) for v in read[name][column].dropna()}
    values = test[column].reset_index(drop=True)
    firsts = values[values.notna() & ~values.astype(str).isin(known)].astype(str).drop_duplicates()
    shown = ", ".join(map(repr, sorted(known)[:20])) + (" ..." if len(known) > 20 else "")  # "yes " shows
    return [
        Problem(
            str(d.test_dataframe),
            int(i) + 1,
            column,
            _plain(values[i]),
            f"{_plain(values[i])!r} is a class no training row has (the training classes: {shown})",
            "test class seen in training",
        )
        for i in firsts.index[:MAX_LISTED]
    ]


def _checks(frame: pd.DataFrame, work: pd.DataFrame, spec: FrameSpec, exp: ExperimentBase, problem):
    """The frame's checks; adds the computed per-row columns to `work`."""
    d = exp.dataset
    label_kind = problem.label_kind
    files = problem.data.column(exp)
    noun = problem.data.noun
    present = set(frame.columns)
    labels: list[str] = []
    if spec.labels == "required" or (spec.labels == "optional" and present & set(d.label_columns)):
        labels = list(d.label_columns)
    split_columns: list[str] = []  # as deuterium.splitting uses them
    if spec.name == "train":
        if d.validation_strategy == "grouped_k_fold" and d.group_column:
            split_columns.append(d.group_column)
        if d.validation_strategy == "k_fold" and d.fold_column:
            split_columns.append(d.fold_column)
    required = list(dict.fromkeys([*([files] if files else []), *labels, *split_columns]))

    columns_text = ", ".join(frame.columns) or "(none)"
    checks = [
        Check("has rows", None, gxe.ExpectTableRowCountToBeBetween(min_value=1), "the dataframe has no rows")
    ]
    for column in required:
        checks.append(
            Check(
                f"column '{column}' present",
                column,
                gxe.ExpectColumnToExist(column=column),
                f"required column is missing; the dataframe has: {columns_text}",
            )
        )

    if files and files in present:
        checks.append(
            Check(
                f"{noun} file named",
                files,
                gxe.ExpectColumnValuesToNotBeNull(column=files),
                f"empty cell; every row needs {'an' if noun[0] in 'aeiou' else 'a'} {noun} file name",
            )
        )
        readable = lambda path, shown: problem.data.check_file(path, shown, exp)  # noqa: E731
        checks += _file_checks(frame[files], work, files, spec.data_folder, noun, readable)

    for column in labels:
        if column not in present:
            continue
        checks.append(
            Check(
                f"label '{column}' present",
                column,
                gxe.ExpectColumnValuesToNotBeNull(column=column),
                "label is missing (an empty cell; of numbers, also NA, null, None or NaN, as pandas reads them)",
            )
        )
        if label_kind == "numeric":
            checks.append(_number_check(frame[column], work, column))
        elif len(d.label_columns) > 1:  # multi-label classification: one 0/1 column per class
            checks.append(
                Check(
                    f"label '{column}' is 0 or 1",
                    column,
                    gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[0, 1]),
                    "multi-label classification needs 0 or 1 in every label column",
                )
            )

    for column in split_columns:
        if column in present:
            checks.append(
                Check(
                    f"split column '{column}' filled",
                    column,
                    gxe.ExpectColumnValuesToNotBeNull(column=column),
                    f"empty cell; {d.validation_strategy} needs a value in every row",
                )
            )
            if column == d.fold_column:
                checks.append(_number_check(frame[column], work, column, whole=True))
    return checks


def _file_checks(
    names: pd.Series, work: pd.DataFrame, column: str, folder: Path, noun: str, readable_file
) -> list[Check]:
    """Per-row file facts (each row fails at most the first of them), validated as GX columns."""
    resolved: list[str | None] = []
    inside: list[bool | None] = []
    exists: list[bool | None] = []
    readable: list[bool | None] = []
    why_outside: dict[int, str] = {}
    why_missing: dict[int, str] = {}
    why_unreadable: dict[int, str] = {}
    root = folder.resolve()
    for row, name in enumerate(names, start=1):
        facts: list[bool | None] = [None, None, None]
        key = None
        if not _is_null(name):
            text = name if isinstance(name, str) else str(name)
            shown = folder / text
            try:
                path = assets.resolve(folder, text)
            except DataError as err:
                facts[0] = False
                why_outside[row] = str(err)
            else:
                facts[0] = True
                key = path.relative_to(root).as_posix()
                facts[1] = path.is_file()
                if not facts[1]:
                    why_missing[row] = f"not a file: {shown}" if path.exists() else f"file not found: {shown}"
                else:
                    reason = readable_file(path, str(shown))
                    facts[2] = reason is None
                    if reason:
                        why_unreadable[row] = reason
        resolved.append(key)
        inside.append(facts[0])
        exists.append(facts[1])
        readable.append(facts[2])

    col_resolved = f"_{column}_resolved"
    col_inside = f"_{column}_inside_data_folder"
    col_exists = f"_{column}_exists"
    col_readable = f"_{column}_readable"
    work[col_resolved] = pd.Series(resolved, dtype=object, index=work.index)
    work[col_inside] = pd.Series(inside, dtype=object, index=work.index)
    work[col_exists] = pd.Series(exists, dtype=object, index=work.index)
    work[col_readable] = pd.Series(readable, dtype=object, index=work.index)

    duplicates = _duplicate_reasons(work[col_resolved], names)
    return [
        Check(
            f"{noun} file inside data folder",
            column,
            gxe.ExpectColumnValuesToBeInSet(
                column=col_inside,
                value_set=[True],
                description=f"Every file in '{column}' is a relative path inside the data folder {folder}",
            ),
            "not a relative path inside the data folder",
            why_outside,
        ),
        Check(
            f"{noun} file unique",
            column,
            gxe.ExpectColumnValuesToBeUnique(
                column=col_resolved,
                description=f"No file of '{column}' is listed twice (compared after resolving the path)",
            ),
            "the same file is listed more than once",
            duplicates,
        ),
        Check(
            f"{noun} file exists",
            column,
            gxe.ExpectColumnValuesToBeInSet(
                column=col_exists,
                value_set=[True],
                description=f"Every file in '{column}' exists in {folder}",
            ),
            "file not found",
            why_missing,
        ),
        Check(
            f"{noun} file readable",
            column,
            gxe.ExpectColumnValuesToBeInSet(
                column=col_readable,
                value_set=[True],
                description=f"Every file in '{column}' is a readable {noun} file",
            ),
            f"not a readable {noun} file",
            why_unreadable,
        ),
    ]


def _duplicate_reasons(keys: pd.Series, names: pd.Series) -> dict[int, str]:
    rows = pd.Series(np.arange(1, len(keys) + 1), index=keys.index)
    dup = keys.notna() & keys.duplicated(keep=False)
    reasons = {}
    for _, group in rows[dup].groupby(keys[dup], sort=False):
        listed = group.tolist()
        for row in listed:
            others = ", ".join(str(r) for r in listed if r != row)
            reasons[row] = (
                f"{_plain(names.iloc[row - 1])!r} is the same file as row {others}; list each file once"
            )
    return reasons


def _number_check(values: pd.Series, work: pd.DataFrame, column: str, whole: bool = False) -> Check:
    """Labels must be finite numbers (text that parses as one counts); fold numbers also whole."""
    numbers = pd.to_numeric(values.map(_as_number_text), errors="coerce").astype(float).to_numpy()
    good = np.isfinite(numbers)
    if whole:
        good &= np.mod(np.where(good, numbers, 0), 1) == 0
    ok = pd.Series(good, index=values.index, dtype=object)
    ok[values.isna()] = None  # an empty cell is the not-null check's to report
    what = "a whole fold number" if whole else "a finite number"
    needs = "the fold column needs whole numbers" if whole else "this problem type needs numeric labels"
    reasons = {}
    for i in np.flatnonzero(~good & values.notna().to_numpy()):
        kind = "not a number" if math.isnan(numbers[i]) else f"not {what}"
        reasons[i + 1] = f"{_plain(values.iloc[i])!r} is {kind}; {needs}"
    derived = f"_{column}_is_{'whole' if whole else 'finite'}_number"
    work[derived] = ok
    return Check(
        f"{'fold' if whole else 'label'} '{column}' numeric",
        column,
        gxe.ExpectColumnValuesToBeInSet(
            column=derived, value_set=[True], description=f"Every value in '{column}' is {what}"
        ),
        f"not {what}",
        reasons,
    )


def _as_number_text(value: object) -> object:
    """Numbers and number-like text pass to pd.to_numeric; anything else (bool, lists) becomes NaN."""
    if isinstance(value, bool | np.bool_):
        return np.nan
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value
    return np.nan


def _exception(res) -> str | None:
    """GX's message when an expectation could not run (its exception_info is flat or per metric)."""
    info = res.exception_info or {}
    entries = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for entry in entries:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error")
    return None


def _failing_rows(res, work: pd.DataFrame) -> list[int]:
    """Row ids GX reports as unexpected; computed here where GX does not list them."""
    listed = (res.result or {}).get("unexpected_index_list")
    if listed:
        return sorted({int(item[ROW]) for item in listed})
    kwargs = res.expectation_config.kwargs
    column = kwargs.get("column")
    if (
        column is None
        or column not in work.columns
        or res.expectation_config.type == "expect_column_to_exist"
    ):
        return []
    values = work[column]
    kind = res.expectation_config.type
    if kind == "expect_column_values_to_not_be_null":
        bad = values.isna()
    elif kind == "expect_column_values_to_be_unique":
        bad = values.notna() & values.duplicated(keep=False)
    elif kind == "expect_column_values_to_be_in_set":
        bad = values.notna() & ~values.isin(kwargs["value_set"])
    else:
        return []
    return work.loc[bad, ROW].astype(int).tolist()


def _is_null(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like cells
        return False


def _plain(value: object) -> object:
    """A JSON-safe copy of a cell for the report."""
    if isinstance(value, np.generic):
        value = value.item()
    if _is_null(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if isinstance(value, str | int | float | bool) else str(value)


def _message(found: list[Problem], out_dir: Path) -> str:
    head = f"data validation failed: {len(found)} problem(s)"
    lines = [head, *(f"  {p.line()}" for p in found[:MAX_LISTED])]
    if len(found) > MAX_LISTED:
        lines.append(f"  ... and {len(found) - MAX_LISTED} more")
    lines.append(f"full report: {out_dir / REPORT_FILE} (HTML: {out_dir / DOCS_DIR})")
    return "\n".join(lines)
