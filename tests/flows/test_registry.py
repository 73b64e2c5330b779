"""The champion registry (deuterium/registry.py): when a challenger is promoted, and the record on disk."""

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import stats

from deuterium import registry
from deuterium.errors import DataError
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


def test_the_holdout_is_known_by_the_content_of_the_files_it_names(tmp_path):
    (tmp_path / "test.csv").write_text("file,digit\na.wav,1\n")
    (tmp_path / "a.wav").write_bytes(b"one")
    first = registry.fingerprint(tmp_path / "test.csv", "test.csv", [tmp_path / "a.wav"])
    (tmp_path / "a.wav").write_bytes(b"two")  # the same dataframe, another recording under the same name
    second = registry.fingerprint(tmp_path / "test.csv", "test.csv", [tmp_path / "a.wav"])
    assert first.md5 == second.md5 and first.content != second.content
    best = champion(0.8, holdout=first)
    with pytest.raises(RegistryError, match="the holdout changed .* content"):
        registry.check_comparable(best, "Accuracy", second)
    registry.check_comparable(best, "Accuracy", first)
    registry.check_comparable(champion(0.8), "Accuracy", HOLDOUT.model_copy(update={"content": "c" * 64}))


def test_new_files_with_the_bytes_of_a_holdout_file_are_refused_whatever_their_name():
    holdout = {"0_george_0.wav": "h1", "7_george_1.wav": "h2"}
    assert registry.overlap({"new_a.wav": "n1", "new_b.wav": "n2"}, holdout) == []
    new = {"new_a.wav": "n1", "renamed.wav": "h2"}
    assert registry.overlap(new, holdout) == [("renamed.wav", "7_george_1.wav")]
    with pytest.raises(
        DataError, match=r"data/incoming: 1 new training file.*renamed.wav is the holdout's 7_george_1.wav"
    ):
        registry.check_no_overlap(new, holdout, "data/incoming")


def test_mcnemar_is_not_significant_when_the_models_differ_on_one_row_of_300():
    truth_right = np.ones(300, bool)
    champion_right = truth_right.copy()
    champion_right[:30] = False  # both wrong on 29 rows; the challenger right on one more
    challenger_right = champion_right.copy()
    challenger_right[0] = True
    test = registry.mcnemar(champion_right, challenger_right, 0.95)
    assert (test.test, test.n, test.challenger_only, test.champion_only) == ("mcnemar_exact", 300, 1, 0)
    assert test.p_value == pytest.approx(0.5) and not test.significant(0.0)

    decision = registry.decide(champion(0.9), score(271 / 300), 0.0, "retrain-2", (270 / 300, test))
    assert not decision.promote and "not significantly" in decision.reason
    assert "McNemar's exact test p=0.5" in decision.reason
    assert (decision.test, decision.p_value, decision.confidence, decision.n) == (
        "mcnemar_exact",
        0.5,
        0.95,
        300,
    )
    assert decision.champion == 270 / 300  # the figure scored in this run, not the stored 0.9


def test_mcnemar_promotes_a_challenger_right_where_the_champion_is_wrong_often_enough():
    champion_right = np.r_[np.zeros(20, bool), np.ones(280, bool)]
    challenger_right = np.r_[np.ones(18, bool), np.zeros(2, bool), np.ones(279, bool), False]
    test = registry.mcnemar(champion_right, challenger_right, 0.95)
    assert (test.challenger_only, test.champion_only) == (18, 1)
    assert test.p_value == pytest.approx(stats.binomtest(18, 19, 0.5, alternative="greater").pvalue)
    assert test.significant(0.0)
    decision = registry.decide(champion(0.9), score(297 / 300), 0.01, "retrain-2", (280 / 300, test))
    assert decision.promote and "McNemar" in decision.reason
    line = json.loads(decision.model_dump_json())
    assert {"test", "p_value", "bound", "confidence", "n", "champion", "challenger"} <= line.keys()
    # still better by more than the margin, or no promotion whatever the test says
    assert not registry.decide(champion(0.9), score(297 / 300), 0.1, None, (280 / 300, test)).promote


def test_no_discordant_rows_means_no_evidence():
    same = np.r_[np.ones(10, bool), np.zeros(5, bool)]
    assert registry.mcnemar(same, same, 0.95).p_value == 1.0
    with pytest.raises(RegistryError, match="same rows"):
        registry.mcnemar(same, same[:-1], 0.95)
    with pytest.raises(RegistryError, match="confidence"):
        registry.mcnemar(same, same, 1.5)


def mae(y, p):
    return float(np.abs(y - p).mean())


def test_the_paired_bootstrap_bounds_the_gain_of_a_regression():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(300, 1))
    champion_preds = truth + rng.normal(scale=1.0, size=truth.shape)
    better = truth + rng.normal(scale=0.5, size=truth.shape)
    test = registry.paired_bootstrap(mae, truth, champion_preds, better, False, 0.95, resamples=500)
    gain = mae(truth, champion_preds) - mae(truth, better)
    assert test.test == "paired_bootstrap" and test.n == 300 and 0 < test.bound < gain
    assert test.significant(0.0) and not test.significant(gain)

    almost = champion_preds.copy()
    almost[0] = truth[0]  # better on one row of 300
    weak = registry.paired_bootstrap(mae, truth, champion_preds, almost, False, 0.95, resamples=500)
    assert weak.bound <= 0 < mae(truth, champion_preds) - mae(truth, almost)
    first = champion(1.0, metric="MAE", greater=False)
    decision = registry.decide(
        first, score(mae(truth, almost), "MAE", False), 0.0, None, (mae(truth, champion_preds), weak)
    )
    assert not decision.promote and "not significantly: paired bootstrap" in decision.reason
    assert (decision.test, decision.bound, decision.n) == ("paired_bootstrap", weak.bound, 300)
