import filecmp


def test_without_unlabeled_data_the_models_pass_through(pipeline):
    for fold in (0, 1):
        a, b = (
            pipeline.train / f"fold{fold}" / "model.safetensors",
            pipeline.pseudo / f"fold{fold}" / "model.safetensors",
        )
        assert filecmp.cmp(a, b, shallow=False)


def test_the_second_round_trains_on_the_pseudo_labels(pipeline, tmp_path, monkeypatch):
    """With an unlabeled dataframe, the first-round models label it and the second round trains on those labels."""
    import json

    import numpy as np
    import pandas as pd
    import torch
    import yaml
    from safetensors.torch import load_file

    from deuterium import config, fitting, inference, problems
    from stages import pseudo_label

    unlabeled = pd.read_csv(pipeline.root / "data/fsdd/test.csv")[["file"]].head(8)
    unlabeled.to_csv(tmp_path / "unlabeled.csv", index=False)
    params = yaml.safe_load(pipeline.params.read_text())
    params["dataset"]["unlabeled_dataframe"] = str(tmp_path / "unlabeled.csv")
    params["dataset"]["selected_folds"] = [0]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    calls = []
    real = fitting.fit_folds

    def spy(exp, problem, info, frame, targets, *args, fold_targets=None, stage="train"):
        calls.append((frame.copy(), fold_targets[0].copy()))
        return real(exp, problem, info, frame, targets, *args, fold_targets=fold_targets, stage=stage)

    monkeypatch.setattr(pseudo_label.fitting, "fit_folds", spy)
    out = tmp_path / "pseudo"
    pseudo_label.main(tmp_path / "params.yaml", pipeline.split, pipeline.train, out, tmp_path / "checkpoints")

    [(frame, targets)] = calls
    added = frame[frame.file.isin(unlabeled.file) & frame.digit.isna()]
    assert len(added) == len(unlabeled) and (added.fold == -1).all()  # pseudo rows only ever train
    exp = config.load(tmp_path / "params.yaml")
    problem = problems.of(exp)
    info = json.loads((pipeline.split / "data_info.json").read_text())
    # fold 0's own first-round model only: fold 1's model was trained on fold 0's validation rows
    _, first_round = fitting.load_models(pipeline.train, problem, info, fold=0)
    assert len(first_round) == 1 and len(fitting.model_folders(pipeline.train)) == 2
    expected = inference.predict(
        first_round, problem, problem.files(unlabeled, exp), exp, torch.device("cpu")
    )
    assert np.allclose(
        targets[added.index.to_numpy()], expected, atol=1e-5
    )  # the first round's probabilities
    labeled = targets[~frame.index.isin(added.index)]
    assert set(np.unique(labeled)) == {0.0, 1.0}  # the labeled rows keep their one-hot labels
    new = load_file(str(out / "fold0" / "model.safetensors"))
    old = load_file(str(pipeline.train / "fold0" / "model.safetensors"))
    assert any(not torch.equal(new[k], old[k]) for k in new)  # a second round was trained
    oof = pd.read_parquet(out / "oof.parquet")
    assert not set(oof.row_id) - set(pd.read_parquet(pipeline.split / "folds.parquet").row_id)
