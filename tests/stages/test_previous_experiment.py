"""previous_experiment: its settings fill what params leave out, its weights start training, and with
train_dataframe null its models score the test data (inference only)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from projects import write_params
from safetensors.torch import load_file

from deuterium import config, previous, problems, scoring
from deuterium.errors import ConfigError


def params(tmp_path, overrides: dict, name="params.yaml"):
    return write_params(tmp_path, overrides, name)


def test_settings_left_out_come_from_the_previous_resolved_config(pipeline, tmp_path):
    path = params(tmp_path, {"previous_experiment": str(pipeline.train), "training": {"epochs": 3}})
    exp = config.load(path)
    before = config.load(pipeline.train / "fold0" / "config.yaml")
    assert exp.training.epochs == 3  # given here
    assert exp.architecture == before.architecture and exp.audio == before.audio  # inherited
    assert exp.dataset.label_columns == ["digit"] and exp.problem_type == "audio_classification"
    assert not exp.use_previous_experiment_weights  # never inherited


def test_previous_weights_start_each_fold(pipeline, tmp_path):
    path = params(
        tmp_path, {"previous_experiment": str(pipeline.train), "use_previous_experiment_weights": True}
    )
    exp = config.load(path)
    info = json.loads((pipeline.split / "data_info.json").read_text())
    problem = problems.of(exp)
    for fold in (0, 1):
        model = problem.model(exp, problem.n_outputs(info))
        previous.load_weights(model, exp, fold)
        saved = load_file(str(pipeline.train / f"fold{fold}" / "model.safetensors"))
        for key, value in model.state_dict().items():
            assert torch.equal(value, saved[key]), key
    # other classes: the backbone carries over, the head (another shape) stays fresh
    model = problem.model(exp, 3)
    previous.load_weights(model, exp, 0)
    saved = load_file(str(pipeline.train / "fold0" / "model.safetensors"))
    assert torch.equal(model.state_dict()["backbone.conv_stem.weight"], saved["backbone.conv_stem.weight"])
    assert model.head.weight.shape == (3, saved["head.weight"].shape[1])


def test_previous_weights_need_the_same_backbone_and_problem_type(pipeline, tmp_path):
    other = {"previous_experiment": str(pipeline.train), "use_previous_experiment_weights": True}
    exp = config.load(params(tmp_path, {**other, "architecture": {"backbone": "resnet10t"}}))
    with pytest.raises(ConfigError, match="backbone is 'mobilenetv3_small_050'"):
        previous.load_weights(problems.of(exp).model(exp, 10), exp, 0)


def test_previous_experiment_settings_are_checked(pipeline, tmp_path):
    with pytest.raises(ConfigError, match="no trained models"):
        config.load(params(tmp_path, {"previous_experiment": str(tmp_path)}))
    base = config.load(pipeline.params).model_dump(mode="json")
    with pytest.raises(ConfigError, match="use_previous_experiment_weights needs previous_experiment"):
        config.parse({**base, "use_previous_experiment_weights": True})
    no_train = {**base, "dataset": {**base["dataset"], "train_dataframe": None}}
    with pytest.raises(ConfigError, match="needs previous_experiment"):
        config.parse(no_train)
    with pytest.raises(ConfigError, match="needs dataset.test_dataframe"):
        config.parse({**no_train, "dataset": {**no_train["dataset"], "test_dataframe": None}})


def test_inference_only_scores_the_test_data_with_the_previous_models(pipeline, tmp_path):
    from stages import evaluate, export, pseudo_label, split, train

    # The test clips live in their own folder, and data_folder has none of them: data_folder_test is used.
    test_folder = tmp_path / "test_audio"
    test = pd.read_csv(pipeline.root / "data/fsdd/test.csv")
    test_folder.mkdir()
    for name in test.file:
        shutil.copy(pipeline.root / "data/fsdd/recordings" / name, test_folder / name)
    path = params(
        tmp_path,
        {
            "previous_experiment": str(pipeline.train),
            "dataset": {
                "train_dataframe": None,
                "data_folder": str(tmp_path / "nothing_here"),
                "test_dataframe": str(pipeline.root / "data/fsdd/test.csv"),
                "data_folder_test": str(test_folder),
            },
        },
    )
    out = {k: tmp_path / k for k in ("split", "train", "pseudo", "evaluate", "export", "checkpoints")}
    split.main(path, out["split"])
    assert len(pd.read_parquet(out["split"] / "folds.parquet")) == 0
    assert json.loads((out["split"] / "data_info.json").read_text())["labels"] == [str(d) for d in range(10)]
    train.main(path, out["split"], out["train"], out["checkpoints"])  # no training: the models pass through
    for fold in (0, 1):
        a = (pipeline.train / f"fold{fold}" / "model.safetensors").read_bytes()
        assert (out["train"] / f"fold{fold}" / "model.safetensors").read_bytes() == a
    pseudo_label.main(path, out["split"], out["train"], out["pseudo"], out["checkpoints"])
    metrics = tmp_path / "metrics.json"
    evaluate.main(path, out["split"], out["pseudo"], out["evaluate"], metrics, tmp_path / "plots")
    report = json.loads(metrics.read_text())
    assert "validation" not in report and 0 <= report["test"]["Accuracy"] <= 1
    ours = pd.read_parquet(out["evaluate"] / "test_predictions.parquet")
    theirs = pd.read_parquet(pipeline.evaluate / "test_predictions.parquet")
    assert np.allclose(ours.filter(like="prob_"), theirs.filter(like="prob_"), atol=1e-5)  # the same models
    export.main(path, out["split"], out["pseudo"], out["export"])
    assert json.loads((out["export"] / "parity.json").read_text())["clips"] == min(
        16, len(test)
    )  # test clips
    scorer = scoring.Scorer(out["export"])
    waves = [scorer.load(test_folder / f) for f in test.file]
    assert [r["label"] for r in scorer.predict(waves)] == list(ours.predicted_label)
