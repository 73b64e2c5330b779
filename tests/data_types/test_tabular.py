"""The tabular data type: H2O-3 Deep Learning's parameters, each shown by its effect on tiny tables, and bad
input answered with an error naming the column."""

from __future__ import annotations

import json
import logging
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from dvclive import Live
from safetensors.torch import load_file

from deuterium import config, export, problems, scoring
from deuterium import io as dio
from deuterium.data_types.tabular import trainer
from deuterium.data_types.tabular.decode import TabularDecoder
from deuterium.errors import ConfigError, DataError, InputError


def table_frame(n: int = 200, seed: int = 0, minority: float = 0.5) -> pd.DataFrame:
    """x1 decides the class (and the regression target), x2 is noise, colour has 3 levels and a gap."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    cut = np.quantile(x1, 1 - minority)
    colour = rng.choice(["red", "green", "blue"], size=n).astype(object)
    colour[::17] = None
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": rng.normal(size=n),
            "colour": colour,
            "label": np.where(x1 > cut, "yes", "no"),
            "target": 3 * x1 + rng.normal(scale=0.1, size=n),
        }
    )


def experiment(problem_type: str, frame: pd.DataFrame, label: str = "label", dataset=None, **tabular):
    params = {
        "problem_type": problem_type,
        "dataset": {
            "train_dataframe": "train.csv",
            "data_folder": ".",
            "label_columns": [label],
            **(dataset or {}),
        },
        "tabular": {
            "hidden": [8, 8],
            "epochs": 5,
            "seed": 1,
            "stopping_rounds": 0,
            "mini_batch_size": 8,
            **tabular,
        },
    }
    if problem_type != "tabular_anomaly":
        drop = "target" if label == "label" else "label"
        params["tabular"].setdefault("ignored_columns", [drop])
    exp = config.parse(params)
    problem = problems.of(exp)
    exp = problem.data.resolve(exp, {"tabular": problem.data.choose(problem.files(frame, exp), exp)})
    return exp, problems.of(exp)


def fit(problem_type: str, frame: pd.DataFrame, valid: pd.DataFrame | None = None, label="label", **tabular):
    exp, problem = experiment(problem_type, frame, label, **tabular)
    info = problem.label_info(frame, exp)
    kind = problem.task.name
    torch.manual_seed(exp.tabular.seed)  # as train_fold does: the initial weights from the seed
    model = problem.model(exp, problem.n_outputs(info))
    train = trainer.table(frame, problem.encode(frame, exp, info), exp, kind)
    held = trainer.table(valid, problem.encode(valid, exp, info), exp, kind) if valid is not None else None
    result = trainer.fit(exp, kind, model, train, held, problem.activate, seed=exp.tabular.seed)
    return exp, problem, model, result


def weights_abs(model) -> float:
    return float(sum(layer.weight.detach().abs().sum() for layer in model.layers))


# ---------------------------------------------------------------------------------- parameter families
def test_balance_classes_changes_the_class_counts_seen():
    frame = table_frame(minority=0.1)  # 180 "no", 20 "yes"
    *_, plain = fit("tabular_classification", frame, epochs=2)
    *_, balanced = fit("tabular_classification", frame, epochs=2, balance_classes=True)
    *_, factors = fit(
        "tabular_classification", frame, epochs=2, balance_classes=True, class_sampling_factors=[1.0, 3.0]
    )
    no, yes = plain.class_counts
    assert no == 9 * yes  # every row once per epoch
    assert balanced.class_counts[0] == balanced.class_counts[1]  # oversampled to equal classes
    assert factors.class_counts[1] == 3 * factors.class_counts[0] // 9  # 20 x 3 per 180 x 1


def test_max_after_balance_size_caps_the_rows_per_epoch():
    frame = table_frame(minority=0.1)
    *_, capped = fit(
        "tabular_classification", frame, epochs=1, balance_classes=True, max_after_balance_size=1.0
    )
    assert sum(capped.class_counts) == pytest.approx(len(frame), abs=2)


def test_l1_shrinks_the_weights():
    frame = table_frame()
    _, _, plain, _ = fit("tabular_classification", frame, epochs=5, mini_batch_size=1)
    _, _, sparse, _ = fit("tabular_classification", frame, epochs=5, mini_batch_size=1, l1=0.01)
    assert weights_abs(sparse) < 0.8 * weights_abs(plain)


def test_l2_shrinks_the_weights():
    frame = table_frame()
    _, _, plain, _ = fit("tabular_classification", frame, epochs=5, mini_batch_size=1)
    _, _, small, _ = fit("tabular_classification", frame, epochs=5, mini_batch_size=1, l2=0.05)
    assert sum(float((w.weight.detach() ** 2).sum()) for w in small.layers) < sum(
        float((w.weight.detach() ** 2).sum()) for w in plain.layers
    )


@pytest.mark.parametrize("adaptive_rate", [True, False])
def test_l1_and_l2_reach_the_weights_and_never_the_biases(adaptive_rate):
    """With ADADELTA the parameters are one flat tensor and the penalty acts on its weights' span."""
    exp, problem = experiment(
        "tabular_classification", table_frame(), l1=0.5, l2=0.25, adaptive_rate=adaptive_rate
    )
    model = problem.model(exp, 2)
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.uniform_(-1, 1)
    flat, n_weights = trainer.flatten(model) if adaptive_rate else (None, 0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.grad is None else p.grad
    trainer._penalize(model, exp.tabular, flat, n_weights)
    for layer in model.layers:
        w = layer.weight.detach()
        assert torch.allclose(layer.weight.grad, 0.5 * torch.sign(w) + 0.25 * w)
        assert torch.all(layer.bias.grad == 0)


def test_max_w2_bounds_each_units_squared_incoming_weights():
    frame = table_frame()
    kw = {"initial_weight_distribution": "normal", "initial_weight_scale": 1.0, "epochs": 2}
    _, _, free, _ = fit("tabular_classification", frame, **kw)
    _, _, bounded, _ = fit("tabular_classification", frame, max_w2=0.5, **kw)
    assert max(float((w.weight.detach() ** 2).sum(1).max()) for w in free.layers) > 0.5
    for layer in bounded.layers:
        assert float((layer.weight.detach() ** 2).sum(1).max()) <= 0.5 + 1e-5


def test_early_stopping_stops_and_says_why():
    frame = table_frame()
    *_, result = fit(
        "tabular_classification",
        frame,
        table_frame(seed=1),
        epochs=50,
        stopping_rounds=2,
        stopping_tolerance=0.5,
    )
    assert result.epochs < 50
    assert result.stopped.startswith("early stopping") and "logloss" in result.stopped


def test_the_moving_average_rule():
    assert not trainer.stop_early([1.0, 0.9, 0.8, 0.7], 2, 0.0, lower_is_better=True)
    assert trainer.stop_early([1.0, 0.9, 0.95, 0.96], 2, 0.0, lower_is_better=True)
    assert trainer.stop_early([1.0, 0.9, 0.89, 0.88], 2, 0.1, lower_is_better=True)  # under the tolerance
    assert not trainer.stop_early([1.0, 0.9], 2, 0.0, lower_is_better=True)  # 2 x rounds events needed


def test_max_runtime_secs_and_classification_stop_say_why():
    frame = table_frame()
    *_, timed = fit(
        "tabular_classification", frame, epochs=1000, max_runtime_secs=0.5, classification_stop=-1
    )
    assert timed.stopped.startswith("max_runtime_secs") and timed.epochs < 1000
    *_, good = fit("tabular_classification", frame, epochs=100, classification_stop=0.3)
    assert good.stopped.startswith("classification_stop") and good.epochs < 100


def test_regression_stop_stops_when_the_training_mse_is_under_it_and_says_why():
    frame = table_frame()
    *_, stopped = fit("tabular_regression", frame, label="target", epochs=40, regression_stop=1.0)
    mses = [e["train"]["MSE"] for e in stopped.history]
    assert stopped.stopped.startswith("regression_stop: training MSE") and stopped.epochs < 40
    assert mses[-1] <= 1.0 < min(mses[:-1])  # the first scoring event under it, not later
    *_, off = fit("tabular_regression", frame, label="target", epochs=40, regression_stop=-1)
    assert off.stopped == "trained the 40 epochs asked for" and off.epochs == 40
    assert min(e["train"]["MSE"] for e in off.history) <= 1.0  # it went under 1 and went on


def test_overwrite_with_best_model_keeps_the_best_scoring_model(tmp_path):
    """Validation logloss is lowest before the last of 30 epochs here (asserted below): with the setting on,
    the kept model (its saved weights, h2o_metrics.json) is that epoch's; off, the last epoch's."""
    frame, valid = table_frame(), table_frame(n=60, seed=5)
    kept = {}
    for on in (True, False):
        exp, problem = experiment(
            "tabular_classification", frame, epochs=30, overwrite_with_best_model=on, classification_stop=-1
        )
        folder = _train_fold(exp, problem, frame, tmp_path / str(on), tmp_path, valid)
        info = problem.label_info(frame, exp)
        y = problem.encode(valid, exp, info).argmax(1)
        history = [e["valid"]["logloss"] for e in trainer.read_state(folder)["scoring_history"]]
        reported = json.loads((folder / "h2o_metrics.json").read_text())["valid"]["logloss"]
        model = problem.model(exp, 2)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))  # the saved weights
        probs = trainer.predict(model, trainer.frame_matrix(exp.tabular.columns, valid), problem.activate)
        kept[on] = trainer.h2o_metrics("classification", y, probs, exp)["logloss"]
        assert reported == pytest.approx(kept[on], rel=1e-5)
        assert trainer.read_state(folder)["kept_epochs"] == (np.argmin(history) + 1 if on else 30)
    assert np.argmin(history) < len(history) - 1  # the last model is not the best one here
    assert kept[True] == pytest.approx(min(history), rel=1e-5)
    assert kept[False] == pytest.approx(history[-1], rel=1e-5) and kept[False] > kept[True]


def test_input_dropout_ratio_drops_inputs_in_training_only(tmp_path):
    frame = table_frame()
    rates = {}
    for ratio in (0.0, 0.3):
        exp, problem = experiment("tabular_classification", frame, epochs=5, input_dropout_ratio=ratio)
        info = problem.label_info(frame, exp)
        model = problem.model(exp, 2)
        dropped = {True: [0, 0], False: [0, 0]}  # by training mode: [inputs dropped, inputs not zero]

        def count(module, inputs, output, dropped=dropped):
            given = inputs[0] != 0
            dropped[module.training][0] += int((output[given] == 0).sum())
            dropped[module.training][1] += int(given.sum())

        model.net[0].register_forward_hook(count)  # the input dropout layer, on the encoded inputs
        train = trainer.table(frame, problem.encode(frame, exp, info), exp, "classification")
        trainer.fit(exp, "classification", model, train, train, problem.activate, seed=1)
        rates[ratio] = dropped[True][0] / dropped[True][1]
        assert dropped[False][0] == 0 and dropped[False][1] > 0  # scored every epoch, never dropped
    assert rates[0.0] == 0
    assert rates[0.3] == pytest.approx(0.3, abs=0.03)  # 3,000 draws: 5 epochs x 200 rows x 3 inputs
    rows = [{"x1": 0.3, "x2": -1.0, "colour": "red"}, {"x1": -0.2, "x2": 0.4, "colour": "blue"}]
    report = export.export(exp, problem, info, [model], rows, tmp_path / "export")
    assert report["max_abs_diff"] <= 1e-4  # the ONNX graph is the eval model: no dropout in it
    scorer = scoring.Scorer(tmp_path / "export")
    assert scorer.predict([scorer.load(r) for r in rows]) == scorer.predict([scorer.load(r) for r in rows])


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9999999])
def test_dropout_keeps_the_expectation_with_either_generator(p):
    from deuterium.data_types.tabular.model import Dropout

    layer, x = Dropout(p), torch.ones(400, 500)
    for generator in (None, np.random.default_rng(0)):
        layer.generator = generator
        out = layer(x)
        kept = out != 0
        assert torch.all(out[kept] == out[kept][:1])  # one scale for every kept unit (if any)
        if p < 0.99:
            assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.005)
            assert out.mean().item() == pytest.approx(1.0, abs=0.01)
        else:
            assert torch.isfinite(out).all() and kept.float().mean().item() < 0.001
    assert torch.equal(layer.eval()(x), x)


def test_dropouts_16_bit_draws_are_uniform_and_follow_the_generators_state():
    from deuterium.data_types.tabular.model import uniform_16_bits

    generator = np.random.default_rng(3)
    state = generator.bit_generator.state
    bits = uniform_16_bits(generator, 40_001)  # not a multiple of four: the last 64-bit draw is cut
    assert bits.dtype == np.uint16 and bits.shape == (40_001,)
    for lane in range(4):  # each quarter of the 64-bit outputs on its own
        share = np.bincount(bits[lane::4] >> 12, minlength=16) / len(bits[lane::4])
        assert np.abs(share - 1 / 16).max() < 0.01
    assert np.corrcoef(bits[0:-1:4].astype(float), bits[1::4].astype(float))[0, 1] == pytest.approx(
        0, abs=0.03
    )
    generator.bit_generator.state = state
    assert np.array_equal(uniform_16_bits(generator, 40_001), bits)  # a checkpoint's state redraws them
    assert not np.array_equal(uniform_16_bits(generator, 40_001), bits)  # and the state moved on


def test_fractional_epochs_train_that_share_of_the_rows():
    *_, result = fit("tabular_classification", table_frame(), epochs=0.5, mini_batch_size=10)
    assert result.samples == 100 and result.epochs == pytest.approx(0.5)


def test_adadelta_epsilon_is_per_row_so_a_mini_batch_steps_like_its_rows():
    """tabular.epsilon is H2O-3's (an update per row): a mini-batch of B rows updates with B x epsilon."""
    for batch in (1, 16):
        exp, problem = experiment(
            "tabular_classification", table_frame(), mini_batch_size=batch, epsilon=1e-7
        )
        model = problem.model(exp, 2)
        group = trainer._optimizer(model, exp.tabular, trainer.flatten(model)[0]).param_groups[0]
        assert group["eps"] == pytest.approx(1e-7 * batch) and group["rho"] == exp.tabular.rho


def test_manual_rate_anneals_and_ramps_the_momentum():
    exp, problem = experiment(
        "tabular_classification",
        table_frame(),
        adaptive_rate=False,
        rate=0.1,
        rate_annealing=1e-3,
        rate_decay=0.5,
        momentum_start=0.5,
        momentum_ramp=1000,
        momentum_stable=0.9,
    )
    model = problem.model(exp, 2)
    opt = trainer._optimizer(model, exp.tabular, None)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    trainer._set_rate(opt, exp.tabular, 1000)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 2)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.05 / 2)  # rate_decay per layer
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.9)
    trainer._set_rate(opt, exp.tabular, 500)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    "activation",
    ["tanh", "tanh_with_dropout", "rectifier", "rectifier_with_dropout", "maxout", "maxout_with_dropout"],
)
def test_every_activation_trains(activation):
    frame = table_frame()
    _, _, model, result = fit(
        "tabular_classification", frame, table_frame(seed=2), epochs=10, activation=activation
    )
    assert result.history[-1]["valid"]["misclassification"] < 0.3


def test_variable_importances_rank_the_informative_column_first():
    frame = table_frame(400)
    exp, _, model, _ = fit(
        "tabular_classification", frame, epochs=30, l1=1e-3, categorical_encoding="label_encoder"
    )
    table = trainer.importance_table(model, exp.tabular.columns)
    assert table.variable.iloc[0] == "x1"
    assert set(table.columns) == {"variable", "relative_importance", "scaled_importance", "percentage"}


@pytest.mark.parametrize(
    "encoding, width", [("one_hot_internal", 4), ("binary", 3), ("eigen", 1), ("label_encoder", 1)]
)
def test_categorical_encodings(encoding, width):
    exp, problem = experiment("tabular_classification", table_frame(), categorical_encoding=encoding)
    model = problem.model(exp, 2)
    assert model.pre.width == 2 + width  # x1, x2, colour's encoding


def test_a_text_column_of_mostly_numbers_is_said(caplog):
    """One stray '?' makes a CSV's numeric column text, so a categorical one: said in the log, with the cells."""
    frame = table_frame()
    frame["x2"] = frame["x2"].round(3).astype(str)
    frame.loc[[3, 50], "x2"] = ["?", "1,5"]
    with caplog.at_level("WARNING", logger="deuterium.data_types.tabular.columns"):
        exp, _ = experiment("tabular_classification", frame)
    assert next(c for c in exp.tabular.columns if c["name"] == "x2")["kind"] == "categorical"
    said = [r.getMessage() for r in caplog.records if "'x2'" in r.getMessage()]
    assert said and "198 of 200 values are numbers" in said[0] and "'?', '1,5'" in said[0], caplog.text
    assert not [r for r in caplog.records if "'colour'" in r.getMessage()]  # real text: nothing said


def test_a_text_column_of_all_different_values_is_said(caplog):
    """An identifier or a date read as text is a categorical column of one level per row: said, with the
    way out (ignored_columns); a column with repeated levels is not."""
    frame = table_frame()
    frame["customer"] = [f"C-{i:05d}" for i in range(len(frame))]
    with caplog.at_level("WARNING", logger="deuterium.data_types.tabular.columns"):
        experiment("tabular_classification", frame)
    said = [r.getMessage() for r in caplog.records if "'customer'" in r.getMessage()]
    assert said and "every one of its 200 values is different" in said[0] and "ignored_columns" in said[0]
    assert not [r for r in caplog.records if "'colour'" in r.getMessage()]
    caplog.clear()
    with caplog.at_level("WARNING", logger="deuterium.data_types.tabular.columns"):
        experiment("tabular_classification", frame, ignored_columns=["customer"])
    assert "'customer'" not in caplog.text


def test_many_levels_are_hashed_into_max_categorical_features_buckets():
    frame = table_frame()
    frame["colour"] = [f"c{i}" for i in range(len(frame))]
    exp, problem = experiment("tabular_classification", frame, max_categorical_features=8)
    spec = next(c for c in exp.tabular.columns if c["name"] == "colour")
    assert spec["hashed"] and spec["n_codes"] == 9
    codes = TabularDecoder(problem.data.preprocessing(exp)).load({"x1": 0, "x2": 0, "colour": "never seen"})
    assert 0 <= codes[2] < 8


def test_a_number_written_as_text_is_the_level_of_that_number():
    """One '?' makes a CSV column text, its cells "1.0", "2.0": a test frame reading the column as numbers
    (1.0), or a JSON row sending 1 or "1", meant those levels, not the missing one."""
    frame = table_frame()
    frame["grade"] = (frame.index % 3 + 1).astype(float).astype(str).astype(object)
    frame.loc[5, "grade"] = "?"
    exp, problem = experiment("tabular_classification", frame)
    spec = next(c for c in exp.tabular.columns if c["name"] == "grade")
    assert spec["levels"] == ["1", "2", "3", "?"]
    decoder = TabularDecoder(problem.data.preprocessing(exp))
    row = {"x1": 0.0, "x2": 0.0, "colour": "red"}
    j = [c["name"] for c in exp.tabular.columns].index("grade")
    for same in (2.0, 2, "2", "2.0", " 2.00", np.float32(2.0)):
        assert decoder.load({**row, "grade": same})[j] == 1, same
    assert decoder.load({**row, "grade": "?"})[j] == 3 and decoder.load({**row, "grade": 2.5})[j] == 4
    old_model = {
        **spec,
        "levels": ["1.0", "2.0", "3.0", "?"],
    }  # exported before: its levels as the CSV had them
    assert TabularDecoder({"columns": [old_model]}).load({"grade": 2})[0] == 1


def test_a_boolean_column_takes_json_true_and_its_text_spellings(tmp_path):
    """pandas reads a CSV's true/TRUE/True as a boolean column (levels "True", "False"); a client sending
    JSON's true or the text "true" means that level, not the missing one."""
    frame = table_frame()
    frame["member"] = frame.index % 2 == 0
    frame.to_csv(tmp_path / "t.csv", index=False)
    text = (tmp_path / "t.csv").read_text().replace("True", "true").replace("False", "FALSE")
    (tmp_path / "t.csv").write_text(text)
    exp, problem = experiment("tabular_classification", pd.read_csv(tmp_path / "t.csv"))
    spec = next(c for c in exp.tabular.columns if c["name"] == "member")
    assert spec["levels"] == ["False", "True"]
    decoder = TabularDecoder(problem.data.preprocessing(exp))
    row = {"x1": 0.0, "x2": 0.0, "colour": "red"}
    j = [c["name"] for c in exp.tabular.columns].index("member")
    for same in (True, np.True_, "true", "TRUE", " True"):
        assert decoder.load({**row, "member": same})[j] == 1, same
    assert (
        decoder.load({**row, "member": "false"})[j] == 0 and decoder.load({**row, "member": "maybe"})[j] == 2
    )


def test_a_parquet_frame_of_nullable_and_date_columns_trains_as_the_service_scores(tmp_path):
    """Parquet keeps pandas' types: a nullable boolean's missing cell is pandas' NA (neither None nor NaN),
    and a date column is datetime64, whose numpy text is not pandas'. Training must give each row the codes
    that the service gives the same row sent as JSON (a date as pandas writes it)."""
    frame = table_frame()
    frame["ok"] = pd.array(np.arange(len(frame)) % 2 == 0, dtype="boolean")
    frame.loc[3, "ok"] = pd.NA
    frame["day"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(frame.index % 4, unit="D")
    frame.loc[5, "day"] = pd.NaT
    frame["count"] = pd.array(frame.index % 7, dtype="Int64")
    frame.loc[6, "count"] = pd.NA
    frame.to_parquet(tmp_path / "train.parquet", index=False)
    frame = dio.read_frame(tmp_path / "train.parquet")
    exp, problem = experiment("tabular_classification", frame)
    specs = {c["name"]: c for c in exp.tabular.columns}
    assert specs["day"]["levels"] == [f"2020-01-0{d} 00:00:00" for d in range(1, 5)]
    matrix = trainer.frame_matrix(exp.tabular.columns, frame)
    decoder = TabularDecoder(problem.data.preprocessing(exp))
    for i in (0, 1, 3, 5, 6):  # a missing boolean, date and count among them
        row = {c: None if pd.isna(v) else v for c, v in frame.iloc[i].items()}
        row["day"] = None if row["day"] is None else str(row["day"])
        row["count"] = None if row["count"] is None else int(row["count"])
        row["ok"] = None if row["ok"] is None else bool(row["ok"])
        np.testing.assert_array_equal(matrix[i], decoder.load(row), err_msg=f"row {i}")
    names = [c["name"] for c in exp.tabular.columns]
    missing_level = {n: specs[n]["n_codes"] - 1 for n in ("ok", "day")}
    assert matrix[3, names.index("ok")] == missing_level["ok"]
    assert matrix[5, names.index("day")] == missing_level["day"]
    assert matrix[0, names.index("day")] == 0 and np.isnan(matrix[6, names.index("count")])


def test_missing_values_skip_drops_rows_and_mean_imputation_fills():
    frame = table_frame()
    frame.loc[::4, "x2"] = np.nan
    *_, imputed = fit("tabular_classification", frame, epochs=1)
    *_, skipped = fit("tabular_classification", frame, epochs=1, missing_values_handling="skip")
    assert imputed.samples == 200 and skipped.samples == 150


def test_ignored_and_constant_columns_are_not_inputs():
    frame = table_frame().assign(same=1.0)
    exp, _ = experiment("tabular_classification", frame, ignored_columns=["x2", "target"])
    assert [c["name"] for c in exp.tabular.columns] == ["x1", "colour"]
    exp, _ = experiment("tabular_classification", frame, ignore_const_cols=False)
    assert "same" in [c["name"] for c in exp.tabular.columns]


def test_weights_column_zero_rows_do_not_count():
    frame = table_frame().assign(w=1.0)
    frame.loc[frame.label == "yes", "w"] = 0.0  # only "no" rows count: the model learns to say "no"
    exp, problem, model, _ = fit("tabular_classification", frame, epochs=10, weights_column="w")
    assert "w" not in [c["name"] for c in exp.tabular.columns]
    probs = trainer.predict(model, trainer.frame_matrix(exp.tabular.columns, frame), problem.activate)
    assert (probs.argmax(1) == 0).mean() > 0.95


@pytest.mark.parametrize(
    "distribution", ["gaussian", "laplace", "huber", "quantile", "poisson", "gamma", "tweedie"]
)
def test_regression_distributions_learn(distribution):
    frame = table_frame()
    label = "target"
    if distribution in ("poisson", "gamma", "tweedie"):
        frame["target"] = np.exp(frame.x1)  # positive
    _, _, _, result = fit(
        "tabular_regression",
        frame,
        table_frame(seed=3).assign(
            target=lambda f: np.exp(f.x1) if distribution in ("poisson", "gamma", "tweedie") else f.target
        ),
        label=label,
        epochs=20,
        distribution=distribution,
    )
    first, last = result.history[0]["valid"], result.history[-1]["valid"]
    assert last["R2"] > 0.5 and np.isfinite(last["mean_residual_deviance"])
    assert set(first) >= {"MSE", "RMSE", "MAE", "RMSLE", "R2", "mean_residual_deviance"}


def test_offset_column_is_added_to_the_prediction():
    frame = table_frame().assign(off=5.0)
    exp, problem, model, _ = fit(
        "tabular_regression", frame, label="target", epochs=2, offset_column="off", ignore_const_cols=False
    )
    x = trainer.frame_matrix(exp.tabular.columns, frame)
    shifted = trainer.frame_matrix(exp.tabular.columns, frame.assign(off=6.0))
    diff = trainer.predict(model, shifted, problem.activate) - trainer.predict(model, x, problem.activate)
    assert np.allclose(diff, 1.0, atol=1e-4)


def test_a_missing_offset_is_named_not_taken_as_zero():
    """The graph adds the offset to the prediction; an empty one would silently be 0 there."""
    frame = table_frame().assign(off=5.0)
    frame.loc[[3, 7], "off"] = np.nan
    exp, problem = experiment("tabular_regression", frame, "target", offset_column="off")
    found = problem.data.check_rows(frame, frame, exp)
    assert [(row, column) for row, column, _, why in found if "offset" in why] == [(3, "off"), (7, "off")]
    decoder = TabularDecoder(problem.data.preprocessing(exp))
    row = {"x1": 0.5, "x2": 1.0, "colour": "red", "off": None}
    with pytest.raises(InputError, match=r"off: no value; it is the offset \(tabular.offset_column\)"):
        decoder.load(row)
    assert np.isfinite(decoder.load({**row, "off": 1.5})).all()


def test_row_weights_are_the_weights_column_for_the_metrics():
    """The evaluate stage weighs metrics.json by them (tests/test_evaluation.py: weight k = the row k times)."""
    frame = table_frame(n=4).assign(w=[1.0, np.nan, 2.5, 0.0])
    exp, problem = experiment("tabular_classification", frame, weights_column="w")
    assert problem.row_weights(frame, exp).tolist() == [1.0, 0.0, 2.5, 0.0]  # empty: 0, as in training
    assert problem.row_weights(frame.drop(columns="w"), exp) is None  # a test frame without it: rows once
    plain, plain_problem = experiment("tabular_classification", frame)
    assert plain_problem.row_weights(frame, plain) is None


def test_a_column_without_a_name_is_warned_of(caplog):
    """A training CSV saved with pandas' default to_csv(index=True) starts with an unnamed row-number column:
    an input that every request would have to send as 'Unnamed: 0'."""
    frame = table_frame().reset_index().rename(columns={"index": "Unnamed: 0"})
    with caplog.at_level(logging.WARNING):
        exp, _ = experiment("tabular_classification", frame)
    said = [r.getMessage() for r in caplog.records if "no name in the header" in r.getMessage()]
    assert len(said) == 1 and "'Unnamed: 0'" in said[0] and "pandas' index" in said[0], said
    assert "Unnamed: 0" in [c["name"] for c in exp.tabular.columns]  # still used, as H2O-3 would
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        experiment("tabular_classification", table_frame())
    assert not [r for r in caplog.records if "no name in the header" in r.getMessage()]


def test_a_json_file_saved_as_the_services_request_body_scores_as_its_row():
    """{"input": {...}}, what /predict_json takes, saved to a file for the standalone scorer."""
    import json as json_module

    frame = table_frame()
    exp, problem = experiment("tabular_classification", frame)
    decoder = TabularDecoder(problem.data.preprocessing(exp))
    row = {"x1": 0.5, "x2": -1.0, "colour": "red"}
    wrapped = json_module.dumps({"input": row}).encode()
    assert np.array_equal(decoder.load(wrapped, "row.json"), decoder.load(row))
    with pytest.raises(InputError, match="x1: column missing"):
        decoder.load(json_module.dumps({"input": row, "other": 1}).encode(), "row.json")  # not the body alone


def test_base64_may_come_as_a_data_url():
    from deuterium.data_types.base import from_base64

    assert from_base64("image_base64", "data:image/png;base64,aGVsbG8=") == b"hello"
    assert from_base64("image_base64", "aGVsbG8=") == b"hello"
    with pytest.raises(InputError, match="image_base64: not valid base64"):
        from_base64("image_base64", "data:image/png,hello")  # a data URL that is not base64


def test_numbers_with_a_decimal_comma_are_warned_of(caplog):
    """A spreadsheet saved where decimals take a comma (quoted, so the CSV still parses): "0,76" is text."""
    frame = table_frame().assign(price=lambda f: [f"{v:.2f}".replace(".", ",") for v in f.x2])
    with caplog.at_level(logging.WARNING):
        experiment("tabular_classification", frame)
    said = [r.getMessage() for r in caplog.records if "decimal comma" in r.getMessage()]
    assert len(said) == 1 and "column 'price'" in said[0], said
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        experiment(
            "tabular_classification",
            table_frame().assign(city=lambda f: ["Paris, FR", "Lyon, FR"] * (len(f) // 2)),
        )
    assert not [r for r in caplog.records if "decimal comma" in r.getMessage()]


def test_classification_metrics_are_h2os():
    frame = table_frame()
    *_, result = fit("tabular_classification", frame, table_frame(seed=4), epochs=3, max_hit_ratio_k=2)
    valid = result.history[-1]["valid"]
    assert {
        "MSE",
        "RMSE",
        "logloss",
        "AUC",
        "AUCPR",
        "mean_per_class_error",
        "confusion_matrix",
        "hit_ratios",
    } <= set(valid)
    assert valid["hit_ratios"][1] == 1.0 and np.array(valid["confusion_matrix"]).sum() == 200


@pytest.mark.parametrize("weighted", [False, True])
def test_classification_metrics_agree_with_sklearns(weighted):
    """h2o_metrics makes logloss, misclassification and mean per-class error without sklearn's functions
    (for speed): they give sklearn's values, with row weights and with a class that no row has."""
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = rng.choice([0, 1, 3], size=500)  # class 2 of 4 has no rows
    out = rng.dirichlet(np.ones(4), size=500).astype(np.float32)
    out[np.arange(100), y[:100]] += 2.0  # some rows right, so the errors are not all near 1
    out /= out.sum(1, keepdims=True)
    w = rng.uniform(0.2, 3.0, size=500) if weighted else None
    exp, _ = experiment("tabular_classification", table_frame())
    m = trainer.h2o_metrics("classification", y, out, exp, w)
    p = out.astype(np.float64) / out.astype(np.float64).sum(1, keepdims=True)
    picked = p.argmax(1)
    assert m["logloss"] == pytest.approx(skm.log_loss(y, p, labels=range(4), sample_weight=w), rel=1e-9)
    assert m["misclassification"] == pytest.approx(1 - skm.accuracy_score(y, picked, sample_weight=w))
    assert m["mean_per_class_error"] == pytest.approx(
        1 - skm.balanced_accuracy_score(y, picked, sample_weight=w)
    )
    assert m["confusion_matrix"] == skm.confusion_matrix(y, picked, labels=range(4)).tolist()  # row counts
    assert 0.3 < m["misclassification"] < 0.9


def _three_classes(seed: int) -> pd.DataFrame:
    frame = table_frame(seed=seed)
    return frame.assign(
        label=pd.cut(frame.x1, [-np.inf, -0.5, 0.5, np.inf], labels=["lo", "mid", "hi"]).astype(str)
    )


def test_multinomial_auc_is_the_kept_models_unless_it_is_the_stopping_metric():
    """H2O-3's default (auc_type NONE): no multinomial AUC per scoring event; the kept model's is reported,
    and it is that model's. As the stopping metric it is computed at every event."""
    frame, valid = _three_classes(0), _three_classes(4)
    exp, problem, model, result = fit("tabular_classification", frame, valid, epochs=3)
    kept = result.history[result.kept]
    assert all("AUC" not in e["valid"] for e in result.history if e is not kept)
    info = problem.label_info(frame, exp)
    held = trainer.table(valid, problem.encode(valid, exp, info), exp, "classification")
    probs = trainer.predict(model, held.x, problem.activate)
    assert kept["valid"]["AUC"] == pytest.approx(
        trainer.h2o_metrics("classification", held.y, probs, exp)["AUC"]
    )
    assert 0.5 < kept["valid"]["AUC"] <= 1 and "AUCPR" in kept["train"]
    *_, by_auc = fit("tabular_classification", frame, valid, epochs=3, stopping_metric="AUC")
    assert all("AUC" in e["valid"] and "AUCPR" in e["train"] for e in by_auc.history)


# ---------------------------------------------------------------------------------- cross-validation folds
def _split(tmp_path, monkeypatch, frame: pd.DataFrame, fold_assignment: str) -> pd.DataFrame:
    """The split stage on a project of `frame` (4 folds): its folds, dealt by the data type's choice."""
    import yaml

    from stages import split

    frame.to_csv(tmp_path / "train.csv", index=False)
    params = {
        "problem_type": "tabular_classification",
        "dataset": {
            "train_dataframe": "train.csv",
            "data_folder": ".",
            "label_columns": ["label"],
            "number_of_folds": 4,
        },
        "tabular": {"ignored_columns": ["target"], "fold_assignment": fold_assignment},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    split.main(tmp_path / "params.yaml", tmp_path / "split")
    return pd.read_parquet(tmp_path / "split" / "folds.parquet")


def test_fold_assignment_modulo_puts_row_i_in_fold_i_mod_k(tmp_path, monkeypatch):
    folds = _split(tmp_path, monkeypatch, table_frame(), "modulo")
    assert folds.fold.tolist() == [i % 4 for i in range(200)]
    random = _split(tmp_path, monkeypatch, table_frame(), "auto")  # auto: random, as H2O-3
    assert random.fold.tolist() != [i % 4 for i in range(200)]
    assert sorted(random.fold.value_counts().tolist()) == [50, 50, 50, 50]
    assert random.fold.tolist() == _split(tmp_path, monkeypatch, table_frame(), "random").fold.tolist()


def test_fold_assignment_stratified_keeps_the_class_proportions_in_every_fold(tmp_path, monkeypatch):
    frame = table_frame(minority=0.1)  # 20 "yes" in 200: 5 per fold of 50
    stratified = _split(tmp_path, monkeypatch, frame, "stratified")
    assert stratified.groupby("fold").label.apply(lambda y: (y == "yes").sum()).tolist() == [5, 5, 5, 5]
    random = _split(tmp_path, monkeypatch, frame, "random")
    assert random.groupby("fold").label.apply(lambda y: (y == "yes").sum()).tolist() != [5, 5, 5, 5]


def test_a_fold_assignment_that_clashes_is_a_config_error_naming_the_key():
    frame = table_frame().assign(my_fold=np.arange(200) % 3)
    with pytest.raises(
        ConfigError, match="tabular.fold_assignment 'modulo' and dataset.fold_column 'my_fold'"
    ):
        experiment(
            "tabular_classification", frame, fold_assignment="modulo", dataset={"fold_column": "my_fold"}
        )
    exp, _ = experiment("tabular_classification", frame, dataset={"fold_column": "my_fold"})  # auto: fine
    with pytest.raises(
        ConfigError, match="tabular.fold_assignment 'stratified' needs a categorical response"
    ):
        experiment("tabular_regression", frame, label="target", fold_assignment="stratified")
    with pytest.raises(
        ConfigError, match="tabular.fold_assignment 'random' needs dataset.validation_strategy"
    ):
        experiment(
            "tabular_classification",
            frame,
            fold_assignment="random",
            dataset={"validation_strategy": "automatic_holdout"},
        )
    with pytest.raises(ConfigError, match="tabular.fold_assignment"):
        experiment("tabular_classification", frame, fold_assignment="sequential")  # not one of H2O-3's


# ---------------------------------------------------------------------------------- through the stages
@pytest.fixture(scope="module")
def stages_run(tmp_path_factory):
    """A tabular classification project (3 folds, all trained, a labeled test frame) through split, train,
    pseudo_label, evaluate and export, by their main()s as the CLI calls them."""
    import os

    import yaml

    from deuterium import paths
    from stages import evaluate, pseudo_label, split, train
    from stages import export as export_stage

    root = tmp_path_factory.mktemp("tabular_stages")
    table_frame(240).to_csv(root / "train.csv", index=False)
    table_frame(60, seed=9).to_csv(root / "test.csv", index=False)
    params = {
        "problem_type": "tabular_classification",
        "dataset": {
            "train_dataframe": "train.csv",
            "test_dataframe": "test.csv",
            "data_folder": ".",
            "label_columns": ["label"],
            "validation_strategy": "k_fold",
            "number_of_folds": 3,
            "selected_folds": "all",
        },
        "tabular": {
            "ignored_columns": ["target"],
            "hidden": [8],
            "epochs": 3,
            "seed": 1,
            "stopping_rounds": 0,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    before = os.getcwd()
    os.chdir(root)  # the data paths in params.yaml are relative to the project
    try:
        split.main(root / "params.yaml", root / paths.SPLIT)
        train.main(root / "params.yaml", root / paths.SPLIT, root / paths.TRAIN, root / paths.CHECKPOINTS)
        pseudo_label.main(
            root / "params.yaml",
            root / paths.SPLIT,
            root / paths.TRAIN,
            root / paths.PSEUDO,
            root / paths.CHECKPOINTS,
        )
        evaluate.main(
            root / "params.yaml",
            root / paths.SPLIT,
            root / paths.PSEUDO,
            root / paths.EVALUATE,
            root / paths.METRICS,
            root / paths.PLOTS,
        )
        export_stage.main(root / "params.yaml", root / paths.SPLIT, root / paths.PSEUDO, root / paths.EXPORT)
    finally:
        os.chdir(before)
    return root


def test_metrics_have_the_cross_validation_summary(stages_run):
    report = json.loads((stages_run / "metrics.json").read_text())
    summary = report["cross_validation_summary"]
    assert summary["folds"] == 3
    for name in ("Accuracy", "LogLoss"):
        folds = [report["validation"][f"fold{k}"][name] for k in range(3)]
        assert summary["mean"][name] == pytest.approx(np.mean(folds), abs=1e-6)
        assert summary["sd"][name] == pytest.approx(np.std(folds, ddof=1), abs=1e-6)


def test_the_standalone_scorer_scores_every_row_of_a_frame(stages_run, tmp_path, caplog):
    """python -m serving.score artifacts/export test.csv: one output row per frame row, as evaluate scored
    them; a row that cannot be scored is named (file, row, column) and the others are still written."""
    from serving import score

    model = stages_run / "artifacts/export"
    assert score.main(model, [stages_run / "test.csv"], tmp_path / "p.csv") == 0
    scored = pd.read_csv(tmp_path / "p.csv")
    evaluated = pd.read_parquet(stages_run / "artifacts/evaluate/test_predictions.parquet")
    assert scored.row.tolist() == [f"{stages_run / 'test.csv'}:{i}" for i in range(1, 61)]
    assert scored.label.tolist() == evaluated.predicted_label.tolist()
    assert np.allclose(scored[["prob_no", "prob_yes"]], evaluated[["prob_no", "prob_yes"]], atol=1e-5)

    some = table_frame(3, seed=9)
    some.loc[1, "x1"] = np.nan  # missing: the training mean
    some.to_parquet(tmp_path / "some.parquet")
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "a.json").write_text(json.dumps({"x1": 0.3, "x2": None, "colour": "purple"}))  # an unseen level
    (rows / "b.json").write_text(json.dumps({"x1": "abc", "x2": 1.0, "colour": "red"}))
    assert score.main(model, [tmp_path / "some.parquet", rows], tmp_path / "q.csv") == 1  # b.json failed
    scored = pd.read_csv(tmp_path / "q.csv")
    assert scored.row.tolist() == [
        *(f"{tmp_path / 'some.parquet'}:{i}" for i in (1, 2, 3)),
        str(rows / "a.json"),
    ]
    assert scored.label.notna().all()
    assert f"{rows / 'b.json'}: x1: 'abc' is not a number" in caplog.text

    # one cell that is not a number makes pandas read the CSV column as text: only its row fails
    typo = table_frame(4, seed=3).astype({"x1": object})
    typo.loc[2, "x1"] = "1,5"
    typo.to_csv(tmp_path / "typo.csv", index=False)
    assert score.main(model, [tmp_path / "typo.csv"], tmp_path / "t.csv") == 1
    assert pd.read_csv(tmp_path / "t.csv").row.tolist() == [f"{tmp_path / 'typo.csv'}:{i}" for i in (1, 2, 4)]
    assert f"{tmp_path / 'typo.csv'}:3: x1: '1,5' is not a number" in caplog.text

    # a file without a column the model takes: one failure naming it, not one per row; the others score
    table_frame(50, seed=4).drop(columns="x2").to_csv(tmp_path / "no_x2.csv", index=False)
    caplog.clear()
    assert score.main(model, [tmp_path / "no_x2.csv", tmp_path / "typo.csv"], tmp_path / "u.csv") == 2
    said = [r.getMessage() for r in caplog.records if "no_x2.csv" in r.getMessage()]
    assert said == [
        f"failed: {tmp_path / 'no_x2.csv'}: no column 'x2': the model was trained with it (an empty cell when unknown)"
    ]

    # a file that cannot be read, or is not there, is one failure too: the run goes on to the others
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    caplog.clear()
    given = [tmp_path / "broken.parquet", tmp_path / "gone.csv", tmp_path / "some.parquet"]
    assert score.main(model, given, tmp_path / "v.csv") == 2
    assert pd.read_csv(tmp_path / "v.csv").row.tolist() == [
        f"{tmp_path / 'some.parquet'}:{i}" for i in (1, 2, 3)
    ]
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("failed: ")]
    assert [m.split(":")[1].strip() for m in failed] == [
        str(tmp_path / "broken.parquet"),
        str(tmp_path / "gone.csv"),
    ]
    assert len(pd.read_csv(tmp_path / "u.csv")) == 3  # typo.csv's good rows


def test_the_retrain_flow_scores_the_holdout_rows_with_an_exported_model(stages_run):
    """flows/retrain.py scores champion and challenger again on the holdout: here, its rows."""
    from flows.retrain import holdout_files, holdout_of, model_outputs, paired_comparison

    exp = config.load(stages_run / "params.yaml")
    _, frame, rows = holdout_files(stages_run, exp)
    outputs, info = model_outputs(stages_run / "artifacts/export", rows)
    evaluated = pd.read_parquet(stages_run / "artifacts/evaluate/test_predictions.parquet")
    assert np.allclose(outputs, evaluated[["prob_no", "prob_yes"]], atol=1e-5)
    champion, challenger, test = paired_comparison(exp, frame, (outputs, info), (outputs, info), 0.95)
    assert champion == challenger and test.n == 60 and not test.significant(0.0)
    assert holdout_of(stages_run, exp).content is not None


# ---------------------------------------------------------------------------------- models from other runs
def _train_fold(exp, problem, frame, out, tmp_path, valid=None):
    info = problem.label_info(frame, exp)
    targets = problem.encode(frame, exp, info)
    valid_targets = targets[:0] if valid is None else problem.encode(valid, exp, info)
    valid = frame.head(0) if valid is None else valid
    live = Live(str(tmp_path / "live"), report=None, save_dvc_exp=False, dvcyaml=None)
    trainer.train_fold(
        exp, problem, info, frame, targets, valid, valid_targets, 0, out, tmp_path / "ck", live
    )
    return out / "fold0"


def test_checkpoint_continues_from_the_saved_epoch_count(tmp_path):
    frame = table_frame()
    exp, problem = experiment("tabular_classification", frame, epochs=2)
    first = _train_fold(exp, problem, frame, tmp_path / "first", tmp_path)
    assert trainer.read_state(first)["epochs"] == pytest.approx(2)
    exp2, problem2 = experiment("tabular_classification", frame, epochs=5, checkpoint=str(first))
    second = _train_fold(exp2, problem2, frame, tmp_path / "second", tmp_path)
    state = trainer.read_state(second)
    assert state["epochs"] == pytest.approx(5)
    assert [round(e["epochs"]) for e in state["scoring_history"]] == [3, 4, 5]
    exp3, problem3 = experiment("tabular_classification", frame, epochs=2, checkpoint=str(first))
    with pytest.raises(ConfigError, match="not more than the checkpoint's"):
        _train_fold(exp3, problem3, frame, tmp_path / "third", tmp_path)


def _search_fold(exp, problem, frame, valid, folder, after_epoch, adopt=False):
    """train_fold as a search trial runs it: reporting every scoring event, its checkpoints in folder/ck."""
    info = problem.label_info(frame, exp)
    live = Live(str(folder / "live"), report=None, save_dvc_exp=False, dvcyaml=None)
    trainer.train_fold(
        exp,
        problem,
        info,
        frame,
        problem.encode(frame, exp, info),
        valid,
        problem.encode(valid, exp, info),
        0,
        folder / "model",
        folder / "ck",
        live,
        after_epoch=after_epoch,
        adopt=adopt,
    )
    return folder / "model" / "fold0"


def test_an_adopted_checkpoint_goes_on_with_the_new_settings(tmp_path, caplog):
    """PBT's exploit (deuterium/search.py): a donor's checkpoint after 2 of 4 epochs, continued by a taker with
    its own rate and l2: only the remaining epochs, from the donor's weights, under the taker's settings."""
    frame, valid = table_frame(), table_frame(60, seed=1)
    manual = {"epochs": 4, "adaptive_rate": False, "rate": 0.01, "overwrite_with_best_model": False}
    exp, problem = experiment("tabular_classification", frame, **manual)
    taken = tmp_path / "taken.pt"

    def keep_epoch_2(name, state):
        if round(state.epoch) == 2:
            shutil.copy(tmp_path / "donor" / "ck" / name / trainer.CHECKPOINT_FILE, taken)

    donor = _search_fold(exp, problem, frame, valid, tmp_path / "donor", keep_epoch_2)
    at_2 = torch.load(taken, weights_only=True)["model"]

    def take(tag: str, **settings):
        exp, problem = experiment("tabular_classification", frame, **{**manual, **settings})
        (tmp_path / tag / "ck" / "fold0").mkdir(parents=True)
        shutil.copy(taken, tmp_path / tag / "ck" / "fold0" / trainer.CHECKPOINT_FILE)
        reported = []
        folder = _search_fold(
            exp, problem, frame, valid, tmp_path / tag, lambda n, s: reported.append(s.epoch), adopt=True
        )
        return reported, load_file(str(folder / "model.safetensors")), trainer.read_state(folder)

    # its own settings again (a trial restored from its own checkpoint): exactly the uninterrupted run
    reported, weights, _ = take("same")
    assert reported == [3, 4]
    assert all(torch.equal(w, load_file(str(donor / "model.safetensors"))[k]) for k, w in weights.items())
    with caplog.at_level("INFO"):
        reported, weights, state = take("still", rate=1e-30)  # too small a rate to move a float32 weight
    assert "continuing checkpoint" in caplog.text and reported == [3, 4]
    assert all(torch.equal(w, at_2[k]) for k, w in weights.items())  # the donor's weights, unmoved
    donors = trainer.read_state(donor)["scoring_history"]
    assert [e["train"] for e in state["scoring_history"][:2]] == [e["train"] for e in donors[:2]]
    assert [e["epochs"] for e in state["scoring_history"]] == [1, 2, 3, 4]
    _, faster, _ = take("faster", rate=0.05)
    _, shrunk, _ = take("shrunk", rate=0.05, l2=0.05)
    norm = lambda w: sum(float(v.abs().sum()) for k, v in w.items() if k.endswith("weight"))  # noqa: E731
    assert norm(shrunk) < norm(faster)
    with pytest.raises(
        ConfigError, match=r"fold0: cannot continue .* tabular.hidden \[8, 8\] \(this run: \[16, 8\]\)"
    ):
        take("wider", hidden=[16, 8])


def test_pretrained_autoencoder_starts_the_hidden_layers(tmp_path):
    frame = table_frame()
    ae_exp, ae_problem = experiment(
        "tabular_anomaly", frame.drop(columns=["target"]), epochs=2, ignored_columns=[]
    )
    folder = _train_fold(ae_exp, ae_problem, frame.drop(columns=["target"]), tmp_path / "ae", tmp_path)
    exp, problem = experiment("tabular_classification", frame, epochs=1, pretrained_autoencoder=str(folder))
    model = problem.model(exp, 2)
    trainer.load_pretrained_autoencoder(model, folder)
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert torch.equal(model.layers[0].weight, saved["net.1.weight"])


def test_export_weights_and_biases_and_the_tables(tmp_path):
    frame = table_frame()
    exp, problem = experiment("tabular_classification", frame, epochs=1, export_weights_and_biases=True)
    folder = _train_fold(exp, problem, frame, tmp_path / "out", tmp_path)
    for name in (
        "weights_and_biases.safetensors",
        "variable_importances.csv",
        "h2o_metrics.json",
        "tabular_state.json",
    ):
        assert (folder / name).is_file()


# ---------------------------------------------------------------------------------- anomaly
def test_autoencoder_scores_an_outlier_highest():
    rng = np.random.default_rng(0)
    base = np.sin(np.linspace(0, 6, 30))
    normal = pd.DataFrame(
        base + 0.05 * rng.normal(size=(40, 30)), columns=[f"t{i}" for i in range(30)]
    ).assign(a=0)
    odd = normal.head(3).copy()
    odd.iloc[:, :30] = -odd.iloc[:, :30]
    exp, problem, model, _ = fit(
        "tabular_anomaly", normal, label="a", epochs=30, activation="tanh", hidden=[10, 4, 10]
    )
    test = pd.concat([normal, odd], ignore_index=True)
    errors = trainer.predict(model, trainer.frame_matrix(exp.tabular.columns, test), problem.activate)[:, 0]
    assert set(np.argsort(-errors)[:3]) == {40, 41, 42}


# ---------------------------------------------------------------------------------- scoring: ONNX with preprocessing
def test_onnx_scores_missing_and_unseen_levels_like_pytorch(tmp_path):
    frame = table_frame()
    exp, problem, model, _ = fit("tabular_classification", frame, epochs=2)
    info = problem.label_info(frame, exp)
    rows = [
        {"x1": 0.3, "x2": -1.0, "colour": "red"},
        {"x1": None, "x2": 0.5, "colour": None},  # missing: the mean, the missing level
        {"x1": 1.0, "x2": 0.0, "colour": "purple"},  # a level never seen in training
    ]
    report = export.export(exp, problem, info, [model], rows, tmp_path / "export")
    assert report["max_abs_diff"] <= 1e-4
    scorer = scoring.Scorer(tmp_path / "export")
    out = scorer.predict([scorer.load(r) for r in rows])
    assert all(set(o["probabilities"]) == {"no", "yes"} for o in out)
    unseen, missing = scorer.load(rows[2]), scorer.load({**rows[2], "colour": None})
    assert np.array_equal(unseen, missing)  # an unseen level scores as the missing level

    # an output that is not a finite number is an error for that input, not NaN in the JSON or the CSV
    from serving import score

    assert scorer.format(np.array([np.nan, 0.5], dtype=np.float32)) == {"error": scoring.NOT_FINITE}
    raw = scorer.raw
    scorer.raw = lambda inputs: np.where(np.arange(len(inputs))[:, None] == 1, np.inf, raw(inputs))
    items = [score.Item(f"rows.csv:{i}", None, row=r) for i, r in enumerate(rows, start=1)]
    scored, failures = score.score(scorer, items, "row")
    assert [r["row"] for r in scored] == ["rows.csv:1", "rows.csv:3"]
    assert failures == [f"rows.csv:2: {scoring.NOT_FINITE}"]


def test_one_hot_of_many_levels_grows_the_graph_by_the_levels_not_their_square(tmp_path):
    """One-hot was rows of an identity matrix stored in the graph: a column of 8,000 levels made a
    256 MB model.onnx. It is a comparison with the codes now; the encoding, the scores and weights saved
    before (with the matrix) are unchanged."""
    frame = table_frame(3000, seed=5)
    frame["customer"] = [f"c{i}" for i in range(len(frame))]
    exp, problem, model, _ = fit("tabular_classification", frame, epochs=1, hidden=[4])
    k = [c["name"] for _, c in model.pre.cats].index("customer")
    i, spec = model.pre.cats[k]
    n = spec["n_codes"]
    x = torch.tensor(trainer.frame_matrix(exp.tabular.columns, frame.head(50)), dtype=torch.float32)
    start = model.pre.width - sum(c["n_codes"] for _, c in model.pre.cats[k:])
    encoded = model.pre(x)[:, start : start + n]
    assert torch.equal(encoded, torch.eye(n)[x[:, i].long()])  # the identity's rows, as before
    rows = frame.drop(columns=["label", "target"]).head(5).to_dict(orient="records")
    info = problem.label_info(frame, exp)
    report = export.export(exp, problem, info, [model], rows, tmp_path / "export")
    assert report["max_abs_diff"] <= 1e-4
    size = (tmp_path / "export" / "model.onnx").stat().st_size
    assert size < 100 * 4 * n, size  # the first layer's n x 4 weights and little else; n^2 floats: 36 MB
    model.load_state_dict({**model.state_dict(), f"pre.cat{k}": torch.eye(n)})  # saved with the matrix


# ---------------------------------------------------------------------------------- bad input, named
def test_a_response_column_that_does_not_exist():
    with pytest.raises(DataError, match="response column 'price'"):
        experiment("tabular_regression", table_frame(), label="price")


def test_a_categorical_response_with_a_gaussian_distribution():
    with pytest.raises(ConfigError, match="response column 'label'.*gaussian"):
        experiment("tabular_classification", table_frame(), distribution="gaussian")
    with pytest.raises(ConfigError, match="response column 'label' is not numeric"):
        experiment("tabular_regression", table_frame(), distribution="gaussian", ignored_columns=["target"])


def test_a_response_the_distribution_cannot_take_is_named_with_its_rows():
    """A negative count for poisson gave NaN deviance at every scoring event, and early stopping on it kept
    the first epoch's model, with exit 0 (H2O-3 refuses it: 'Response must be non-negative')."""
    frame = table_frame()
    negative = [i + 1 for i in np.flatnonzero(frame.target < 0)[:10]]
    for distribution, word in (
        ("poisson", "non-negative"),
        ("tweedie", "non-negative"),
        ("gamma", "positive"),
    ):
        with pytest.raises(DataError, match=rf"'target', row\(s\) {', '.join(map(str, negative))} .*{word}"):
            experiment("tabular_regression", frame, label="target", distribution=distribution)
    frame["target"] = frame.target.abs()
    experiment("tabular_regression", frame, label="target", distribution="poisson")  # zero and up: fine
    with pytest.raises(DataError, match="gamma needs a positive"):
        experiment("tabular_regression", frame.assign(target=0.0), label="target", distribution="gamma")


def test_an_all_missing_column():
    with pytest.raises(DataError, match="column 'empty': every value is missing"):
        experiment("tabular_classification", table_frame().assign(empty=np.nan))


def test_an_infinite_training_value_names_its_column_and_row():
    """At the split stage, not as a NaN loss in training: inf (a CSV's `inf`) or beyond float32."""
    for value in (np.inf, -1e39):
        frame = table_frame()
        frame.loc[6, "x2"] = value
        with pytest.raises(
            DataError, match=rf"column 'x2': {re.escape(repr(value))} \(row 7\) is not a finite float32"
        ):
            experiment("tabular_classification", frame)


def test_a_test_frame_without_a_training_column():
    exp, _ = experiment("tabular_classification", table_frame())
    with pytest.raises(InputError, match="x2: column missing"):
        trainer.frame_matrix(exp.tabular.columns, table_frame().drop(columns=["x2"]))


def test_a_json_row_with_a_wrong_type_names_the_column():
    exp, problem = experiment("tabular_classification", table_frame())
    decoder = TabularDecoder(problem.data.preprocessing(exp))
    with pytest.raises(InputError, match="x1: 'abc' is not a number"):
        decoder.from_json({"x1": "abc", "x2": 1.0, "colour": "red"})
    with pytest.raises(InputError, match="colour: .* is not a level"):
        decoder.from_json({"x1": 1, "x2": 1.0, "colour": [1, 2]})
    with pytest.raises(InputError, match="x2: column missing"):
        decoder.from_json({"x1": 1, "colour": "red"})
    # JSON's 1e400 and -Infinity are floats to Python; 1e39 is one beyond float32, the graph's input
    for value in (math.inf, -math.inf, 1e39):
        with pytest.raises(InputError, match="x1: .* is not a finite float32 number"):
            decoder.from_json({"x1": value, "x2": 1.0, "colour": "red"})
    assert decoder.from_json({"x1": math.nan, "x2": 1.0, "colour": "red"}).shape == (3,)  # NaN: missing
    frame = table_frame()
    frame.loc[4, "x2"] = np.inf
    with pytest.raises(InputError, match=r"x2: inf \(row 5\) is not a finite"):
        trainer.frame_matrix(exp.tabular.columns, frame)
    # a file of JSON nested beyond Python's stack was a 500 (RecursionError); a huge value was echoed whole
    with pytest.raises(InputError, match="nested too deeply"):
        decoder.load(b"[" * 100_000 + b"]" * 100_000, "nested.json")
    for value in ("x" * 1_000_000, list(range(100_000))):
        with pytest.raises(InputError) as err:
            decoder.from_json({"x1": value, "x2": 1.0, "colour": value})
        assert len(str(err.value)) < 200
    # an integer beyond any float was a 500 at the service (OverflowError)
    with pytest.raises(InputError, match=r"x1: 1000.*\.\.\..* is beyond float32's range"):
        decoder.from_json({"x1": 10**400, "x2": 1.0, "colour": "red"})
    # a CSV column with one bad cell is text throughout: the bad cell is named, not the first number
    frame = table_frame().astype({"x1": str})
    frame.loc[2, "x1"] = "abc"
    with pytest.raises(InputError, match=r"x1: 'abc' \(row 3\) is not a number"):
        trainer.frame_matrix(exp.tabular.columns, frame)


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="hidden_dropout_ratios"):
        experiment(
            "tabular_classification", table_frame(), hidden_dropout_ratios=[0.1, 0.1]
        )  # no dropout activation
    with pytest.raises(ConfigError, match="hidden_dropout_ratios has 1 values"):
        experiment(
            "tabular_classification",
            table_frame(),
            activation="tanh_with_dropout",
            hidden_dropout_ratios=[0.1],
        )
    with pytest.raises(ConfigError, match="momentum"):
        experiment("tabular_classification", table_frame(), momentum_start=0.5)
    with pytest.raises(ConfigError, match="class_sampling_factors"):
        experiment("tabular_classification", table_frame(), class_sampling_factors=[1, 2])


def test_reproducible_with_a_seed_gives_the_same_weights():
    frame = table_frame()
    runs = [fit("tabular_classification", frame, epochs=2, reproducible=True, seed=7)[2] for _ in range(2)]
    other = fit("tabular_classification", frame, epochs=2, reproducible=True, seed=8)[2]
    for a, b in zip(runs[0].layers, runs[1].layers, strict=True):
        assert torch.equal(a.weight, b.weight)
    assert not torch.equal(runs[0].layers[0].weight, other.layers[0].weight)
