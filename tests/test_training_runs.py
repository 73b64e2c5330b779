"""Training settings shown on real runs: a slice of FSDD, the tiny network, one fold, in-process.

(The loop's arithmetic on a toy model is in tests/test_training_loop.py; torchrun and kill -9 in tests/e2e.)
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml
from PIL import Image
from projects import REPO, make_project, merge, tiny_params, write_params
from safetensors.torch import load_file

from deuterium import config, fitting, insights, io, paths, problems, splitting, training

BASE = {"dataset": {"selected_folds": [0]}, "logging": {"number_of_audios_to_show": 0}}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from stages import split

    root = make_project(tmp_path_factory.mktemp("runs"), BASE, git=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        split.main(root / "params.yaml", root / paths.SPLIT)
    return root


class Run:
    def __init__(self, project: Path, out: Path, overrides: dict):
        self.params = tiny_params(merge(BASE, overrides))
        self.exp = config.parse(self.params)
        self.problem = problems.get(self.exp.problem_type)
        self.info = io.read_json(project / paths.SPLIT / paths.DATA_INFO_FILE)
        self.folds = io.read_frame(project / paths.SPLIT / paths.FOLDS_FILE)
        self.targets = self.problem.encode(self.folds, self.exp, self.info)
        self.train, self.checkpoints = out / "train", out / "checkpoints"

    def fit(self) -> pd.DataFrame:
        return fitting.fit_folds(
            self.exp, self.problem, self.info, self.folds, self.targets, self.train, self.checkpoints
        )

    def weights(self, name: str = "fold0") -> dict:
        return load_file(str(self.train / name / paths.MODEL_FILE))

    def curve(self, key: str, name: str = "fold0") -> pd.DataFrame:
        return pd.read_csv(self.train / "dvclive" / "plots" / "metrics" / name / f"{key}.tsv", sep="\t")

    def logged_params(self) -> dict:
        return yaml.safe_load((self.train / "dvclive" / "params.yaml").read_text())

    def valid(self) -> tuple[list[Path], np.ndarray]:
        rows = (self.folds.fold == 0).to_numpy()
        return self.problem.files(self.folds[rows], self.exp), self.targets[rows]


@pytest.fixture
def run(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)  # data paths in the params are relative to the project
    return lambda overrides, name="run": Run(project, tmp_path / name, overrides)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


AUGMENTED = {  # params.yaml's augmentations, which TINY turns off
    "time_shift_probability": 0.5,
    "gain_probability": 0.5,
    "noise_probability": 0.5,
    "speed_probability": 0.8,
    "frequency_masks": 2,
    "time_masks": 2,
}


def test_the_same_seed_repeats_a_cpu_run_exactly_whatever_the_workers(run):
    """With every audio augmentation drawing: speed in the Dataset (per row), the rest per batch."""
    first = run({"environment": {"seed": 7}, "augmentation": AUGMENTED}, "first")
    # and in 2 worker processes
    again = run({"environment": {"seed": 7, "number_of_workers": 2}, "augmentation": AUGMENTED}, "again")
    other = run({"environment": {"seed": 8}, "augmentation": AUGMENTED}, "other")
    oofs = [r.fit() for r in (first, again, other)]
    assert same(first.weights(), again.weights()) and oofs[0].equals(oofs[1])
    assert not same(first.weights(), other.weights())
    assert first.logged_params()["fold0_seed"] == 7


def _tree(folder: Path) -> dict[str, object]:
    """A dvclive folder's files by relative path: JSON and YAML as data, the rest as bytes."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = path.read_bytes()
        out[path.relative_to(folder).as_posix()] = (
            yaml.safe_load(text) if path.suffix in (".json", ".yaml") else text
        )
    return out


def test_parallel_folds_train_each_fold_as_one_process_at_a_time_would(run, monkeypatch, caplog):
    """Two folds with two seeds, four runs in two spawned processes of one thread each: the same models,
    predictions, seed report, curves, images and dvclive summary as the runs one after another with one thread."""
    settings = {
        "dataset": {"selected_folds": "all"},
        "logging": {"number_of_audios_to_show": 2},
        "training": {"epochs": 2, "evaluation_epochs": 0.5},
    }
    threads = torch.get_num_threads()
    monkeypatch.setattr(
        torch, "get_num_threads", lambda: 2
    )  # the budget the processes share, whatever the machine
    one = run(merge(settings, {"environment": {"number_of_seeds": 2, "parallel_folds": 1}}), "one")
    both = run(merge(settings, {"environment": {"number_of_seeds": 2, "parallel_folds": "auto"}}), "both")
    torch.set_num_threads(1)  # what each of the processes gets
    try:
        one_oof = one.fit()
    finally:
        torch.set_num_threads(threads)
    with caplog.at_level("INFO"):
        both_oof = both.fit()
    assert "training 4 runs, 4 at a time, 1 thread(s) each" in caplog.text
    assert not (both.train / fitting.RUN_CURVES).exists()
    pd.testing.assert_frame_equal(one_oof, both_oof)
    for name in ("fold0/seed0", "fold0/seed1", "fold1/seed0", "fold1/seed1"):
        assert same(one.weights(name), both.weights(name)), name
    assert io.read_json(one.train / paths.SEEDS_FILE) == io.read_json(both.train / paths.SEEDS_FILE)
    curves = _tree(one.train / "dvclive")
    assert "plots/metrics/fold1/seed1/valid/Accuracy.tsv" in curves
    assert any(k.startswith("plots/images/fold1/seed0/worst/") for k in curves)
    assert _tree(both.train / "dvclive") == curves


def test_parallel_folds_is_one_at_a_time_where_processes_would_not_help(run, monkeypatch):
    exp = run({"environment": {"parallel_folds": "auto"}}).exp
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert fitting.parallel_runs(exp, 3) == 3  # 3 single-thread processes on 2 threads
    assert fitting.parallel_runs(exp, 9) == 4  # at most twice the threads
    assert fitting.parallel_runs(exp, 1) == 1
    assert fitting.parallel_runs(exp, 3, in_process=True) == 1  # the search's trials
    fixed = run({"environment": {"parallel_folds": 2}}).exp
    assert fitting.parallel_runs(fixed, 3) == 2
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert fitting.parallel_runs(exp, 3) == 1  # one thread: nothing to share
    assert fitting.parallel_runs(fixed, 3) == 2  # unless asked for
    gpu = run({"environment": {"parallel_folds": "auto", "number_of_gpus": 2}}).exp
    assert fitting.parallel_runs(gpu, 3) == 1


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_a_run_stopped_after_an_epoch_resumes_exactly(run, monkeypatch, caplog, ema_decay):
    """Also with a moving average of the weights, which the checkpoint must carry."""
    settings = {"training": {"epochs": 2, "ema_decay": ema_decay}}
    whole, resumed = run(settings, "whole"), run(settings, "resumed")
    save = training._save_checkpoint

    def keep_first_epoch(path, model, opt, sched, scaler, state, *rest):
        save(path, model, opt, sched, scaler, state, *rest)
        if state.epoch == 1:
            target = resumed.checkpoints / "fold0" / "last.pt"  # as a run killed in epoch 2 leaves it
            target.parent.mkdir(parents=True)
            shutil.copy(path, target)

    monkeypatch.setattr(training, "_save_checkpoint", keep_first_epoch)
    whole.fit()
    monkeypatch.setattr(training, "_save_checkpoint", save)
    with caplog.at_level("INFO"):
        resumed.fit()
    assert "resuming after epoch 1" in caplog.text
    assert "fold0 epoch 1:" not in caplog.text and "fold0 epoch 2:" in caplog.text
    assert same(whole.weights(), resumed.weights())
    assert resumed.curve("train/loss").equals(whole.curve("train/loss"))  # epoch 1's point came back
    assert len(resumed.curve("valid/Accuracy")) == 2


def test_new_content_under_the_same_file_names_trains_again(tmp_path, monkeypatch, caplog):
    """A finished checkpoint resumed only the same settings on the same rows: re-recorded clips (or new
    images) under the old names gave back the old model and the old out-of-fold predictions."""
    import soundfile as sf

    from stages import split

    root = make_project(tmp_path / "project", BASE, git=False)
    monkeypatch.chdir(root)
    split.main(root / "params.yaml", root / paths.SPLIT)
    first = Run(root, tmp_path / "first", {"training": {"epochs": 1}})
    first.fit()
    with caplog.at_level("INFO"):
        first.fit()  # nothing changed: the finished checkpoint stands in
    assert "resuming after epoch 1" in caplog.text and "starting over" not in caplog.text
    before = first.weights()

    for rows in ((first.folds.fold != 0), (first.folds.fold == 0)):  # a training file, then a validation one
        name = first.folds[rows.to_numpy()].iloc[0][first.exp.dataset.audio_column]
        path = root / first.exp.dataset.data_folder / name
        audio, rate = sf.read(path)
        sf.write(path, np.random.default_rng(0).normal(scale=0.1, size=len(audio) + 7), rate)
        caplog.clear()
        with caplog.at_level("INFO"):
            first.fit()
        assert "starting over" in caplog.text and "resuming" not in caplog.text
    assert not same(before, first.weights())


def test_the_rows_fingerprint_follows_the_files_and_the_validation_rows(run):
    r = run({})
    rows = (r.folds.fold != 0).to_numpy()
    parts = [(r.folds[rows], r.targets[rows]), (r.folds[~rows], r.targets[~rows])]
    base = training.rows_fingerprint(r.problem, r.exp, *parts)
    assert training.rows_fingerprint(r.problem, r.exp, *parts) == base
    relabelled = r.targets[~rows].copy()
    relabelled[0] = (relabelled[0] + 1) % 10
    assert training.rows_fingerprint(r.problem, r.exp, parts[0], (parts[1][0], relabelled)) != base


def test_ema_decay_validates_and_keeps_the_moving_average_of_the_weights(run):
    averaged = run({"training": {"epochs": 3, "ema_decay": 0.9}}, "ema")
    last = run({"training": {"epochs": 3, "ema_decay": 0.0}})
    oof = averaged.fit()
    last.fit()
    saved = torch.load(averaged.checkpoints / "fold0" / "last.pt", weights_only=True)
    kept = averaged.weights()
    assert same(kept, saved["ema"])  # the average, not...
    assert not same(kept, saved["model"])  # ...the last weights
    assert same(saved["model"], last.weights())  # averaging does not change what trains
    files, targets = averaged.valid()
    _, models = fitting.load_models(averaged.train, averaged.problem, averaged.info)
    preds = training._predict(averaged.exp, averaged.problem, models, files, torch.device("cpu"))
    np.testing.assert_allclose(  # the validation scored the weights that were kept
        fitting.predictions_from(oof, averaged.problem.output_columns(averaged.info)), preds, atol=1e-6
    )


def test_number_of_seeds_trains_and_averages_several_models_per_fold(run, tmp_path):
    r = run({"environment": {"number_of_seeds": 2}})
    oof = r.fit()
    folders = fitting.model_folders(r.train)
    assert [f.relative_to(r.train).as_posix() for f in folders] == ["fold0/seed0", "fold0/seed1"]
    _, models = fitting.load_models(r.train, r.problem, r.info)
    files, targets = r.valid()
    each = [training._predict(r.exp, r.problem, [m], files, torch.device("cpu")) for m in models]
    np.testing.assert_allclose(
        fitting.predictions_from(oof, r.problem.output_columns(r.info)), np.mean(each, axis=0), atol=1e-5
    )

    report = io.read_json(r.train / paths.SEEDS_FILE)["fold0"]
    metric = r.problem.metrics()["Accuracy"].fn
    scores = [metric(r.problem.truth(targets), p) for p in each]
    assert report["seeds"] == [42, 1042]
    assert report["Accuracy"] == pytest.approx(scores, abs=1e-6)
    assert report["std"] == pytest.approx(np.std(scores), abs=1e-6)

    from stages import evaluate

    params = write_params(tmp_path, r.params)
    evaluate.main(
        params, Path(paths.SPLIT), r.train, tmp_path / "evaluate", tmp_path / "m.json", tmp_path / "p"
    )
    assert io.read_json(tmp_path / "m.json")["seeds"]["fold0"]["std"] == report["std"]


def test_the_ablation_bench_measures_a_variant_trained_with_several_seeds(run, project):
    """bench.ablation looked for fold{k}/config.yaml only and failed after training a variant with seeds."""
    spec = importlib.util.spec_from_file_location("ablation", REPO / "bench" / "ablation.py")
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)
    r = run({"environment": {"number_of_seeds": 2}})
    result = ablation.run_variant(r.params, project / paths.SPLIT, [0])
    assert list(result["folds"]) == ["fold0"]
    assert result["epochs"] == r.exp.training.epochs
    assert len(result["oof"]) == int((r.folds.fold == 0).sum())  # every validation row predicted


def test_epochs_auto_is_logged_and_written_to_the_resolved_config(run):
    r = run({"training": {"epochs": "auto", "epochs_auto_steps": 3, "epochs_auto_min": 1}})
    r.fit()
    rows = r.logged_params()["fold0_train_rows"]
    steps = max(1, rows // 16)  # batch_size 16, drop_last_batch
    expected = -(-3 // steps)
    resolved = config.load(r.train / "fold0" / paths.CONFIG_FILE, inherit=False)
    assert resolved.training.epochs == expected == r.logged_params()["fold0_epochs"]
    assert r.curve("train/epoch")["epoch"].max() == expected


def test_train_validation_data_also_trains_on_the_validation_rows(run):
    r = run({"training": {"train_validation_data": True}})
    r.fit()
    assert r.logged_params()["fold0_train_rows"] == len(r.folds)  # 30 without it: fold 1 only
    assert (r.folds.fold == 1).sum() < len(r.folds)


def test_save_best_checkpoint_keeps_the_best_validation(run, caplog):
    r = run(
        {
            "training": {"epochs": 3, "save_best_checkpoint": True, "evaluate_before_training": True},
            "prediction": {"metric": "LogLoss"},
        }
    )
    with caplog.at_level("INFO"):
        oof = r.fit()
    history = r.curve("valid/LogLoss")
    assert list(history.step) == [0, 1, 2, 3]  # before training, then after each epoch of 1 batch
    best = history.LogLoss.min()
    files, targets = r.valid()
    _, models = fitting.load_models(r.train, r.problem, r.info)
    preds = training._predict(r.exp, r.problem, models, files, torch.device("cpu"))
    metric = r.problem.metrics()["LogLoss"].fn
    assert metric(r.problem.truth(targets), preds) == pytest.approx(best, abs=1e-5)  # the saved weights
    assert metric(
        r.problem.truth(targets), fitting.predictions_from(oof, r.problem.output_columns(r.info))
    ) == pytest.approx(best, abs=1e-5)
    assert f"keeping step {int(history.step[history.LogLoss.idxmin()])}, the best" in caplog.text


def test_logging_and_evaluation_settings_write_their_curves_and_images(run):
    r = run(
        {
            "training": {"batch_size": 7, "evaluation_epochs": 0.5, "calculate_train_metric": True},
            "logging": {"log_grad_norm": True, "number_of_audios_to_show": 3},
        }
    )
    oof = r.fit()
    assert list(r.curve("valid/Accuracy").step) == [2, 4]  # 4 batches an epoch: twice
    assert list(r.curve("train/Accuracy").step) == [2, 4]
    norms = r.curve("train/grad_norm")
    assert list(norms.step) == [0, 1, 2, 3] and (norms.grad_norm > 0).all()
    clipped = r.curve("train/grad_norm_clipped").grad_norm_clipped
    assert (clipped <= np.minimum(norms.grad_norm, r.exp.training.gradient_clip) + 1e-4).all()

    images = sorted((r.train / "dvclive" / "plots" / "images" / "fold0" / "worst").glob("*.png"))
    files, targets = r.valid()
    worst = insights.worst(targets, fitting.predictions_from(oof, r.problem.output_columns(r.info)), 3)
    assert [p.name.split("_", 1)[1] for p in images] == [files[i].stem + ".png" for i in worst]
    assert all(Image.open(p).size[0] > 100 for p in images)


def test_an_adopted_checkpoint_goes_on_with_the_new_settings(run, monkeypatch, caplog):
    """PBT's exploit (deuterium/search.py): a better run's epoch, continued with perturbed settings."""
    donor = run({"training": {"epochs": 2, "schedule": "constant", "learning_rate": 0.001}}, "donor")
    taker = run({"training": {"epochs": 2, "schedule": "constant", "learning_rate": 0.004}}, "taker")
    save = training._save_checkpoint

    def keep_first_epoch(path, model, opt, sched, scaler, state, *rest):
        save(path, model, opt, sched, scaler, state, *rest)
        if state.epoch == 1:
            target = taker.checkpoints / "fold0" / "last.pt"
            target.parent.mkdir(parents=True)
            shutil.copy(path, target)

    monkeypatch.setattr(training, "_save_checkpoint", keep_first_epoch)
    donor.fit()
    monkeypatch.setattr(training, "_save_checkpoint", save)
    reported = []
    with caplog.at_level("INFO"):
        fitting.fit_folds(
            taker.exp,
            taker.problem,
            taker.info,
            taker.folds,
            taker.targets,
            taker.train,
            taker.checkpoints,
            after_epoch=lambda name, state: reported.append((name, state.epoch, state.score)),
            adopt=True,
        )
    assert "continuing checkpoint" in caplog.text and "fold0 epoch 1:" not in caplog.text
    assert [(name, epoch) for name, epoch, _ in reported] == [("fold0", 2)]
    assert reported[0][2] is not None  # the epoch's validation score, what the search reports
    assert taker.curve("train/learning_rate")["learning_rate"].tolist() == [0.001, 0.004]
    assert taker.curve("train/epoch")["epoch"].tolist() == [1, 2]


def _fit_regression(project: Path, out: Path, label: str, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fold 0's out-of-fold predictions and targets of an audio regression on `label` (thousands: the digit
    x 1000 + 7), with or without standardized targets."""
    params = tiny_params(
        merge(
            BASE,
            {
                "problem_type": "audio_regression",
                "dataset": {"label_columns": [label]},
                "training": {"loss_function": "mse", "epochs": 3, "standardize_targets": standardize},
                "prediction": {"metric": "MAE"},
            },
        )
    )
    exp = config.parse(params)
    problem = problems.of(exp)
    folds = io.read_frame(project / paths.SPLIT / paths.FOLDS_FILE)
    digit = folds.digit.astype(int)  # the fixture's split is a classification: its classes are kept as text
    folds = folds.assign(digit=digit, thousands=digit * 1000 + 7)
    info = problem.label_info(folds, exp)
    targets = problem.encode(folds, exp, info)
    oof = fitting.fit_folds(exp, problem, info, folds, targets, out / "train", out / "checkpoints")
    rows = oof[splitting.ROW_ID].to_numpy()
    return fitting.predictions_from(oof, problem.output_columns(info))[:, 0], targets[rows, 0]


def test_standardized_targets_train_alike_in_any_units(project, tmp_path, monkeypatch):
    """The net learns (target - mean) / sd: the digit in thousands (x 1000 + 7) trains to the same model,
    scaled, and without standardizing, the same steps leave it thousands away."""
    monkeypatch.chdir(project)
    digits, truth = _fit_regression(project, tmp_path / "digits", "digit", True)
    thousands, big_truth = _fit_regression(project, tmp_path / "thousands", "thousands", True)
    assert np.allclose(big_truth, truth * 1000 + 7)
    assert np.allclose(thousands, digits * 1000 + 7, rtol=1e-3, atol=1.0)
    mae = np.abs(thousands - big_truth).mean()
    raw, _ = _fit_regression(project, tmp_path / "raw", "thousands", False)
    assert np.abs(raw - big_truth).mean() > 1.5 * mae


POOL_SCRIPT = """
import multiprocessing, sys, time
from concurrent.futures import ProcessPoolExecutor
from deuterium import fitting

if __name__ == "__main__":
    init = (1, 0.5, 20)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=fitting._start_process, initargs=init)
    pool.submit(fitting.os.getpid).result()  # the pool process has started
    print(list(pool._processes)[0], flush=True)
    time.sleep(600)
"""


def test_a_training_process_ends_when_the_stage_that_started_it_is_killed(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.kill()  # SIGKILL: the stage's own cleanup never runs
    parent.wait()
    psutil.Process(child).wait(timeout=30)  # psutil.TimeoutExpired when the pool process lives on
    assert not psutil.pid_exists(child)
