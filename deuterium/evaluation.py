"""Metrics per fold, out-of-fold overall and on the test dataframe, their mean and sd across folds, and the
tables DVC plots draw."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from deuterium import splitting
from deuterium.problems import ProblemType


def scores(
    problem: ProblemType, targets: np.ndarray, preds: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Every metric of the problem type that can be computed on these rows (`weights`: each row's, as the
    data type gives them: ProblemType.row_weights)."""
    return {
        name: value
        for name, (value, _) in _attempts(problem, targets, preds, weights).items()
        if value is not None
    }


def why_not(
    problem: ProblemType, targets: np.ndarray, preds: np.ndarray, name: str, weights: np.ndarray | None = None
) -> str:
    """Why metric `name` cannot be computed on these rows (scikit-learn's words)."""
    return _attempts(problem, targets, preds, weights)[name][1] or "it can"


def _attempts(problem, targets, preds, weights=None) -> dict[str, tuple[float | None, str | None]]:
    out = {}
    for name, metric in problem.metrics().items():
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            # ValueError: ROC_AUC with a class missing from a small fold; ZeroDivisionError: weights all 0
            try:
                value = float(metric.fn(problem.truth(targets), preds, weights))
            except (ValueError, ZeroDivisionError) as err:
                out[name] = (None, str(err).splitlines()[0] if str(err) else type(err).__name__)
                continue
        if np.isfinite(value):
            out[name] = (round(value, 6), None)
        else:  # scikit-learn warns and answers NaN where a metric is undefined
            out[name] = (
                None,
                str(said[-1].message).splitlines()[0] if said else "undefined (NaN) on these rows",
            )
    return out


def cross_validation_summary(validation: dict) -> dict:
    """H2O-3's cross-validation metrics summary: each metric's mean and sd (n - 1) across the folds'
    validation scores (`oof_report`'s fold{k} entries), as {"folds": k, "mean": {metric: ...}, "sd": {...}}
    so each reads as a row of the folds' table. A metric undefined in some fold (ROC_AUC without both
    classes) is left out; empty with fewer than 2 folds: a spread needs two."""
    folds = [scores for name, scores in validation.items() if name.startswith("fold")]
    if len(folds) < 2:
        return {}
    names = [name for name in folds[0] if all(name in scores for scores in folds)]
    values = {name: np.array([scores[name] for scores in folds], dtype=float) for name in names}
    return {
        "folds": len(folds),
        "mean": {name: round(float(v.mean()), 6) for name, v in values.items()},
        "sd": {name: round(float(v.std(ddof=1)), 6) for name, v in values.items()},
    }


def oof_report(
    problem: ProblemType,
    oof: pd.DataFrame,
    folds: pd.DataFrame,
    targets: np.ndarray,
    preds: np.ndarray,
    weights: np.ndarray | None = None,
) -> dict:
    """Out-of-fold scores, overall and per fold; `weights` are the rows of `folds`' (None: each counts once)."""
    by_row = pd.Series(np.arange(len(folds)), index=folds[splitting.ROW_ID])
    rows = by_row.loc[oof[splitting.ROW_ID]].to_numpy()
    w = None if weights is None else weights[rows]
    report = {"overall": scores(problem, targets[rows], preds, w)}
    for fold in sorted(oof[splitting.FOLD].unique()):
        mask = (oof[splitting.FOLD] == fold).to_numpy()
        report[f"fold{int(fold)}"] = scores(
            problem, targets[rows][mask], preds[mask], None if w is None else w[mask]
        )
    return report
