"""Export the final fold models to one ONNX graph with its preprocessing settings, checked against PyTorch."""

import argparse
from pathlib import Path

from deuterium import cli, config, export, fitting, io, paths, problems, splitting

PARITY_CLIPS = 16


def main(
    params: Path = Path("params.yaml"),
    split_dir: Path = paths.SPLIT,
    models_dir: Path = paths.PSEUDO,
    out_dir: Path = paths.EXPORT,
) -> None:
    exp = config.load(params)
    problem = problems.get(exp.problem_type)
    info = io.read_json(split_dir / paths.DATA_INFO_FILE)
    folds = io.read_frame(split_dir / paths.FOLDS_FILE)
    _, models = fitting.load_models(models_dir, problem, info)
    valid = folds[folds[splitting.FOLD] >= 0]
    sample = (valid if len(valid) else folds).head(PARITY_CLIPS)
    export.export(exp, problem, info, models, problem.files(sample, exp), out_dir)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    parser.add_argument("--models", type=Path, default=paths.PSEUDO)
    parser.add_argument("--out", type=Path, default=paths.EXPORT)
    args = parser.parse_args()
    cli.run(main, args.params, args.split, args.models, args.out)
