import gzip
import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from deuterium.errors import ConfigError, DataError
from deuterium.prepare import RECIPES, PrepareSettings, prepare
from stages import prepare as stage

MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist"
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ROWS = 50


def idx_bytes(name: str) -> bytes:
    return gzip.decompress((MNIST / f"{name}.gz").read_bytes())


def pixels(split: str) -> np.ndarray:
    return np.frombuffer(idx_bytes(FILES[split][0]), np.uint8, offset=16).reshape(-1, 28, 28)


def digits(split: str) -> np.ndarray:
    return np.frombuffer(idx_bytes(FILES[split][1]), np.uint8, offset=8)


def mnist(source: Path, max_rows: int | None = ROWS) -> PrepareSettings:
    return PrepareSettings(recipe="mnist_idx", source=source, max_rows=max_rows)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepare") / "out"
    return out, prepare(mnist(MNIST), out)


@pytest.mark.parametrize(("split", "index"), [("train", 0), ("train", ROWS - 1), ("test", 0), ("test", 17)])
def test_png_holds_the_idx_pixels(prepared, split, index):
    out, _ = prepared
    with Image.open(out / split / f"{index:05d}.png") as png:
        assert (png.format, png.mode, png.size) == ("PNG", "L", (28, 28))
        np.testing.assert_array_equal(np.asarray(png), pixels(split)[index])


@pytest.mark.parametrize("split", ["train", "test"])
def test_dataframe_lists_every_png_with_its_label(prepared, split):
    out, _ = prepared
    frame = pd.read_csv(out / f"{split}.csv")
    assert list(frame.columns) == ["image", "digit"]
    assert frame["image"].tolist() == [f"{split}/{i:05d}.png" for i in range(ROWS)]
    assert frame["digit"].tolist() == digits(split)[:ROWS].tolist()
    assert sorted(p.name for p in (out / split).iterdir()) == [f"{i:05d}.png" for i in range(ROWS)]


def test_summary_is_returned_and_written(prepared):
    out, summary = prepared
    assert json.loads((out / "prepared.json").read_text()) == summary
    assert summary == {
        "recipe": "mnist_idx",
        "rows": {"train": ROWS, "test": ROWS},
        "image_size": [28, 28],
        "columns": ["image", "digit"],
    }
    assert not out.with_name("out.partial").exists()


def test_raw_idx_files_without_gzip(tmp_path):
    for name in (n for pair in FILES.values() for n in pair):
        (tmp_path / name).write_bytes(idx_bytes(name))
    summary = prepare(mnist(tmp_path, max_rows=3), tmp_path / "out")
    assert summary["rows"] == {"train": 3, "test": 3}
    assert pd.read_csv(tmp_path / "out" / "test.csv")["digit"].tolist() == digits("test")[:3].tolist()


def source_with(tmp_path: Path, name: str, content: bytes) -> Path:
    """A copy of data/mnist with one file replaced by an uncompressed `content`."""
    source = tmp_path / "source"
    shutil.copytree(MNIST, source)
    (source / f"{name}.gz").unlink()
    (source / name).write_bytes(content)
    return source


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("train-images-idx3-ubyte", idx_bytes("train-images-idx3-ubyte")[:100], "100 bytes, but dimensions"),
        ("t10k-labels-idx1-ubyte", (2051).to_bytes(4, "big") + idx_bytes("t10k-labels-idx1-ubyte")[4:],
         "magic number 2051, expected 2049"),
        ("t10k-images-idx3-ubyte", idx_bytes("t10k-labels-idx1-ubyte"), "magic number 2049, expected 2051"),
        ("train-labels-idx1-ubyte", idx_bytes("t10k-labels-idx1-ubyte"), "60000 images, but"),
    ],
    ids=["truncated", "wrong-magic", "labels-as-images", "count-mismatch"],
)  # fmt: skip
def test_broken_idx_file_is_named(tmp_path, name, content, problem):
    source = source_with(tmp_path, name, content)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    with pytest.raises(DataError, match=problem) as caught:
        prepare(mnist(source), out)
    assert str(source / name) in str(caught.value)
    assert [p.name for p in out.iterdir()] == ["earlier.txt"]  # the earlier result stays whole
    assert not (tmp_path / "out.partial").exists()


def test_truncated_gzip_is_named(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(MNIST, source)
    gz = source / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"{gz}: cannot be read"):
        prepare(mnist(source), tmp_path / "out")


def test_recipe_none_replaces_out_dir_with_an_empty_one(tmp_path):
    out = tmp_path / "out"
    (out / "stale").mkdir(parents=True)
    assert prepare(PrepareSettings(), out) == {"recipe": "none"}
    assert [p.name for p in out.iterdir()] == ["prepared.json"]
    assert json.loads((out / "prepared.json").read_text()) == {"recipe": "none"}


def test_every_recipe_name_is_registered():
    recipes = typing.get_args(PrepareSettings.model_fields["recipe"].annotation)
    assert set(recipes) == set(RECIPES)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"recipe": "mnist_idx"}, "prepare.source: required with recipe mnist_idx"),
        ({"source": "data/mnist"}, "prepare.source: recipe none reads nothing"),
    ],
)
def test_settings_need_a_source_exactly_when_the_recipe_reads_one(section, message):
    with pytest.raises(ValidationError, match=message):
        PrepareSettings(**section)


def write_params(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize(
    ("section", "lines"),
    [
        (
            {"recipe": "mnist_idx"},
            ["params.yaml: prepare.source: required with recipe mnist_idx (the folder with its files)"],
        ),
        (
            {"recipe": "mnist_idx", "source": "data/mnist", "max_row": 5, "max_rows": 0},
            [
                "params.yaml: prepare.max_rows: Input should be greater than or equal to 1 (got 0)",
                "params.yaml: prepare.max_row: unknown key; allowed: recipe, source, max_rows",
            ],
        ),
        (
            {"recipe": "csv"},
            [
                "params.yaml: prepare.recipe: Input should be 'none', 'mnist_idx', 'mnist_idx_columns' or 'ecg_discord' (got 'csv')"
            ],
        ),
    ],
)
def test_stage_names_each_bad_key(tmp_path, section, lines):
    params = write_params(tmp_path, {"prepare": section})
    with pytest.raises(ConfigError) as caught:
        stage.main(params, tmp_path / "out")
    assert str(caught.value).replace(str(params), "params.yaml").splitlines() == lines
    assert not (tmp_path / "out").exists()


def test_stage_reads_only_its_own_section(tmp_path):
    """The other sections may be unwritten or invalid: this stage runs before they describe its output."""
    params = write_params(
        tmp_path,
        {"problem_type": "not-yet", "prepare": {"recipe": "mnist_idx", "source": str(MNIST), "max_rows": 2}},
    )
    assert stage.main(params, tmp_path / "out")["rows"] == {"train": 2, "test": 2}
    assert stage.main(write_params(tmp_path, {"dataset": {}}), tmp_path / "none") == {"recipe": "none"}


def test_mnist_idx_columns_writes_784_pixel_columns_and_the_digit(tmp_path):
    summary = prepare(PrepareSettings(recipe="mnist_idx_columns", source=MNIST, max_rows=3), tmp_path / "out")
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert summary["rows"] == {"train": 3, "test": 3} and train.shape == (3, 785)
    assert list(train.columns[:2]) == ["C1", "C2"] and not pd.api.types.is_numeric_dtype(
        train.digit
    )  # a class name


def test_ecg_discord_names_the_readings_and_labels_the_three_anomalies(tmp_path):
    ecg = Path(__file__).resolve().parents[1] / "data" / "ecg"
    prepare(PrepareSettings(recipe="ecg_discord", source=ecg), tmp_path / "out")
    train, test = (pd.read_csv(tmp_path / "out" / f"{s}.csv") for s in ("train", "test"))
    assert train.shape == (20, 211) and test.shape == (23, 211)
    assert train.anomaly.sum() == 0 and list(test.index[test.anomaly == 1]) == [20, 21, 22]
