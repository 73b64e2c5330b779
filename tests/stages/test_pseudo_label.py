import filecmp


def test_without_unlabeled_data_the_models_pass_through(pipeline):
    for fold in (0, 1):
        a, b = pipeline.train / f"fold{fold}" / "model.safetensors", pipeline.pseudo / f"fold{fold}" / "model.safetensors"
        assert filecmp.cmp(a, b, shallow=False)
