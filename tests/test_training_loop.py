"""The training loop's settings, each shown by what it does to a small model (fast: no audio, no timm).

Settings that need real clips and the real model are in tests/test_training_runs.py.
"""

import math

import numpy as np
import pytest
import torch
from dvclive import Live
from projects import tiny_params
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deuterium import config, problems, runtime, training
from deuterium.errors import ConfigError

ROWS, FEATURES, CLASSES = 32, 6, 3


def experiment(**training_settings):
    settings = {"schedule": "constant", "warmup_epochs": 0.0, "optimizer": "SGD", "learning_rate": 0.1}
    settings.update(training_settings)
    return config.parse(tiny_params({"training": settings}))


def data(seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, FEATURES, generator=g)
    y = nn.functional.one_hot(torch.randint(0, CLASSES, (ROWS,), generator=g), CLASSES).float()
    return TensorDataset(x, y)


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))


def make_loop(exp, model, tmp_path, **extra) -> training.Loop:
    loader = DataLoader(
        data(), batch_size=exp.training.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    opt = training.optimizer(exp, model)
    steps = math.ceil(len(loader) / exp.training.grad_accumulation)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: training.lr_factor(exp, s, steps))
    return training.Loop(
        loader=loader,
        loss_fn=nn.CrossEntropyLoss(),
        opt=opt,
        sched=sched,
        scaler=torch.amp.GradScaler(enabled=False),
        dev=torch.device("cpu"),
        live=Live(str(tmp_path / "dvclive"), report=None, save_dvc_exp=False, dvcyaml=None),
        prefix="fold0",
        seed=1,
        **extra,
    )


def train(exp, tmp_path, **extra) -> tuple[nn.Module, training.RunState, training.Loop]:
    model = toy_model()
    loop = make_loop(exp, model, tmp_path, **extra)
    state = training.fit(exp, model, loop, training.RunState(batch_size=exp.training.batch_size))
    return model, state, loop


def logged(state: training.RunState, key: str) -> list[tuple[int, float]]:
    return [(step, value) for step, name, value in state.history if name == f"fold0/{key}"]


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_grad_accumulation_trains_like_a_bigger_batch(tmp_path):
    small, state, loop = train(experiment(batch_size=8, grad_accumulation=2, epochs=2), tmp_path / "a")
    big, _, big_loop = train(experiment(batch_size=16, grad_accumulation=1, epochs=2), tmp_path / "b")
    assert loop.sched.last_epoch == big_loop.sched.last_epoch == 4  # optimizer steps, not batches
    assert state.step == 8  # batches
    for a, b in zip(weights(small), weights(big), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    alone, _, _ = train(experiment(batch_size=8, grad_accumulation=1, epochs=2), tmp_path / "c")
    assert not all(torch.equal(a, b) for a, b in zip(weights(small), weights(alone), strict=True))


def test_gradient_clip_and_log_grad_norm_before_and_after(tmp_path):
    exp = experiment(batch_size=8, gradient_clip=0.01)
    exp = exp.model_copy(update={"logging": exp.logging.model_copy(update={"log_grad_norm": True})})
    _, state, _ = train(exp, tmp_path / "clip")
    before = [v for _, v in logged(state, "train/grad_norm")]
    after = [v for _, v in logged(state, "train/grad_norm_clipped")]
    assert len(before) == len(after) == ROWS // 8  # one pair per optimizer step
    assert all(b > 0.01 for b in before)
    assert all(a == pytest.approx(0.01, rel=1e-3) for a in after)
    assert (
        tmp_path / "clip" / "dvclive" / "plots" / "metrics" / "fold0" / "train" / "grad_norm.tsv"
    ).is_file()

    unclipped = exp.model_copy(update={"training": exp.training.model_copy(update={"gradient_clip": 0.0})})
    _, state, _ = train(unclipped, tmp_path / "free")
    assert logged(state, "train/grad_norm") == logged(state, "train/grad_norm_clipped")
    _, quiet, _ = train(experiment(batch_size=8), tmp_path / "quiet")
    assert not logged(quiet, "train/grad_norm")


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear", "step"])
def test_schedule_and_warmup_set_the_learning_rate(schedule, tmp_path):
    exp = experiment(batch_size=8, epochs=3, schedule=schedule, warmup_epochs=1.0, learning_rate=0.1)
    _, state, _ = train(exp, tmp_path)
    rates = [v for _, v in logged(state, "train/learning_rate")]
    # rates logged at the end of each epoch: 4 optimizer steps per epoch, factor for the next step
    expected = [0.1 * training.lr_factor(exp, 4 * (e + 1), 4) for e in range(3)]
    assert rates == pytest.approx(expected)
    assert [training.lr_factor(exp, s, 4) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    after = [training.lr_factor(exp, s, 4) for s in range(4, 12)]
    if schedule == "constant":
        assert after == [1.0] * 8
    elif schedule == "step":
        assert after == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    else:
        assert (
            after[0] == 1.0 and all(a > b for a, b in zip(after, after[1:], strict=False)) and after[-1] < 0.2
        )


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adadelta", "Adagrad"])
def test_every_optimizer_and_weight_decay(name):
    decayed, plain = (toy_model(), toy_model())
    for model, decay in ((decayed, 0.5), (plain, 0.0)):
        opt = training.optimizer(experiment(optimizer=name, weight_decay=decay), model)
        assert type(opt).__name__ == name
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # no signal from the data: only weight decay moves a weight
        start = weights(model)
        opt.step()
        moved = [not torch.equal(a, b) for a, b in zip(start, weights(model), strict=True)]
        matrices = [p.ndim > 1 for p in model.parameters()]  # biases and norm weights are never decayed
        assert moved == matrices if decay else not any(moved)
    if name == "AdamW":  # decoupled decay: w <- w (1 - lr * decay)
        torch.testing.assert_close(weights(decayed)[0], weights(toy_model())[0] * (1 - 0.1 * 0.5))


def test_differential_learning_rate_layers():
    exp = experiment(differential_learning_rate_layers=["backbone"], differential_learning_rate=0.0)
    model = problems.get(exp.problem_type).model(exp, CLASSES)
    opt = training.optimizer(exp, model)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1, 0.0, 0.0]  # with decay, without; backbone
    frozen = {id(p) for g in opt.param_groups[2:] for p in g["params"]}
    assert frozen == {id(p) for p in model.backbone.parameters()}
    backbone, head = weights(model.backbone), weights(model.head)
    model.train()
    loss = nn.functional.cross_entropy(
        model(torch.randn(4, exp.audio.chunk_samples)), torch.tensor([0, 1, 2, 0])
    )
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(backbone, weights(model.backbone), strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(head, weights(model.head), strict=True))

    wrong = experiment(differential_learning_rate_layers=["encoder"])
    with pytest.raises(
        ConfigError, match="'encoder' is not a layer.*frontend, backbone, pool, dropout, head"
    ):
        training.optimizer(wrong, model)


def test_out_of_memory_is_recognised():
    assert runtime.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert runtime.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not runtime.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not runtime.is_out_of_memory(ValueError("out of memory"))


def test_batch_size_halves_until_a_step_fits():
    tried = []

    def step(size: int) -> None:
        tried.append(size)
        if size > 5:
            raise torch.OutOfMemoryError(f"CUDA out of memory with {size} rows")

    assert runtime.fit_batch_size(step, 32) == 4
    assert tried == [32, 16, 8, 4]
    assert runtime.fit_batch_size(step, 5) == 5

    def never(size: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(ConfigError, match="out of memory at batch size 1"):
        runtime.fit_batch_size(never, 3)

    def broken(size: int) -> None:
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        runtime.fit_batch_size(broken, 8)


class Greedy(nn.Module):
    """A real model that runs out of memory above 4 rows, the way a GPU does for big batches."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(FEATURES)
        self.head = nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        if len(x) > 4:
            raise torch.OutOfMemoryError(f"CUDA out of memory: tried to allocate for {len(x)} rows")
        return self.head(self.norm(x))


def test_automatically_adjust_batch_size_probes_without_touching_the_model():
    exp = experiment()
    model = Greedy()
    stats = model.norm.running_mean.clone()
    example = (torch.randn(FEATURES), torch.tensor([1.0, 0.0, 0.0]))
    size = training._fit_batch_size(model, nn.CrossEntropyLoss(), example, 16, torch.device("cpu"), exp)
    assert size == 4
    assert torch.equal(model.norm.running_mean, stats) and int(model.norm.num_batches_tracked) == 0
    assert all(p.grad is None for p in model.parameters())


def test_evaluation_epochs_and_evaluate_before_training(tmp_path):
    steps = []

    def validate(net):
        steps.append(state_steps())
        return 0.5, np.zeros((ROWS, CLASSES))

    holder = {}
    state_steps = lambda: holder["loop_state"].step  # noqa: E731

    def run(**settings):
        steps.clear()
        exp = experiment(batch_size=8, **settings)
        model = toy_model()
        loop = make_loop(exp, model, tmp_path / str(len(list(tmp_path.iterdir()))), validate=validate)
        holder["loop_state"] = training.RunState(batch_size=8)
        training.fit(exp, model, loop, holder["loop_state"])
        return list(steps)

    assert run(epochs=2) == [4, 8]  # 4 batches per epoch: after every epoch
    assert run(epochs=2, evaluation_epochs=0.5) == [2, 4, 6, 8]
    assert run(epochs=3, evaluation_epochs=2) == [8, 12]  # and always at the end
    assert run(epochs=2, evaluate_before_training=True) == [0, 4, 8]


def test_save_best_checkpoint_keeps_the_weights_of_the_best_validation(tmp_path):
    scores = iter([0.2, 0.9, 0.5])
    seen = []

    def validate(net):
        seen.append(weights(net))
        return next(scores), np.full((ROWS, CLASSES), len(seen), dtype=np.float32)

    exp = experiment(batch_size=8, epochs=3, save_best_checkpoint=True)
    model, state, _ = train(exp, tmp_path, validate=validate, greater_is_better=True)
    assert (state.best_score, state.best_step) == (0.9, 8)
    assert state.best_predictions[0, 0] == 2
    best = [state.best_weights[k] for k, _ in model.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(best, seen[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(best, weights(model), strict=True))  # the model went on

    scores = iter([0.2, 0.9, 0.5])  # a loss-like metric: lower is better
    _, state, _ = train(exp, tmp_path / "low", validate=validate, greater_is_better=False)
    assert (state.best_score, state.best_step) == (0.2, 4)
    _, last, _ = train(
        experiment(batch_size=8, epochs=3), tmp_path / "last", validate=lambda n: (0.1, np.zeros(1))
    )
    assert last.best_weights is None  # without save_best_checkpoint nothing is copied


def test_calculate_train_metric_is_logged_with_each_validation(tmp_path):
    exp = experiment(batch_size=8, epochs=2)
    _, state, _ = train(
        exp, tmp_path, validate=lambda n: (0.5, np.zeros(1)), train_metric=lambda n: 0.75, metric_name="F1"
    )
    assert logged(state, "train/F1") == [(4, 0.75), (8, 0.75)]
    assert logged(state, "valid/F1") == [(4, 0.5), (8, 0.5)]


def test_each_epoch_draws_the_same_batches_whatever_came_before(tmp_path):
    exp = experiment(batch_size=8, epochs=1)
    loop = make_loop(exp, toy_model(), tmp_path)
    firsts = []
    for _ in range(2):
        torch.manual_seed(123 + len(firsts))  # whatever state the global generators are in
        training._start_epoch(loop, 1)
        firsts.append(next(iter(loop.loader))[0])
    assert torch.equal(*firsts)
    training._start_epoch(loop, 2)
    assert not torch.equal(firsts[0], next(iter(loop.loader))[0])


def test_seed_minus_one_draws_a_logged_seed_and_other_seeds_are_kept(caplog):
    with caplog.at_level("INFO"):
        drawn = {training._run_seed(-1, fold=0, seed_index=0) for _ in range(3)}
    assert len(drawn) == 3 and all(f"drew seed {s}" in caplog.text for s in drawn)
    assert training._run_seed(42, fold=1, seed_index=2) == 42 + 1 + 2000  # every fold and seed its own


def test_mixed_precision_is_a_no_op_on_the_cpu():
    with runtime.autocast(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.float32


def _tsv(path) -> list[float]:
    """A metric's values as dvclive wrote them (step, value columns)."""
    import csv

    with open(path) as f:
        return [float(row[1]) for row in list(csv.reader(f, delimiter="\t"))[1:]]


def test_step_decay_drops_the_learning_rate_at_the_given_epochs(tmp_path):
    exp = experiment(batch_size=8, epochs=5, schedule="step", step_size_epochs=2, step_decay=0.5)
    train(exp, tmp_path)
    rates = _tsv(tmp_path / "dvclive/plots/metrics/fold0/train/learning_rate.tsv")
    # read back from dvclive: the rate for the next epoch, logged at the end of each of the 5 epochs
    assert rates == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025])
    with pytest.raises(ConfigError, match="step_size_epochs is for schedule 'step'"):
        experiment(step_size_epochs=2)


def _scores(values):
    """A validation whose scores are `values`, one per call (accuracy: greater is better)."""
    it = iter(values)
    return lambda net: (next(it), np.zeros((2, CLASSES), np.float32))


def test_early_stopping_stops_after_the_patience(tmp_path):
    exp = experiment(batch_size=8, epochs=10, early_stopping_patience=2, early_stopping_min_delta=0.01)
    scores = [0.5, 0.6, 0.605, 0.61, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]  # +0.005 and +0.005: not > min_delta
    _, state, _ = train(exp, tmp_path, validate=_scores(scores))
    epochs = _tsv(tmp_path / "dvclive/plots/metrics/fold0/train/epoch.tsv")
    assert epochs == [1, 2, 3, 4]  # stopped after two validations without an improvement over 0.01
    assert state.stopped and state.epoch == 4
    assert _tsv(tmp_path / "dvclive/plots/metrics/fold0/train/early_stopped.tsv") == [1]
    _, patient, _ = train(
        exp.model_copy(update={"training": exp.training.model_copy(update={"early_stopping_patience": 0})}),
        tmp_path / "off",
        validate=_scores(scores),
    )
    assert patient.epoch == 10 and not patient.stopped  # 0: off


def test_early_stopping_adds_up_gains_smaller_than_the_delta(tmp_path):
    exp = experiment(batch_size=8, epochs=10, early_stopping_patience=2, early_stopping_min_delta=0.01)
    scores = [0.5, 0.508, 0.516, 0.524, 0.532, 0.54, 0.548, 0.556, 0.564, 0.572]  # +0.008 each
    _, state, _ = train(exp, tmp_path, validate=_scores(scores))
    # every second validation is 0.016 over the last reference: steady progress is not stopped
    assert not state.stopped and state.epoch == 10


def test_early_stopping_conflicts_with_training_on_the_validation_rows():
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        experiment(early_stopping_patience=2, train_validation_data=True)


def test_a_checkpoint_resumes_only_for_the_same_stage_code_and_command(tmp_path):
    """Issue 15: the fingerprint hashed deuterium/**/*.py only: a stage script's change still resumed, and a
    change to code the stage does not use (the service's) threw every checkpoint away."""
    import yaml

    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/train.py").write_text("v1")
    (tmp_path / "lib.py").write_text("v1")
    (tmp_path / "service.py").write_text("v1")
    dvc_yaml = tmp_path / "dvc.yaml"

    def write(cmd: str) -> None:
        deps = ["stages/train.py", "lib.py", "artifacts/split", "data"]
        dvc_yaml.write_text(yaml.safe_dump({"stages": {"train": {"cmd": cmd, "deps": deps}}}))

    def fingerprint() -> str:
        return training.code_fingerprint.__wrapped__("train", dvc_yaml)

    write("python -m stages.train")
    base = fingerprint()
    (tmp_path / "service.py").write_text("v2")  # not a dependency of the stage
    assert fingerprint() == base
    (tmp_path / "stages/train.py").write_text("v2")  # the stage's own script
    assert fingerprint() != base
    base = fingerprint()
    write("python -m stages.train --other")  # the stage's command
    assert fingerprint() != base


def test_ema_is_the_moving_average_of_the_weights_after_each_optimizer_step(tmp_path):
    """timm's ModelEmaV3 with warmup: step k's decay is min(ema_decay, 1 - k^(-2/3)), 0 at the first step."""
    from timm.utils import ModelEmaV3

    exp = experiment(batch_size=8, epochs=2, grad_accumulation=2, ema_decay=0.6)
    model = toy_model()
    ema = ModelEmaV3(model, decay=0.6, use_warmup=True)
    after_steps, seen = [], []  # the weights after each optimizer step; what each validation scored

    def validate(net):
        seen.append(weights(net))
        return 0.0, np.zeros(1)

    loop = make_loop(exp, model, tmp_path, ema=ema, validate=validate)
    loop.opt.register_step_post_hook(lambda *_: after_steps.append(weights(model)))
    training.fit(exp, model, loop, training.RunState(batch_size=8))

    assert len(after_steps) == 4  # 4 batches an epoch, 2 a step, 2 epochs
    expected = None
    for k, w in enumerate(after_steps, start=1):
        decay = 0.0 if k == 1 else min(0.6, 1 - k ** (-2 / 3))
        expected = (
            w if expected is None else [decay * e + (1 - decay) * x for e, x in zip(expected, w, strict=True)]
        )
    for got, want in zip(weights(ema.module), expected, strict=True):
        torch.testing.assert_close(got, want)
    # validation scored the average: after the last step, the average as it ended
    assert len(seen) == 2 and all(
        torch.equal(a, b) for a, b in zip(seen[-1], weights(ema.module), strict=True)
    )
    assert not all(torch.equal(a, b) for a, b in zip(seen[-1], after_steps[-1], strict=True))


def test_ema_decay_is_below_one():
    with pytest.raises(ConfigError, match="ema_decay"):
        experiment(ema_decay=1.0)
