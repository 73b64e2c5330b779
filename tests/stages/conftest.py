"""One tiny project per test session, its stages run in order by calling their main() (as the CLI does)."""

from pathlib import Path

import pytest
from projects import make_project

from deuterium import paths


class Pipeline:
    def __init__(self, root: Path):
        self.root = root
        self.params = root / "params.yaml"
        self.split = root / paths.SPLIT
        self.train = root / paths.TRAIN
        self.pseudo = root / paths.PSEUDO
        self.evaluate = root / paths.EVALUATE
        self.export = root / paths.EXPORT
        self.metrics = root / paths.METRICS
        self.plots = root / paths.PLOTS
        self.checkpoints = root / paths.CHECKPOINTS


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, monkeypatch_session) -> Pipeline:
    from stages import evaluate, export, pseudo_label, split, train

    root = make_project(tmp_path_factory.mktemp("stages"), git=False)
    monkeypatch_session.chdir(root)  # data paths in params.yaml are relative to the project
    p = Pipeline(root)
    split.main(p.params, p.split)
    train.main(p.params, p.split, p.train, p.checkpoints)
    pseudo_label.main(p.params, p.split, p.train, p.pseudo, p.checkpoints)
    evaluate.main(p.params, p.split, p.pseudo, p.evaluate, p.metrics, p.plots)
    export.main(p.params, p.split, p.pseudo, p.export)
    return p


@pytest.fixture(scope="session")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
