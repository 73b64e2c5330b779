import json
import logging
import os

os.environ["DO_NOT_TRACK"] = "1"
os.environ["GX_ANALYTICS_ENABLED"] = "false"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from deuterium import config, validation  # noqa: E402
from deuterium import io as dio  # noqa: E402
from deuterium.errors import DataError  # noqa: E402

RATE = 8000


def write_wav(path, seconds=0.1, freq=440.0):
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE)


@pytest.fixture
def audio(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i, name in enumerate(["a.wav", "b.wav", "c.wav", "d.wav"]):
        write_wav(folder / name, freq=300 + 100 * i)
    return folder


def experiment(tmp_path, csv, problem_type="audio_classification", **dataset):
    frame = tmp_path / "train.csv"
    frame.write_text(csv)
    settings = {
        "train_dataframe": str(frame),
        "data_folder": str(tmp_path / "audio"),
        "audio_column": "file",
        "label_columns": ["label"],
        **dataset,
    }
    return config.parse({"problem_type": problem_type, "dataset": settings})


def failing(tmp_path, exp):
    """The DataError's message and the report written before it."""
    with pytest.raises(DataError) as info:
        validation.validate(exp, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["success"] is False
    return str(info.value), report


def problems(report, frame="train"):
    return [(p["row"], p["column"], p["check"]) for p in report["frames"][frame]["problems"]]


def test_good_frames_pass_and_write_report_and_html(tmp_path, audio):
    exp = experiment(tmp_path, "file,label\na.wav,yes\nb.wav,no\nc.wav,yes\n")
    report = validation.validate(exp, tmp_path / "out")
    assert report["success"] is True
    assert report["frames"]["train"]["rows"] == 3
    assert all(c["success"] for c in report["frames"]["train"]["checks"])
    assert json.loads((tmp_path / "out" / "report.json").read_text())["success"] is True
    index = tmp_path / "out" / report["docs"]
    assert index.name == "index.html" and index.is_file()
    assert index.is_relative_to(tmp_path / "out" / "docs")
    assert not (tmp_path / "out" / ".docs.tmp").exists()


def test_regression_labels_and_test_frame_without_labels(tmp_path, audio):
    test_folder = tmp_path / "test_audio"
    test_folder.mkdir()
    write_wav(test_folder / "t.wav")
    (tmp_path / "test.csv").write_text("file\nt.wav\n")
    exp = experiment(
        tmp_path,
        "file,label\na.wav,1.5\nb.wav,-2\nc.wav,3e2\n",
        "audio_regression",
        test_dataframe=str(tmp_path / "test.csv"),
        data_folder_test=str(test_folder),
    )
    report = validation.validate(exp, tmp_path / "out")
    assert report["success"] is True
    assert set(report["frames"]) == {"train", "test"}


def test_missing_file_names_file_row_and_column(tmp_path, audio):
    exp = experiment(tmp_path, "file,label\na.wav,x\nnope.wav,y\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 2: column 'file': file not found" in message
    assert "nope.wav" in message
    assert problems(report) == [(2, "file", "audio file exists")]
    assert report["frames"]["train"]["problems"][0]["value"] == "nope.wav"
    assert "N-th data row" in report["row_numbering"]


def test_paths_outside_the_data_folder(tmp_path, audio):
    write_wav(tmp_path / "outside.wav")
    exp = experiment(tmp_path, f"file,label\n../outside.wav,x\n{tmp_path / 'outside.wav'},y\na.wav,z\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 1: column 'file': asset '../outside.wav' escapes the data folder" in message
    assert "train.csv:row 2: column 'file':" in message and "absolute path" in message
    assert problems(report) == [
        (1, "file", "audio file inside data folder"),
        (2, "file", "audio file inside data folder"),
    ]


def test_unreadable_audio(tmp_path, audio):
    (audio / "text.wav").write_text("not audio at all")
    (audio / "zero.wav").write_bytes(b"")
    sf.write(audio / "silent.wav", np.zeros(0, np.float32), RATE)
    exp = experiment(tmp_path, "file,label\na.wav,x\ntext.wav,x\nzero.wav,y\nsilent.wav,y\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 2: column 'file':" in message and "text.wav: not a readable audio file" in message
    assert "train.csv:row 3: column 'file':" in message and "zero.wav: not a readable audio file" in message
    assert "train.csv:row 4: column 'file':" in message and "no frames" in message
    assert problems(report) == [(r, "file", "audio file readable") for r in (2, 3, 4)]


def test_audio_whose_samples_cannot_train_is_named_before_training(tmp_path, audio):
    """A float WAV with NaN samples, or a FLAC cut short, has a valid header: validate passed them and the
    train stage stopped an epoch in, naming neither the row nor the column."""
    wave = (0.5 * np.sin(np.arange(RATE) / 5)).astype(np.float32)
    sf.write(
        audio / "nan.wav", np.where(np.arange(RATE) == 4000, np.nan, wave).astype(np.float32), RATE, "FLOAT"
    )
    sf.write(audio / "whole.flac", np.tile(wave, 20), RATE)
    data = (audio / "whole.flac").read_bytes()
    (audio / "cut.flac").write_bytes(data[: len(data) // 2])
    exp = experiment(tmp_path, "file,label\na.wav,x\nnan.wav,x\ncut.flac,y\nwhole.flac,y\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 2: column 'file':" in message and "nan.wav: the audio contains NaN" in message
    assert "train.csv:row 3: column 'file':" in message and "cut.flac: audio data is corrupt" in message
    assert problems(report) == [(r, "file", "audio file readable") for r in (2, 3)]


def test_missing_label(tmp_path, audio):
    exp = experiment(tmp_path, "file,label\na.wav,x\nb.wav,\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 2: column 'label': label is missing" in message
    assert problems(report) == [(2, "label", "label 'label' present")]


def test_text_in_a_numeric_label_column(tmp_path, audio):
    exp = experiment(tmp_path, "file,label\na.wav,1.0\nb.wav,abc\nc.wav,inf\n", "audio_regression")
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 2: column 'label': 'abc' is not a number" in message
    assert "train.csv:row 3: column 'label': 'inf' is not a finite number" in message
    assert [p[:2] for p in problems(report)] == [(2, "label"), (3, "label")]


def test_text_labels_are_fine_for_classification(tmp_path, audio):
    exp = experiment(tmp_path, "file,label\na.wav,1.0\nb.wav,abc\n")
    assert validation.validate(exp, tmp_path / "out")["success"] is True


def test_duplicate_files_name_both_rows(tmp_path, audio):
    exp = experiment(tmp_path, "file,label\na.wav,x\nb.wav,y\n./a.wav,z\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 1: column 'file': 'a.wav' is the same file as row 3" in message
    assert "train.csv:row 3: column 'file': './a.wav' is the same file as row 1" in message
    assert problems(report) == [(1, "file", "audio file unique"), (3, "file", "audio file unique")]


def test_missing_required_columns(tmp_path, audio):
    exp = experiment(
        tmp_path,
        "file,speaker\na.wav,x\n",
        validation_strategy="grouped_k_fold",
        group_column="group",
    )
    message, report = failing(tmp_path, exp)
    assert (
        "train.csv: column 'label': required column is missing; the dataframe has: file, speaker" in message
    )
    assert "train.csv: column 'group': required column is missing" in message
    assert problems(report) == [
        (None, "label", "column 'label' present"),
        (None, "group", "column 'group' present"),
    ]


def test_missing_dataframe_file_and_data_folder(tmp_path):
    exp = experiment(tmp_path, "file,label\na.wav,x\n", test_dataframe=str(tmp_path / "missing.csv"))
    message, report = failing(tmp_path, exp)
    assert "missing.csv: no such dataframe file" in message
    assert "audio does not exist" in message
    assert report["frames"]["test"]["rows"] is None


def test_html_report_names_the_failing_rows(tmp_path, audio):
    exp = experiment(tmp_path, "file,label\na.wav,x\nb.wav,y\ngone.wav,z\n")
    failing(tmp_path, exp)
    pages = list((tmp_path / "out" / "docs").rglob("validations/**/*.html"))
    assert len(pages) == 1
    text = pages[0].read_text()
    assert validation.ROW in text and "exists in" in text


def test_message_lists_the_first_problems_only(tmp_path, audio):
    rows = "".join(f"missing{i}.wav,x\n" for i in range(25))
    exp = experiment(tmp_path, "file,label\n" + rows)
    message, report = failing(tmp_path, exp)
    assert "25 problem(s)" in message and "... and 15 more" in message
    assert message.count("file not found") == validation.MAX_LISTED
    assert len(report["frames"]["train"]["problems"]) == 25


def test_fold_column_must_hold_whole_numbers(tmp_path, audio):
    exp = experiment(
        tmp_path, "file,label,fold\na.wav,x,0\nb.wav,y,1.5\nc.wav,z,\nd.wav,z,one\n", fold_column="fold"
    )
    message, report = failing(tmp_path, exp)
    assert "train.csv:row 2: column 'fold': '1.5' is not a whole fold number" in message
    assert "train.csv:row 3: column 'fold': empty cell" in message
    assert "train.csv:row 4: column 'fold': 'one' is not a number" in message


def test_a_column_named_as_the_splits_own_is_named_before_any_stage_runs(tmp_path, audio):
    exp = experiment(tmp_path, "file,label,row_id,fold\na.wav,x,1,0\nb.wav,y,2,1\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv: column 'row_id': the split adds each row's number under this name" in message
    assert problems(report) == [(None, "row_id", "column name not reserved")]  # one clash at a time
    exp = experiment(tmp_path, "file,label,fold\na.wav,x,0\nb.wav,y,1\n")
    message, report = failing(tmp_path, exp)
    assert "train.csv: column 'fold': the split writes the folds under this name" in message


def test_a_test_class_that_no_training_row_has_is_found_before_training(tmp_path, audio):
    """It used to fail the evaluate stage, after the whole training run."""
    test = tmp_path / "test.csv"
    test.write_text("file,label\nc.wav,z\nd.wav,z\n")
    exp = experiment(tmp_path, "file,label\na.wav,x\nb.wav,y\n", test_dataframe=str(test))
    message, report = failing(tmp_path, exp)
    assert (
        "test.csv:row 1: column 'label': 'z' is a class no training row has (the training classes: 'x', 'y')"
        in message
    )
    assert problems(report, "test") == [(1, "label", "test class seen in training")]  # each class once
    validation.validate(exp, tmp_path / "out", test_classes=False)  # the retrain flow's new rows alone
    test.write_text("file\nc.wav\n")  # no labels: predictions only
    validation.validate(exp, tmp_path / "out")


def test_classes_that_differ_by_case_or_spaces_are_warned_of(tmp_path, audio, caplog):
    """Class names are kept as written: a spreadsheet's stray space made 'no ' a class beside 'no'."""
    exp = experiment(tmp_path, "file,label\na.wav,yes\nb.wav,Yes\nc.wav, no\nd.wav,no\n")
    with caplog.at_level(logging.WARNING, logger="deuterium.validation"):
        validation.validate(exp, tmp_path / "out")
    said = [r.getMessage() for r in caplog.records if "different classes" in r.getMessage()]
    assert (
        len(said) == 1 and "column 'label': 'Yes' and 'yes'; ' no' and 'no' are different classes" in said[0]
    )
    caplog.clear()
    exp = experiment(tmp_path, "file,label\na.wav,yes\nb.wav,no\n")
    with caplog.at_level(logging.WARNING, logger="deuterium.validation"):
        validation.validate(exp, tmp_path / "out")
    assert not [r for r in caplog.records if "different classes" in r.getMessage()]


def table_params(tmp_path, problem_type: str, label: str, **tabular) -> dict:
    """A table's settings: train.csv and test.csv in tmp_path."""
    dataset = {
        "train_dataframe": str(tmp_path / "train.csv"),
        "test_dataframe": str(tmp_path / "test.csv"),
        "data_folder": str(tmp_path),
        "label_columns": [label],
    }
    return {"problem_type": problem_type, "dataset": dataset, "tabular": tabular}


def test_a_tables_input_columns_are_checked_in_every_frame_against_the_training_one(tmp_path):
    """A test frame without a training column, or with text in a numeric one, stopped the evaluate stage
    after training, naming neither the file nor the row; an inf training cell stopped the train stage with
    the row counted within a fold."""
    (tmp_path / "train.csv").write_text(
        "x1,x2,note,label\n1,0.5,a,yes\n2,0.25,b,no\n3,inf,c,yes\n4,0.75,d,no\n"
    )
    (tmp_path / "test.csv").write_text("label,x1,extra\nyes,1.5,q\nno,abc,r\nyes,?,s\n")
    params = table_params(tmp_path, "tabular_classification", "label", ignored_columns=["note"])
    message, report = failing(tmp_path, config.parse(params))
    assert problems(report) == [(3, "x2", "input columns")]
    assert problems(report, "test") == [
        (2, "x1", "input columns"),
        (3, "x1", "input columns"),
        (None, "x2", "input columns"),
    ]  # `note` is ignored, `extra` is not a training column: neither is asked for
    assert f"{tmp_path / 'train.csv'}:row 3: column 'x2': inf is not a finite float32 number" in message
    assert f"{tmp_path / 'test.csv'}: column 'x2': column missing: the model trains on it" in message
    assert f"{tmp_path / 'test.csv'}:row 2: column 'x1': 'abc' is not a number" in message

    (tmp_path / "train.csv").write_text("x1,x2,note,label\n1,0.5,a,yes\n2,0.25,b,no\n3,1,c,yes\n")
    (tmp_path / "test.csv").write_text("label,x2,x1\nyes,1,1.5\nno,,2\n")  # any order, a missing cell
    assert validation.validate(config.parse(params), tmp_path / "out")["success"] is True


def test_one_validate_run_names_every_problem_of_a_table_and_its_counts_agree(tmp_path, caplog):
    """A new user's table needed three runs for three problems (a reserved column name stopped the checks
    across frames), the per-frame lines said '0 problem(s)' above the problems found across frames, and
    an all-missing column, a negative weight or a negative count for poisson stopped the split or the
    train stage after validate had passed."""
    (tmp_path / "train.csv").write_text(
        "x1,x2,empty,wt,fold,y\n1,0.5,,1,0,3\n2,0.25,,-1,1,-2\n3,1,,1,0,4\n4,0.75,,1,1,-1\n"
    )
    (tmp_path / "test.csv").write_text("y,x1\n1,1.5\n")
    params = table_params(tmp_path, "tabular_regression", "y", distribution="poisson", weights_column="wt")
    with caplog.at_level("INFO", logger="deuterium.validation"):
        message, report = failing(tmp_path, config.parse(params))
    assert problems(report) == [
        (None, "fold", "column name not reserved"),
        (None, "empty", "input columns"),
        (2, "wt", "input columns"),
        (2, "y", "input columns"),
        (4, "y", "input columns"),
    ]
    assert problems(report, "test") == [(None, "x2", "input columns")]
    assert "column 'empty': every value is missing" in message
    assert (
        "train.csv:row 4: column 'y': -1.0: tabular.distribution poisson needs a non-negative response"
        in message
    )
    said = [
        r.getMessage() for r in caplog.records if "problem(s)" in r.getMessage() and "(" in r.getMessage()
    ]
    assert f"train ({tmp_path / 'train.csv'}): 5 problem(s)" in said
    assert f"test ({tmp_path / 'test.csv'}): 1 problem(s)" in said


def test_a_column_named_twice_in_the_header_is_named(tmp_path, audio):
    """pandas reads a second `label` as `label.1`, a column the user never wrote, missing at scoring."""
    exp = experiment(tmp_path, "file,label,label\na.wav,yes,no\nb.wav,no,yes\n")
    message, report = failing(tmp_path, exp)
    assert "column(s) ['label'] appear more than once in the header" in message
    assert problems(report) == [(None, None, "dataframe readable")]


def test_class_columns_are_read_as_written_and_the_others_as_pandas_reads_them(tmp_path):
    """Class names "01", "NA" and "None" stay text, an empty or blank class is an unlabelled row, and in the
    same file the other columns keep pandas' reading: "NA" there is missing and numbers are numbers."""
    (tmp_path / "t.csv").write_text("label,x,note\n01,1.5,NA\nNA,NA,a\nNone,2,None\n,3,\n  ,4,b\n")
    frame = dio.read_frame(tmp_path / "t.csv", text_columns=["label", "absent"])
    assert frame.label.tolist()[:3] == ["01", "NA", "None"]
    assert frame.label.isna().tolist() == [False, False, False, True, True]
    assert frame.x.dtype == np.float64 and frame.x.isna().tolist() == [False, True, False, False, False]
    assert frame.note.isna().tolist() == [True, False, True, True, False]
    plain = dio.read_frame(tmp_path / "t.csv")
    assert plain.label.isna().tolist() == [False, True, True, True, False]  # pandas: "NA", "None" missing


def test_a_csv_separated_by_semicolons_is_said_so(tmp_path, audio):
    """A spreadsheet saved where decimals take a comma separates by ';': pandas reads one column named
    'file;label' (or fails on a decimal comma), and the user would next hear 'no column file'."""
    exp = experiment(tmp_path, "file;label;weight\na.wav;yes;1,5\nb.wav;no;2\n")
    message, report = failing(tmp_path, exp)
    assert "its first line is separated by ';': save the file separated by commas (.csv)" in message
    assert problems(report) == [(None, None, "dataframe readable")]
    (tmp_path / "fine.csv").write_text("file\na.wav\n")  # one column, no other separator: read as it is
    assert list(dio.read_frame(tmp_path / "fine.csv").columns) == ["file"]
    (tmp_path / "comma.tsv").write_text("file,label\na.wav,yes\n")
    with pytest.raises(DataError, match=r"comma.tsv: the header is one column.*name the file .csv"):
        dio.read_frame(tmp_path / "comma.tsv")


def test_a_csv_that_is_not_utf8_names_its_line(tmp_path, audio):
    """A spreadsheet's export in a Windows code page: pandas says 'can't decode byte 0xe9 in position 3',
    an offset into its buffer; the user needs the line, and what to save instead."""
    exp = experiment(tmp_path, "file,label\n")
    (tmp_path / "train.csv").write_bytes("file,label\na.wav,yes\nb.wav,café\n".encode("cp1252"))
    message, report = failing(tmp_path, exp)
    assert "train.csv: line 3 is not UTF-8 text (byte 0xe9 in 'b.wav,café')" in message
    assert "save the file as UTF-8" in message
    assert problems(report) == [(None, None, "dataframe readable")]
    (tmp_path / "bom.csv").write_bytes("\ufefffile,label\na.wav,yes\n".encode())  # Excel's 'CSV UTF-8'
    assert list(dio.read_frame(tmp_path / "bom.csv").columns) == ["file", "label"]
