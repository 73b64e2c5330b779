"""Metrics per fold, out-of-fold overall and on the test dataframe, and the tables DVC plots draw."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deuterium import splitting
from deuterium.problems import ProblemType


def scores(problem: ProblemType, targets: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    out = {}
    for name, metric in problem.metrics().items():
        try:
            out[name] = round(float(metric.fn(problem.truth(targets), preds)), 6)
        except ValueError:  # e.g. ROC_AUC with a class missing from a small fold
            continue
    return out


def oof_report(
    problem: ProblemType, oof: pd.DataFrame, folds: pd.DataFrame, targets: np.ndarray, preds: np.ndarray
) -> dict:
    by_row = pd.Series(np.arange(len(folds)), index=folds[splitting.ROW_ID])
    rows = by_row.loc[oof[splitting.ROW_ID]].to_numpy()
    report = {"overall": scores(problem, targets[rows], preds)}
    for fold in sorted(oof[splitting.FOLD].unique()):
        mask = (oof[splitting.FOLD] == fold).to_numpy()
        report[f"fold{int(fold)}"] = scores(problem, targets[rows][mask], preds[mask])
    return report
