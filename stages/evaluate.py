"""Score the final models: the chosen metric and the others per fold (and their mean and sd across folds),
out-of-fold and on the test dataframe."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from deuterium import (
    cli,
    config,
    evaluation,
    fitting,
    inference,
    io,
    paths,
    problems,
    runtime,
    splitting,
)
from deuterium.errors import DataError

log = logging.getLogger(__name__)


def main(
    params: Path = Path("params.yaml"),
    split_dir: Path = paths.SPLIT,
    models_dir: Path = paths.PSEUDO,
    out_dir: Path = paths.EVALUATE,
    metrics_file: Path = paths.METRICS,
    plots_dir: Path = paths.PLOTS,
) -> None:
    exp = config.load(params)
    out_dir.mkdir(parents=True, exist_ok=True)  # declared outputs, whatever the settings (no test data)
    plots_dir.mkdir(parents=True, exist_ok=True)
    problem = problems.of(exp)
    info = io.read_json(split_dir / paths.DATA_INFO_FILE)
    folds = io.read_frame(split_dir / paths.FOLDS_FILE)
    oof = io.read_frame(models_dir / paths.OOF_FILE)
    metric = exp.prediction.metric
    report: dict = {"metric": metric, "greater_is_better": problem.metrics()[metric].greater_is_better}
    plot_source = None
    if len(oof):
        targets = problem.encode(folds, exp, info)
        weights = problem.row_weights(folds, exp)
        preds = fitting.predictions_from(oof, problem.output_columns(info))
        report["validation"] = evaluation.oof_report(problem, oof, folds, targets, preds, weights)
        summary = evaluation.cross_validation_summary(report["validation"])
        if summary:  # two folds or more
            report["cross_validation_summary"] = summary
        rows = (
            pd.Series(range(len(folds)), index=folds[splitting.ROW_ID]).loc[oof[splitting.ROW_ID]].to_numpy()
        )
        plot_source = (targets[rows], preds)
        if metric not in report["validation"]["overall"]:
            w = None if weights is None else weights[rows]
            why = evaluation.why_not(problem, targets[rows], preds, metric, w)
            raise DataError(f"prediction.metric {metric} cannot be computed on the out-of-fold rows: {why}")

    if exp.dataset.test_dataframe is not None:
        test = problem.read_frame(exp.dataset.test_dataframe)
        model_exp, models = fitting.load_models(models_dir, problem, info)
        dev = runtime.device(exp.environment)
        preds = inference.predict(
            fitting.to_device(models, dev),
            problems.of(model_exp),  # softmax or sigmoid, as the models were trained
            problem.files(test, exp, exp.dataset.test_data_folder),
            problem.data.of_models(exp, model_exp),  # the data settings the models were trained with
            dev,
            "scoring test data",
        )
        io.write_frame(
            fitting.beside(test, problem.prediction_columns(preds, info)),
            out_dir / "test_predictions.parquet",
        )
        if all(c in test for c in exp.dataset.label_columns):
            targets = problem.encode(test, exp, info)
            weights = problem.row_weights(test, exp)
            report["test"] = evaluation.scores(problem, targets, preds, weights)
            if metric not in report["test"]:
                why = evaluation.why_not(problem, targets, preds, metric, weights)
                raise DataError(f"prediction.metric {metric} cannot be computed on the test rows: {why}")
            plot_source = (targets, preds)

    if (models_dir / paths.SEEDS_FILE).is_file():  # number_of_seeds > 1: every seed's score, their spread
        report["seeds"] = io.read_json(models_dir / paths.SEEDS_FILE)

    for name, table in (problem.plot(*plot_source, info) if plot_source else {}).items():
        plots_dir.mkdir(parents=True, exist_ok=True)
        table.to_csv(plots_dir / f"{name}.csv", index=False)
    io.write_json(report, metrics_file)
    for part in ("validation", "test"):
        if part in report:
            value = report[part]["overall"][metric] if part == "validation" else report[part][metric]
            log.info("%s %s: %.4f", part, metric, value)
    cv = report.get("cross_validation_summary", {})
    if metric in cv.get("mean", {}):
        log.info(
            "cross-validation %s: mean %.4f, sd %.4f over %d folds",
            metric,
            cv["mean"][metric],
            cv["sd"][metric],
            cv["folds"],
        )
    log.info("metrics: %s", metrics_file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--split", type=Path, default=paths.SPLIT)
    parser.add_argument("--models", type=Path, default=paths.PSEUDO)
    parser.add_argument("--out", type=Path, default=paths.EVALUATE)
    parser.add_argument("--metrics", type=Path, default=paths.METRICS)
    parser.add_argument("--plots", type=Path, default=paths.PLOTS)
    args = parser.parse_args()
    cli.run(main, args.params, args.split, args.models, args.out, args.metrics, args.plots)
