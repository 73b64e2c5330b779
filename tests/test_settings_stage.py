"""The settings stage, the first of `dvc repro`: a params.yaml that passes the schema but leaves out a key
dvc.yaml's stages track would stop a later stage with DVC's own message; this stage names the keys first."""

import shutil
from pathlib import Path

import pytest
import yaml

from deuterium import config
from deuterium.errors import ConfigError
from stages import settings

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {
    "problem_type": "tabular_classification",
    "dataset": {
        "train_dataframe": "data/t/train.csv",
        "data_folder": "data/t",
        "label_columns": ["diagnosis (M/B)"],
    },
}


def project(tmp_path: Path, params: dict | Path) -> Path:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    path = tmp_path / "params.yaml"
    if isinstance(params, Path):
        shutil.copy(params, path)
    else:
        path.write_text(yaml.safe_dump(params))
    return path


def test_a_minimal_params_file_is_refused_with_the_keys_to_add_and_their_defaults(tmp_path):
    params = project(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match="dvc.yaml's stages track keys this file leaves out") as err:
        settings.main(params, tmp_path / "out")
    added = yaml.safe_load(str(err.value).split("\n", 1)[1])  # the lines to add, as YAML
    assert added["dataset"]["group_column"] is None and added["dataset"]["number_of_folds"] == 5
    assert added["environment"]["seed"] == 42 and "previous_experiment" in added
    assert "train_dataframe" not in added["dataset"]  # what the file has is not asked for
    assert not (tmp_path / "out").exists()

    # with those lines added, the stage passes
    merged = {**MINIMAL, **added, "dataset": {**MINIMAL["dataset"], **added["dataset"]}}
    params.write_text(yaml.safe_dump(merged))
    assert settings.main(params, tmp_path / "out")["data_type"] == "tabular"


@pytest.mark.parametrize(
    "params", [REPO / "params.yaml", *sorted((REPO / "configs").glob("*.yaml"))], ids=str
)
def test_the_shipped_params_and_configs_hold_every_tracked_key(tmp_path, params):
    settings.check_tracked_keys(project(tmp_path, params), config.load(params))
