"""The champion registry (deuterium/registry.py): when a challenger is promoted, and the record on disk."""

import json
import math
from datetime import UTC, datetime

import pytest

from deuterium import registry
from deuterium.registry import Champion, Holdout, RegistryError, Score

HOLDOUT = Holdout(dataframe="data/fsdd/test.csv", md5="a" * 32)


def score(value: float, metric="Accuracy", greater=True, holdout=HOLDOUT) -> Score:
    return Score(metric=metric, greater_is_better=greater, value=value, holdout=holdout)


def champion(value: float, **kw) -> Champion:
    return Champion(
        **score(value, **kw).model_dump(),
        source="retrain",
        experiment="retrain-1",
        bento="digits:v1",
        promoted_at=datetime.now(UTC),
    )


def test_the_first_challenger_is_promoted():
    decision = registry.decide(None, score(0.5), margin=0.1, experiment="retrain-2")
    assert decision.promote and decision.champion is None
    assert decision.line() == "promote: challenger Accuracy 0.5; no champion yet"


@pytest.mark.parametrize(
    "champ, chall, greater, margin, promote, reason",
    [
        (0.80, 0.85, True, 0.01, True, "better by 0.05, more than the margin 0.01"),
        (0.80, 0.805, True, 0.01, False, "better by 0.005, but not by more than the margin 0.01"),
        (0.80, 0.80, True, 0.0, False, "as good, not better"),
        (0.80, 0.70, True, 0.0, False, "worse by 0.1"),
        (2.0, 1.5, False, 0.1, True, "better by 0.5, more than the margin 0.1"),  # an error: lower is better
        (2.0, 2.5, False, 0.0, False, "worse by 0.5"),
    ],
)
def test_a_challenger_must_beat_the_champion_by_more_than_the_margin(
    champ, chall, greater, margin, promote, reason
):
    metric = "Accuracy" if greater else "MAE"
    decision = registry.decide(
        champion(champ, metric=metric, greater=greater), score(chall, metric, greater), margin
    )
    assert decision.promote is promote and decision.reason == reason
    assert (decision.challenger, decision.champion) == (chall, champ)
    assert f"challenger {metric} {chall:g} vs champion {champ:g}" in decision.line()


def test_scores_on_another_holdout_or_metric_are_not_compared():
    other = Holdout(dataframe="data/fsdd/test.csv", md5="b" * 32)
    with pytest.raises(RegistryError, match="the holdout changed"):
        registry.decide(champion(0.8), score(0.9, holdout=other))
    with pytest.raises(RegistryError, match="scored with Accuracy, the challenger with F1"):
        registry.decide(champion(0.8), score(0.9, metric="F1"))
    with pytest.raises(RegistryError, match="margin"):
        registry.decide(champion(0.8), score(0.9), margin=-1)


def test_a_challenger_without_a_number_is_not_promoted():
    assert not registry.decide(champion(0.8), score(math.nan)).promote


def test_the_record_round_trips_and_decisions_accumulate(tmp_path):
    path = tmp_path / "registry" / "champion.json"
    assert registry.load(path) is None
    best = champion(0.9)
    registry.save(best, path)
    assert registry.load(path) == best
    for value in (0.91, 0.95):
        registry.record(registry.decide(best, score(value), 0.02), path)
    lines = (tmp_path / "registry" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line)["promote"] for line in lines] == [False, True]


def test_a_broken_record_is_an_error_that_names_the_file(tmp_path):
    path = tmp_path / "champion.json"
    path.write_text('{"metric": "Accuracy"}')
    with pytest.raises(RegistryError, match="champion.json: not a champion record"):
        registry.load(path)


def test_the_score_is_the_test_figure_of_evaluates_metrics():
    metrics = {"metric": "Accuracy", "greater_is_better": True, "validation": {"overall": {"Accuracy": 0.7}}}
    with pytest.raises(RegistryError, match="dataset.test_dataframe"):
        registry.score_from_metrics(metrics, HOLDOUT)
    metrics["test"] = {"Accuracy": 0.8}
    assert registry.score_from_metrics(metrics, HOLDOUT) == score(0.8)


def test_the_holdout_is_known_by_its_content(tmp_path):
    (tmp_path / "test.csv").write_text("file,digit\na.wav,1\n")
    first = registry.fingerprint(tmp_path / "test.csv", "data/test.csv")
    assert first.dataframe == "data/test.csv" and len(first.md5) == 32
    (tmp_path / "test.csv").write_text("file,digit\na.wav,2\n")
    assert registry.fingerprint(tmp_path / "test.csv").md5 != first.md5
    with pytest.raises(RegistryError, match="missing"):
        registry.fingerprint(tmp_path / "nope.csv")
