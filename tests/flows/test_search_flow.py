"""The search flow for real: `dvc repro split`, a Ray Tune search in a subprocess, the leaderboard as artifacts."""

import pytest
import yaml
from flow_support import artifact_of
from projects import make_project

from deuterium import io, paths
from flows.search import BEST_KEY, TABLE_KEY, search


@pytest.mark.e2e
def test_the_flow_runs_a_search_and_attaches_its_leaderboard(tmp_path, prefect_server):
    project = make_project(
        tmp_path / "project", {"dataset": {"selected_folds": [0]}, "logging": {"number_of_audios_to_show": 0}}
    )
    (project / "search.yaml").write_text(
        yaml.safe_dump(
            {
                "strategy": "grid",
                "space": {"training.learning_rate": [0.001, 0.01]},
                "trials_at_once": 2,
                "early_stopping": {"enabled": False},
            }
        )
    )
    state = search(project=project, apply=True, num_cpus=2, return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()
    assert [r["status"] for r in rows] == ["finished", "finished"]
    table = artifact_of(state, TABLE_KEY)
    assert table.type == "table" and "training.learning_rate" in str(table.data)
    best = artifact_of(state, BEST_KEY)
    assert f"| training.learning_rate | {rows[0]['training.learning_rate']} |" in best.data
    board = io.read_json(project / paths.SEARCH / "leaderboard.json")
    assert board["trials"][0]["trial"] == rows[0]["trial"]
    assert (
        yaml.safe_load((project / "params.yaml").read_text())["training"]["learning_rate"]
        == rows[0]["training.learning_rate"]
    )  # --apply
