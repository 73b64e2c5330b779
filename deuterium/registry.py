"""The champion registry: which model serves, and why. A small JSON file kept under git.

`registry/champion.json` names the champion: its score on the holdout (the test dataframe, known by
the content of the dataframe and of every file it names), the DVC experiment that made it and the
bento that serves it. A challenger replaces it only when, scored beside the champion on the same
holdout rows, it is better by more than a margin at a stated confidence: McNemar's exact test on the
rows each model gets right (classification), or a paired bootstrap of the metric's difference
(regression). Every decision, with both figures and the test, is appended to
`registry/decisions.jsonl` beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deuterium import io
from deuterium.errors import DataError, DeuteriumError

CHAMPION_FILE = Path("registry") / "champion.json"
DECISIONS_FILE = "decisions.jsonl"  # beside the champion file


class RegistryError(DeuteriumError):
    """The registry file is unreadable, or two scores cannot be compared."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Holdout(Record):
    dataframe: str
    md5: str  # of the dataframe file
    content: str | None = None  # sha256 of the dataframe and of every file it names (None: older records)


class Score(Record):
    """A model's figure on the holdout, as evaluate wrote it to metrics.json."""

    metric: str
    greater_is_better: bool
    value: float
    holdout: Holdout


class Champion(Score):
    source: Literal["retrain", "workspace"]
    experiment: str | None = None  # the DVC experiment (`dvc exp apply <experiment>` brings it back)
    rev: str | None = None  # its git commit: the experiment's, or HEAD for a workspace model
    bento: str | None = None  # the bento that serves it: `bentoml serve <bento>`
    train_dataframe: str | None = None
    data_folder: str | None = None
    promoted_at: datetime
    flow_run: str | None = None


class PairedTest(Record):
    """Champion and challenger scored on the same holdout rows in the same run, and whether the gain holds."""

    test: Literal["mcnemar_exact", "paired_bootstrap"]
    n: int  # holdout rows
    confidence: float
    p_value: float | None = None  # McNemar: one-sided, the challenger right more often than the champion
    bound: float | None = None  # bootstrap: the one-sided lower confidence bound of the gain, metric units
    champion_only: int | None = None  # McNemar: rows only the champion gets right
    challenger_only: int | None = None  # and rows only the challenger gets right

    def significant(self, margin: float) -> bool:
        if self.test == "mcnemar_exact":
            return self.p_value is not None and self.p_value < 1 - self.confidence
        return self.bound is not None and self.bound > margin

    def said(self) -> str:
        if self.test == "mcnemar_exact":
            return (
                f"McNemar's exact test p={self.p_value:.4g} at confidence {self.confidence:g} "
                f"({self.challenger_only} row(s) only the challenger gets right, {self.champion_only} only "
                f"the champion, of {self.n})"
            )
        return (
            f"paired bootstrap: the gain's {self.confidence:g} lower bound is {self.bound:.6g} "
            f"({self.n} rows)"
        )


class Decision(Record):
    promote: bool
    reason: str
    metric: str
    greater_is_better: bool
    challenger: float
    champion: float | None
    margin: float
    challenger_experiment: str | None
    champion_experiment: str | None
    test: str | None = None  # the paired test (None: no champion, or stored figures compared)
    p_value: float | None = None
    bound: float | None = None
    confidence: float | None = None
    n: int | None = None  # holdout rows both models were scored on
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def line(self) -> str:
        figures = f"challenger {self.metric} {self.challenger:.6g}" + (
            f" vs champion {self.champion:.6g}" if self.champion is not None else ""
        )
        verb = "promote" if self.promote else "keep the champion"
        return f"{verb}: {figures}; {self.reason}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(dataframe: Path, shown: str | None = None, files: Iterable[Path] | None = None) -> Holdout:
    """The holdout as its content: the dataframe's bytes and, given `files`, the bytes of every file it names."""
    if not dataframe.is_file():
        raise RegistryError(f"{shown or dataframe}: the holdout dataframe is missing")
    data = dataframe.read_bytes()
    content = None
    if files is not None:
        digest = hashlib.sha256(data)
        for file in files:  # a missing file is validation's to report; here it is a difference
            digest.update(b"\0" + (sha256(file).encode() if file.is_file() else f"missing {file}".encode()))
        content = digest.hexdigest()
    return Holdout(dataframe=shown or str(dataframe), md5=hashlib.md5(data).hexdigest(), content=content)


def overlap(new: dict[str, str], holdout: dict[str, str]) -> list[tuple[str, str]]:
    """(new file, holdout file) pairs with the same bytes; both arguments map a file's name to its sha256."""
    by_hash = {digest: name for name, digest in holdout.items()}
    return [(name, by_hash[digest]) for name, digest in new.items() if digest in by_hash]


def check_no_overlap(new: dict[str, str], holdout: dict[str, str], where: str, noun: str = "file") -> None:
    """Refuse new training rows whose files have the same bytes as a holdout file, whatever their names
    (`noun` "row": rows whose values are a holdout row's, for a data type whose input is the row)."""
    found = overlap(new, holdout)
    if found:
        shown = "; ".join(f"{n} is the holdout's {h}" for n, h in found[:10])
        more = f" (and {len(found) - 10} more)" if len(found) > 10 else ""
        raise DataError(
            f"{where}: {len(found)} new training {noun}(s) have the same content (sha256) as holdout "
            f"{noun}s: {shown}{more}. Training on the holdout would make the comparison meaningless: "
            "remove those rows"
        )


def mcnemar(champion_right: np.ndarray, challenger_right: np.ndarray, confidence: float) -> PairedTest:
    """McNemar's exact test on the discordant rows: is the challenger right where the champion is wrong
    more often than the other way round? One-sided, exact (binomial with p = 1/2)."""
    from scipy.stats import binomtest

    champion_right, challenger_right = np.asarray(champion_right, bool), np.asarray(challenger_right, bool)
    _check_pairs(len(champion_right), len(challenger_right), confidence)
    only_champion = int((champion_right & ~challenger_right).sum())
    only_challenger = int((challenger_right & ~champion_right).sum())
    discordant = only_champion + only_challenger
    p = binomtest(only_challenger, discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
    return PairedTest(
        test="mcnemar_exact",
        n=len(champion_right),
        confidence=confidence,
        p_value=float(p),
        champion_only=only_champion,
        challenger_only=only_challenger,
    )


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    truth: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    greater_is_better: bool,
    confidence: float,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedTest:
    """The gain (challenger's metric minus the champion's, signed so that more is better) on rows drawn with
    replacement, the same rows for both models; its one-sided lower confidence bound."""
    _check_pairs(len(champion), len(challenger), confidence)
    if len(truth) != len(champion):
        raise RegistryError(f"{len(truth)} true values for {len(champion)} predictions")
    sign = 1.0 if greater_is_better else -1.0
    rng = np.random.default_rng(seed)
    n = len(truth)
    gains = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, n, n)
        gains[i] = sign * (metric(truth[rows], challenger[rows]) - metric(truth[rows], champion[rows]))
    gains = gains[np.isfinite(gains)]
    bound = float(np.quantile(gains, 1 - confidence)) if len(gains) else float("nan")
    return PairedTest(test="paired_bootstrap", n=n, confidence=confidence, bound=bound)


def _check_pairs(n_champion: int, n_challenger: int, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise RegistryError(f"confidence must be between 0 and 1, got {confidence}")
    if n_champion != n_challenger:
        raise RegistryError(f"a paired test needs the same rows: {n_champion} vs {n_challenger}")
    if n_champion == 0:
        raise RegistryError("a paired test needs holdout rows; the test dataframe has none")


def score_from_metrics(metrics: dict, holdout: Holdout, source: str = "metrics.json") -> Score:
    """The chosen metric on the test dataframe, from the metrics evaluate writes."""
    try:
        metric, greater = metrics["metric"], metrics["greater_is_better"]
    except (KeyError, TypeError):
        raise RegistryError(
            f"{source}: no 'metric' and 'greater_is_better'; is it evaluate's metrics file?"
        ) from None
    value = (metrics.get("test") or {}).get(metric)
    if value is None:
        raise RegistryError(
            f"{source}: no test {metric}. Champion and challenger are compared on the test dataframe, "
            "the one holdout that new training data does not change: set dataset.test_dataframe"
        )
    return Score(metric=metric, greater_is_better=greater, value=value, holdout=holdout)


def load(path: Path = CHAMPION_FILE) -> Champion | None:
    """The champion, or None before the first promotion."""
    if not path.is_file():
        return None
    try:
        return Champion.model_validate_json(path.read_text())
    except ValidationError as err:
        raise RegistryError(
            f"{path}: not a champion record ({err.error_count()} problem(s): {err.errors()[0]['msg']})"
        ) from None


def save(champion: Champion, path: Path = CHAMPION_FILE) -> None:
    io.write_text(champion.model_dump_json(indent=2) + "\n", path)


def record(decision: Decision, path: Path = CHAMPION_FILE) -> Path:
    """Append the decision to the decisions file beside the champion file; returns that file."""
    log = path.with_name(DECISIONS_FILE)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(decision.model_dump(mode="json")) + "\n")
    return log


def check_comparable(
    champion: Champion, metric: str, holdout: Holdout, greater_is_better: bool | None = None
) -> None:
    """Raise unless a score with this metric on this holdout can be compared with the champion's."""
    if champion.metric != metric or greater_is_better not in (None, champion.greater_is_better):
        raise RegistryError(
            f"the champion was scored with {champion.metric}, the challenger with {metric}: "
            "they cannot be compared. Keep prediction.metric, or start a new registry"
        )
    old, new = champion.holdout, holdout
    by = "content" if old.content and new.content else "md5"  # an older record knows the dataframe's md5 only
    if getattr(old, by) != getattr(new, by):
        raise RegistryError(
            f"the holdout changed since the champion was scored ({old.dataframe} {by} "
            f"{getattr(old, by)[:8]}, now {new.dataframe} {by} {getattr(new, by)[:8]}): "
            "the figures cannot be compared. Score the champion on the new holdout (rerun its experiment) "
            "or start a new registry"
        )


def decide(
    champion: Champion | None,
    challenger: Score,
    margin: float = 0.0,
    experiment: str | None = None,
    paired: tuple[float, PairedTest] | None = None,
) -> Decision:
    """Promote the challenger only when it beats the champion by more than `margin` on the same holdout.

    `paired`: the champion's figure re-scored in this run on the challenger's rows, and the paired test
    of the two; the gain must then also hold at the test's confidence. Without it the champion's stored
    figure is compared, as by older registries.
    """
    if margin < 0 or not math.isfinite(margin):
        raise RegistryError(f"margin must be a number >= 0, got {margin}")
    common = {
        "metric": challenger.metric,
        "greater_is_better": challenger.greater_is_better,
        "challenger": challenger.value,
        "margin": margin,
        "challenger_experiment": experiment,
    }
    if champion is None:
        return Decision(
            promote=True, reason="no champion yet", champion=None, champion_experiment=None, **common
        )
    check_comparable(champion, challenger.metric, challenger.holdout, challenger.greater_is_better)
    champion_value = paired[0] if paired else champion.value
    common |= {"champion": champion_value, "champion_experiment": champion.experiment}
    test = paired[1] if paired else None
    if test is not None:
        common |= {
            "test": test.test,
            "p_value": test.p_value,
            "bound": test.bound,
            "confidence": test.confidence,
            "n": test.n,
        }
    if not math.isfinite(challenger.value):
        return Decision(
            promote=False, reason=f"the challenger's {challenger.metric} is not a number", **common
        )
    gain = (challenger.value - champion_value) * (1 if challenger.greater_is_better else -1)
    if gain > margin:
        if test is not None and not test.significant(margin):
            return Decision(
                promote=False,
                reason=f"better by {gain:.6g}, but not significantly: {test.said()}",
                **common,
            )
        reason = f"better by {gain:.6g}, more than the margin {margin:g}"
        return Decision(promote=True, reason=reason + (f"; {test.said()}" if test else ""), **common)
    if gain > 0:
        reason = f"better by {gain:.6g}, but not by more than the margin {margin:g}"
    else:
        reason = f"worse by {-gain:.6g}" if gain < 0 else "as good, not better"
    return Decision(promote=False, reason=reason, **common)
