"""What the challenger trains on and is compared with, without training: the append, the holdout overlap
check and the paired comparison of flows/retrain.py, on a small project of fake files (only their bytes count)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deuterium import config
from deuterium.errors import DataError
from flows.retrain import (
    append_rows,
    apply_settings,
    check_holdout_untouched,
    data_settings,
    experiment_copies,
    experiment_reads,
    holdout_of,
    load_experiment,
    paired_comparison,
    rows_right,
    training_data,
)

ROOT = Path(__file__).resolve().parents[2]


def write(
    frame_rows: list[tuple[str, int]], dataframe: Path, folder: Path, content=lambda f: f.encode()
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file, _ in frame_rows:
        (folder / file).write_bytes(content(file))
    dataframe.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(frame_rows, columns=["file", "digit"]).assign(speaker="george").to_csv(
        dataframe, index=False
    )


@pytest.fixture
def project(tmp_path) -> Path:
    """params.yaml as the project's, a training dataframe of 4 files and a holdout of 2."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    fsdd = tmp_path / "data" / "fsdd"
    write([(f"{d}_george_5.wav", d) for d in range(4)], fsdd / "train.csv", fsdd / "recordings")
    write([("0_george_0.wav", 0), ("7_george_0.wav", 7)], fsdd / "test.csv", fsdd / "recordings")
    return tmp_path


def params_of(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


def new_batch(project: Path, rows: list[tuple[str, int]], content=lambda f: f.encode()) -> dict[str, str]:
    write(rows, project / "data" / "incoming" / "train.csv", project / "data" / "incoming", content)
    return data_settings(project, Path("data/incoming"), None, params_of(project)["dataset"])


def test_appending_is_the_default_and_keeps_the_old_rows(project):
    # one new recording, and one with the bytes of a training file already there (not added twice)
    new = new_batch(project, [("7_george_9.wav", 7), ("copy_of_1.wav", 1)])
    (project / "data" / "incoming" / "copy_of_1.wav").write_bytes(b"1_george_5.wav")
    work = project / "artifacts" / "retrain" / "run"
    settings, new_files = training_data(project, params_of(project), new, replace=False, work=work)

    assert settings["dataset.train_dataframe"] == "artifacts/retrain/run/training/train.csv"
    assert settings["dataset.data_folder"] == "data"  # the folders' common parent: both sets of files in it
    assert settings["dataset.data_folder_test"] == "data/fsdd/recordings"
    frame = pd.read_csv(work / "training" / "train.csv")
    assert frame.file.tolist() == [f"fsdd/recordings/{d}_george_5.wav" for d in range(4)] + [
        "incoming/7_george_9.wav"
    ]
    assert frame.digit.tolist() == [0, 1, 2, 3, 7]
    assert all((project / "data" / f).is_file() for f in frame.file)
    assert list(new_files) == ["7_george_9.wav"]

    exp = load_experiment(
        project, apply_settings(params_of(project), [f"{k}={v}" for k, v in settings.items()])
    )
    assert holdout_of(project, exp) == holdout_of(project, config.load(project / "params.yaml"))  # same files


def test_replace_trains_on_the_new_rows_alone(project):
    new = new_batch(project, [("7_george_9.wav", 7)])
    work = project / "artifacts" / "retrain" / "run"
    settings, new_files = training_data(project, params_of(project), new, replace=True, work=work)
    # the new dataframe as it is, copied where the experiment reads it (see experiment_copies)
    assert settings == {**new, "dataset.train_dataframe": "artifacts/retrain/run/training/train.csv"}
    assert (work / "training" / "train.csv").read_bytes() == (
        project / new["dataset.train_dataframe"]
    ).read_bytes()
    assert list(new_files) == ["7_george_9.wav"]


def test_a_new_file_with_the_bytes_of_a_holdout_file_is_refused_by_content_not_name(project):
    # another name, the very bytes of the holdout's 7_george_0.wav
    new = new_batch(project, [("7_george_9.wav", 7), ("fresh_7.wav", 7)])
    (project / "data" / "incoming" / "fresh_7.wav").write_bytes(b"7_george_0.wav")
    params = params_of(project)
    _, new_files = training_data(project, params, new, False, project / "artifacts" / "retrain" / "run")
    exp = config.load(project / "params.yaml")
    with pytest.raises(
        DataError, match=r"data/incoming: 1 new training file.*fresh_7.wav is the holdout's 7_george_0.wav"
    ):
        check_holdout_untouched.fn(project, params, exp, new_files, "data/incoming")
    check_holdout_untouched.fn(
        project, params, exp, {"7_george_9.wav": new_files["7_george_9.wav"]}, "data/incoming"
    )


def test_appended_rows_need_the_file_and_label_columns():
    old = pd.DataFrame({"file": ["a.wav"], "digit": [1]})
    with pytest.raises(DataError, match=r"lacks column\(s\) \['digit'\].*--replace"):
        append_rows(
            old, Path("/d/old"), pd.DataFrame({"file": ["b.wav"]}), Path("/d/new"), "file", ["file", "digit"]
        )
    frame, root = append_rows(old, Path("/d/x"), old.assign(file="b.wav"), Path("/d/x"), "file", ["file"])
    assert root == Path("/d/x") and frame.file.tolist() == ["a.wav", "b.wav"]


def test_the_paired_comparison_scores_both_models_on_the_same_rows(project):
    exp = config.load(project / "params.yaml")
    labels = [str(d) for d in range(10)]
    info = {"labels": labels, "target_names": ["digit"], "multi_label": False}
    frame = pd.DataFrame({"file": [f"{i}.wav" for i in range(300)], "digit": [7] * 300})
    champion = np.eye(10)[[7] * 150 + [1] * 150]  # right on the first 150 rows
    challenger = champion.copy()
    challenger[150] = np.eye(10)[7]  # and one more
    assert rows_right(frame, challenger, info).sum() == 151
    champion_value, challenger_value, test = paired_comparison(
        exp, frame, (champion, info), (challenger, info), 0.95
    )
    assert (champion_value, challenger_value) == (0.5, 151 / 300)
    assert (test.test, test.challenger_only, test.champion_only, test.n) == ("mcnemar_exact", 1, 0, 300)
    assert not test.significant(0.0)


# ---- a data type whose input is the row itself (no files): rows compare by their values
@pytest.fixture
def rows_project(tmp_path) -> Path:
    """A tabular classification project: 4 training rows, a holdout of 2 rows."""
    data = tmp_path / "data" / "tab"
    data.mkdir(parents=True)
    pd.DataFrame(
        {"x": [0.0, 1.0, 2.0, 3.0], "colour": ["red", "red", "blue", None], "y": list("abab")}
    ).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"x": [5.0, 6.0], "colour": ["red", "blue"], "y": ["a", "b"]}).to_csv(
        data / "test.csv", index=False
    )
    params = {
        "problem_type": "tabular_classification",
        "dataset": {
            "train_dataframe": "data/tab/train.csv",
            "test_dataframe": "data/tab/test.csv",
            "data_folder": "data/tab",
            "label_columns": ["y"],
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def new_rows(project: Path, frame: pd.DataFrame) -> dict[str, str]:
    (project / "data" / "incoming").mkdir(parents=True, exist_ok=True)
    frame.to_csv(project / "data" / "incoming" / "train.csv", index=False)
    return data_settings(project, Path("data/incoming/train.csv"), None, params_of(project)["dataset"])


def test_rows_without_files_are_appended_as_given_and_the_holdout_is_their_dataframe(rows_project):
    """A row is no file: the values of training row 4 again (the label too) are a second observation,
    not the same row delivered twice (H2O-3 keeps both). Dropping them lost every new row of a table of
    a few discrete columns."""
    new = new_rows(rows_project, pd.DataFrame({"x": [9.0, 3], "colour": ["blue", None], "y": ["a", "b"]}))
    work = rows_project / "artifacts" / "retrain" / "run"
    settings, new_rows_hashed = training_data(
        rows_project, params_of(rows_project), new, replace=False, work=work
    )
    frame = pd.read_csv(work / "training" / "train.csv")
    assert frame.x.tolist() == [0.0, 1.0, 2.0, 3.0, 9.0, 3.0] and frame.y.tolist() == list("ababab")
    assert list(new_rows_hashed) == ["row 1", "row 2"]
    exp = load_experiment(
        rows_project, apply_settings(params_of(rows_project), [f"{k}={v}" for k, v in settings.items()])
    )
    holdout = holdout_of(rows_project, exp)
    assert holdout == holdout_of(rows_project, config.load(rows_project / "params.yaml"))
    assert holdout.content is not None  # the dataframe's bytes: a changed holdout row is a changed holdout
    with pytest.raises(DataError, match=r"lacks column\(s\) \['colour'\]"):
        training_data(
            rows_project, params_of(rows_project), new_rows(rows_project, frame[["x", "y"]]), False, work
        )


def test_a_new_row_with_a_holdout_rows_values_is_refused(rows_project):
    # row 2 is the holdout's row 2, label and all; row 3 has its inputs and another label: another row
    new = new_rows(
        rows_project,
        pd.DataFrame({"x": [9.0, 6, 6], "colour": ["blue", "blue", "blue"], "y": ["a", "b", "a"]}),
    )
    params = params_of(rows_project)
    _, hashed = training_data(rows_project, params, new, True, rows_project / "artifacts" / "retrain" / "run")
    exp = config.load(rows_project / "params.yaml")
    with pytest.raises(
        DataError, match=r"data/incoming: 1 new training row\(s\).*row 2 is the holdout's row 2"
    ):
        check_holdout_untouched.fn(rows_project, params, exp, hashed, "data/incoming")
    check_holdout_untouched.fn(
        rows_project, params, exp, {k: hashed[k] for k in ("row 1", "row 3")}, "data/incoming"
    )


def test_rows_that_the_data_repeats_are_no_copy_of_the_holdout(rows_project):
    """A holdout row whose values a training row (or another holdout row) also has is a value the data
    repeats by chance; a new row with them is no evidence of a copied holdout."""
    test = rows_project / "data" / "tab" / "test.csv"
    holdout = pd.read_csv(test)
    extra = pd.DataFrame({"x": [0.0, 7.0, 7.0], "colour": ["red", "red", "red"], "y": ["a", "b", "b"]})
    pd.concat([holdout, extra]).to_csv(test, index=False)  # row 3 is training row 1; rows 4 and 5 the same
    new = new_rows(
        rows_project, pd.DataFrame({"x": [0.0, 7.0, 5.0], "colour": ["red"] * 3, "y": ["a", "b", "a"]})
    )
    params = params_of(rows_project)
    _, hashed = training_data(rows_project, params, new, True, rows_project / "artifacts" / "retrain" / "run")
    exp = config.load(rows_project / "params.yaml")
    check_holdout_untouched.fn(
        rows_project, params, exp, {k: hashed[k] for k in ("row 1", "row 2")}, "data/incoming"
    )
    with pytest.raises(DataError, match=r"row 3 is the holdout's row 1"):  # measured values: a copy
        check_holdout_untouched.fn(rows_project, params, exp, hashed, "data/incoming")


def test_a_holdout_row_copied_without_the_holdouts_extra_column_is_refused(rows_project):
    """The holdout's columns were the row's content: a test row copied without a column that only the
    test file has (a note) hashed differently and was trained on."""
    test = rows_project / "data" / "tab" / "test.csv"
    pd.read_csv(test).assign(note=["checked", "later"]).to_csv(test, index=False)
    new = new_rows(rows_project, pd.DataFrame({"x": [9.0, 6], "colour": ["blue", "blue"], "y": ["a", "b"]}))
    params = params_of(rows_project)
    _, hashed = training_data(rows_project, params, new, True, rows_project / "artifacts" / "retrain" / "run")
    with pytest.raises(DataError, match=r"row 2 is the holdout's row 2"):
        check_holdout_untouched.fn(
            rows_project, params, config.load(rows_project / "params.yaml"), hashed, "data/incoming"
        )


def test_a_class_the_holdout_lacks_is_named(rows_project, caplog):
    new = new_rows(rows_project, pd.DataFrame({"x": [9.0, 8.0], "colour": ["blue", "red"], "y": ["c", "a"]}))
    with caplog.at_level("WARNING"):
        training_data(rows_project, params_of(rows_project), new, True, rows_project / "artifacts" / "r")
    assert "the new rows hold class(es) ['c'] that no holdout row has" in caplog.text


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


def test_the_experiment_gets_copies_of_what_neither_git_nor_dvc_has(project):
    """A temporary experiment is a copy of the repository: untracked data is copied in with -C (the old
    rows' folder too: the run stopped with 'file not found' for every old file), a folder git has is not
    (copying over it stopped the run: 'Unable to copy ... File exists'), nor a DVC-tracked one."""
    new = new_batch(project, [("7_george_9.wav", 7)])
    work = project / "artifacts" / "retrain" / "run"
    params = params_of(project)
    appended = training_data(project, params, new, replace=False, work=work)[0]
    alone = training_data(project, params, new, replace=True, work=work)[0]
    _git(project, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)  # retrain's projects
    _git(project, "add", "params.yaml")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params")

    def copies(replace: bool = False) -> list[str]:
        data = alone if replace else appended
        return experiment_copies(project, experiment_reads(project, params, new, data, replace))

    # nothing but params.yaml in git: the training folder in work, the old rows' data, the new rows'
    assert copies() == ["artifacts", "data"]
    _git(project, "add", "data/fsdd")
    assert copies() == ["artifacts", "data/incoming"]
    _git(project, "add", "data/incoming")
    assert copies() == ["artifacts"]
    (project / "data" / "incoming" / "8_george_9.wav").write_bytes(b"8")  # new, not added to git
    with pytest.raises(
        DataError,
        match=r"data/incoming: git tracks 2 of its files but not 1 \(such as data/incoming/8_george_9.wav\)"
        r".*`git add data/incoming`.*`dvc add data/incoming`",
    ):
        copies()
    _git(project, "rm", "-rq", "--cached", "data/fsdd", "data/incoming")
    (project / "data" / "incoming.dvc").write_text("outs:\n- path: incoming\n")
    (project / "data" / "fsdd.dvc").write_text("outs:\n- path: fsdd\n")
    assert copies() == ["artifacts"]
    assert copies(replace=True) == ["artifacts"]  # the new rows alone: their folder, DVC's
