"""Dataframes of the Arabic Speech Commands dataset's ten digit words, for trying the default audio settings
on voices and recordings they were not tuned on.

    python -m bench.asc_digits PATH_TO_CHECKOUT [--out data/asc]

The dataset (Ghandoura, Hjabo and Al Dakkak, "Building and Benchmarking an Arabic Speech Commands Dataset for
Small-Footprint Keyword Spotting", Engineering Applications of Artificial Intelligence, 2021;
github.com/abdulkaderghandoura/arabic-speech-commands-dataset, CC BY 4.0) has 40 keywords from 30 speakers,
10 takes each, 1-second 16 kHz WAV files under dataset/<keyword>/<speaker>_NO_<take>.wav, and its own split
(train.csv, val.csv, test.csv) that never puts a speaker in two parts. Nothing of it is in this repository.

Writes `train_digits.csv` (the train and val parts' digit words: 2,400 clips, 24 speakers) and
`test_digits.csv` (the test part's: 600 clips, 6 other speakers) with the columns the default params.yaml
reads: `file` (relative to the checkout's dataset/ folder), `digit` (0-9) and `speaker`. Then, in
params.yaml, only the paths change:

    dataset.train_dataframe: <out>/train_digits.csv
    dataset.data_folder: <checkout>/dataset          (inside the project, e.g. a copy under data/)
    dataset.test_dataframe: <out>/test_digits.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_rows(checkout: Path, parts: list[str]) -> pd.DataFrame:
    frame = pd.concat([pd.read_csv(checkout / part) for part in parts], ignore_index=True)
    frame = frame[frame["class"].isin(DIGITS)].copy()
    frame["file"] = frame["file"].str.removeprefix("dataset/")
    frame["digit"] = frame["class"].map(DIGITS.index)
    frame["speaker"] = frame["file"].str.split("/").str[1].str.split("_").str[0]
    return frame[["file", "digit", "speaker"]].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkout", type=Path, help="a checkout of the dataset's repository")
    parser.add_argument("--out", type=Path, default=Path("data/asc"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train = digit_rows(args.checkout, ["train.csv", "val.csv"])
    test = digit_rows(args.checkout, ["test.csv"])
    shared = set(train.speaker) & set(test.speaker)
    if shared:
        raise SystemExit(f"speakers in both parts: {sorted(shared)}")
    train.to_csv(args.out / "train_digits.csv", index=False)
    test.to_csv(args.out / "test_digits.csv", index=False)
    print(
        f"{len(train)} training clips ({train.speaker.nunique()} speakers), "
        f"{len(test)} test clips ({test.speaker.nunique()} speakers) -> {args.out}"
    )


if __name__ == "__main__":
    main()
