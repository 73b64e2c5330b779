"""Export the final fold models to one ONNX graph with its preprocessing settings, checked against PyTorch."""

import argparse
from pathlib import Path

from deuterium import cli, config, export, fitting, io, paths, problems, splitting

PARITY_ROWS = 16
CALIBRATION_ROWS = 64  # static INT8 only: other rows than the parity ones


def main(
    params: Path = Path("params.yaml"),
    split_dir: Path = paths.SPLIT,
    models_dir: Path = paths.PSEUDO,
    out_dir: Path = paths.EXPORT,
) -> None:
    exp = config.load(params)
    problem = problems.of(exp)
    info = io.read_json(split_dir / paths.DATA_INFO_FILE)
    folds = io.read_frame(split_dir / paths.FOLDS_FILE)
    model_exp, models = fitting.load_models(models_dir, problem, info)
    exp = problem.data.of_models(exp, model_exp)  # the data settings the models were trained with
    valid = folds[folds[splitting.FOLD] >= 0]
    rows = valid if len(valid) else folds
    sample = rows.head(PARITY_ROWS)
    files = problem.files(sample, exp) if len(sample) else []
    calibration = None
    if exp.export.int8_quantization == "static" and len(rows):  # none when inference only
        calibration = problem.files(rows.iloc[PARITY_ROWS : PARITY_ROWS + CALIBRATION_ROWS], exp) or None
    if not files and exp.dataset.test_dataframe is not None:  # inference only: no training rows
        test = io.read_frame(exp.dataset.test_dataframe).head(PARITY_ROWS)
        files = problem.files(test, exp, exp.dataset.test_data_folder)
    # the activation (softmax or sigmoid) as the models were trained
    export.export(exp, problems.of(model_exp), info, models, files, out_dir, calibration_files=calibration)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    parser.add_argument("--models", type=Path, default=paths.PSEUDO)
    parser.add_argument("--out", type=Path, default=paths.EXPORT)
    args = parser.parse_args()
    cli.run(main, args.params, args.split, args.models, args.out)
