import csv
import subprocess
import sys
from pathlib import Path

import pytest
from serving_support import ROOT, bentoml_env, write_audio

from deuterium.errors import DataError
from deuterium.scoring import Scorer
from serving import score


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "clips" / "sub").mkdir(parents=True)
    write_audio(tmp_path / "clips" / "a.wav", 2.0, 8000)
    write_audio(tmp_path / "clips" / "sub" / "b.flac", 1.0, 44100, 2, "FLAC", "PCM_24", seed=3)
    (tmp_path / "clips" / "broken.ogg").write_bytes(b"OggS" + b"\0" * 100)
    (tmp_path / "clips" / "readme.txt").write_text("not audio, and not picked up from a folder")
    (tmp_path / "list.csv").write_text(
        "audio,note\nclips/a.wav,ok\nclips/gone.wav,missing\n../outside.wav,escapes\n"
    )
    return tmp_path


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cli_scores_the_good_files_and_names_the_bad_ones(model_dir, inputs):
    out = inputs / "predictions.csv"
    args = [
        str(model_dir),
        "clips",
        "list.csv",
        "nothere.mp3",
        "gone.csv",
        "--out",
        str(out),
        "--providers",
        "CPUExecutionProvider",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "serving.score", *args],
        cwd=inputs,
        env=bentoml_env(inputs),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    for bad in ("clips/broken.ogg", "list.csv:4", "nothere.mp3", "gone.csv: no such dataframe"):
        assert f"failed: {bad}" in done.stderr
    assert "failed: list.csv:3: clips/gone.wav: no such file" in done.stderr  # the CSV's row, then the file
    rows = _read(out)
    assert [r["file"] for r in rows] == ["clips/a.wav", "clips/sub/b.flac", "clips/a.wav"]
    scorer = Scorer(model_dir, providers=["CPUExecutionProvider"])
    for row in rows:
        [want] = scorer.predict([scorer.load(inputs / row["file"])])
        assert row["label"] == want["label"]
        for label, p in want["probabilities"].items():
            assert float(row[f"prob_{label}"]) == pytest.approx(p, abs=1e-6)


def test_all_good_files_exit_zero(model_dir, inputs):
    out = inputs / "p.csv"
    done = subprocess.run(
        [sys.executable, "-m", "serving.score", str(model_dir), "clips/a.wav", "--out", str(out)],
        cwd=inputs,
        env=bentoml_env(inputs),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert len(_read(out)) == 1


def test_a_csv_without_the_column_is_one_clear_error(model_dir, inputs):
    with pytest.raises(DataError, match="no column 'path'.*--column"):
        score.main(model_dir, [inputs / "list.csv"], inputs / "p.csv", column="path")


def test_lists_are_read_as_the_pipeline_reads_dataframes(model_dir, inputs):
    """Excel's 'CSV UTF-8' (a byte-order mark, CRLF), a TSV and a Parquet list score as training read them;
    a CSV that is not UTF-8 is one clear error naming its line, not a traceback."""
    import pandas as pd

    (inputs / "excel.csv").write_bytes("audio,note\r\nclips/a.wav,ok\r\n".encode("utf-8-sig"))
    (inputs / "tabs.tsv").write_text("audio\tnote\nclips/sub/b.flac\tok\n")
    pd.DataFrame({"audio": ["clips/a.wav", None]}).to_parquet(inputs / "list.parquet")
    out = inputs / "p.csv"
    lists = [inputs / "excel.csv", inputs / "tabs.tsv", inputs / "list.parquet"]
    assert score.main(model_dir, lists, out) == 1  # the Parquet list's empty cell
    assert [r["file"] for r in _read(out)] == ["clips/a.wav", "clips/sub/b.flac", "clips/a.wav"]
    (inputs / "latin.csv").write_bytes("audio\nclips/caf\u00e9.wav\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv: line 2 is not UTF-8 text.*save the file as UTF-8"):
        score.main(model_dir, [inputs / "latin.csv"], inputs / "q.csv")


def test_the_output_never_replaces_an_input(model_dir, inputs):
    before = (inputs / "list.csv").read_bytes()
    for given, out in (("list.csv", "list.csv"), ("clips", "clips/a.wav"), ("clips", "clips")):
        with pytest.raises(DataError, match=r"--out .*(also an input|a folder)"):
            score.main(model_dir, [inputs / given], inputs / out)
    assert (inputs / "list.csv").read_bytes() == before
    done = subprocess.run(  # an unset shell variable: not the current folder
        [sys.executable, "-m", "serving.score", str(model_dir), ""],
        cwd=inputs,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "an empty path" in done.stderr
    assert not (inputs / "predictions.csv").exists()
    (inputs / "earlier.csv").write_text("file,label\nold.wav,3\n")  # a mistyped path keeps them
    assert score.main(model_dir, [inputs / "clipz"], inputs / "earlier.csv") == 1
    assert (inputs / "earlier.csv").read_text() == "file,label\nold.wav,3\n"


def test_a_missing_model_folder_is_one_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "serving.score", str(tmp_path / "none"), "x.wav"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "preprocessing.json" in done.stderr


def test_the_scorer_refuses_what_would_decode_too_big(model_dir, tmp_path):
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "huge.flac", np.zeros((384_000 * 10, 1), np.int16), 384_000, format="FLAC")
    sf.write(folder / "fine.wav", np.zeros((8000, 1), np.int16), 8000)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.score",
            str(model_dir),
            str(folder),
            "--out",
            str(tmp_path / "p.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1  # one file failed, after the others were written
    assert "huge.flac" in done.stderr and "more than the limit of 2000000" in done.stderr
    assert "fine.wav" in (tmp_path / "p.csv").read_text()


def test_without_an_nvidia_driver_cuda_is_not_asked_for(model_dir, monkeypatch, caplog):
    """onnxruntime-gpu offers CUDA on any machine and, asked without a GPU, prints a red error before it
    falls back: on a machine without the driver the CPU is asked for at once, quietly."""
    from deuterium import scoring

    monkeypatch.setattr(scoring, "_cuda_driver", lambda: False)
    with caplog.at_level("INFO", logger="deuterium.scoring"):
        sess = scoring.session(model_dir / "model.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert "no NVIDIA driver" in caplog.text and "but it runs on" not in caplog.text
