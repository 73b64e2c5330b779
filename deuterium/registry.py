"""The champion registry: which model serves, and why. A small JSON file kept under git.

`registry/champion.json` names the champion: its score on the holdout (the test dataframe, known by
its md5), the DVC experiment that made it and the bento that serves it. A challenger replaces it
only when it scores better on the same holdout by more than a margin; every decision, with both
figures, is appended to `registry/decisions.jsonl` beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deuterium import io
from deuterium.errors import DeuteriumError

CHAMPION_FILE = Path("registry") / "champion.json"
DECISIONS_FILE = "decisions.jsonl"  # beside the champion file


class RegistryError(DeuteriumError):
    """The registry file is unreadable, or two scores cannot be compared."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Holdout(Record):
    dataframe: str
    md5: str


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
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def line(self) -> str:
        figures = f"challenger {self.metric} {self.challenger:.6g}" + (
            f" vs champion {self.champion:.6g}" if self.champion is not None else ""
        )
        verb = "promote" if self.promote else "keep the champion"
        return f"{verb}: {figures}; {self.reason}"


def fingerprint(dataframe: Path, shown: str | None = None) -> Holdout:
    if not dataframe.is_file():
        raise RegistryError(f"{shown or dataframe}: the holdout dataframe is missing")
    return Holdout(dataframe=shown or str(dataframe), md5=hashlib.md5(dataframe.read_bytes()).hexdigest())


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
    if champion.holdout.md5 != holdout.md5:
        raise RegistryError(
            f"the holdout changed since the champion was scored ({champion.holdout.dataframe} md5 "
            f"{champion.holdout.md5[:8]}, now {holdout.dataframe} md5 {holdout.md5[:8]}): "
            "the figures cannot be compared. Score the champion on the new holdout (rerun its experiment) "
            "or start a new registry"
        )


def decide(
    champion: Champion | None,
    challenger: Score,
    margin: float = 0.0,
    experiment: str | None = None,
) -> Decision:
    """Promote the challenger only when it beats the champion by more than `margin` on the same holdout."""
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
    common |= {"champion": champion.value, "champion_experiment": champion.experiment}
    if not math.isfinite(challenger.value):
        return Decision(
            promote=False, reason=f"the challenger's {challenger.metric} is not a number", **common
        )
    gain = (challenger.value - champion.value) * (1 if challenger.greater_is_better else -1)
    if gain > margin:
        return Decision(
            promote=True, reason=f"better by {gain:.6g}, more than the margin {margin:g}", **common
        )
    if gain > 0:
        reason = f"better by {gain:.6g}, but not by more than the margin {margin:g}"
    else:
        reason = f"worse by {-gain:.6g}" if gain < 0 else "as good, not better"
    return Decision(promote=False, reason=reason, **common)
