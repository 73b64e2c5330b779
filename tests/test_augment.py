"""The augmentation section: what mixup does to a batch, and that the training loop applies it."""

import math

import pytest
import torch
from dvclive import Live
from projects import tiny_params
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deuterium import augment, config, training
from deuterium.errors import ConfigError

BATCH, SAMPLES = 64, 16
CLASSES = BATCH  # one class per clip


def settings(**aug):
    return config.parse(tiny_params({"augmentation": aug})).augmentation


def batch():
    # Clip i is the constant i + 1 and is class i, so a mix is easy to read back.
    wave = (torch.arange(BATCH, dtype=torch.float32) + 1).unsqueeze(1).repeat(1, SAMPLES)
    target = nn.functional.one_hot(torch.arange(BATCH), CLASSES).float()
    return wave, target


def test_disabled_leaves_the_batch_alone():
    wave, target = batch()
    out_wave, out_target = augment.mix(wave, target, settings())
    assert out_wave is wave and out_target is target


def test_mixup_blends_clips_and_targets_in_the_same_ratio():
    torch.manual_seed(0)
    wave, target = batch()
    mixed, soft = augment.mix(wave, target, settings(mix_audio="mixup"))
    assert not torch.equal(mixed, wave)
    assert torch.allclose(mixed, mixed[:, :1].expand_as(mixed))  # whole clips blended, sample by sample
    assert torch.allclose(soft.sum(1), torch.ones(BATCH))  # still a probability row
    for i in range(BATCH):
        weights = soft[i]
        partners = [j for j in weights.nonzero().flatten().tolist() if j != i]
        partner = partners[0] if partners else i
        assert len(partners) <= 1
        # wave: w * own clip + (1 - w) * partner clip; target: w * own class + (1 - w) * partner class
        expected = weights[i] * (i + 1) + (1 - weights[i]) * (partner + 1)
        assert torch.isclose(mixed[i, 0], expected, atol=1e-4)
    assert (soft.max(1).values < 0.99).sum() > BATCH // 2  # most rows really are blends


@pytest.mark.parametrize("how,expected", [("max", 2), ("min", 0)])
def test_mix_target_max_and_min(how, expected):
    torch.manual_seed(0)
    wave, target = batch()
    _, out = augment.mix(wave, target, settings(mix_audio="mixup", mix_target=how))
    assert set(out.unique().tolist()) <= {0.0, 1.0}  # no blending of the targets
    moved = out.sum(1) != 1  # rows mixed with another clip (not with themselves)
    assert moved.sum() > BATCH // 2 and (out.sum(1)[moved] == expected).all()


def test_mix_probability_is_per_batch():
    wave, target = batch()
    torch.manual_seed(0)
    never = [
        augment.mix(wave, target, settings(mix_audio="mixup", mix_probability=0.0))[0] for _ in range(20)
    ]
    assert all(torch.equal(w, wave) for w in never)
    half = [
        augment.mix(wave, target, settings(mix_audio="mixup", mix_probability=0.5))[0] for _ in range(200)
    ]
    mixed = sum(not torch.equal(w, wave) for w in half)
    assert 70 < mixed < 130


def test_mix_concentration_shapes_the_weights():
    wave, target = batch()

    def spread(c):
        torch.manual_seed(0)
        _, soft = augment.mix(wave, target, settings(mix_audio="mixup", mix_concentration=c))
        return soft.max(1).values.mean().item()  # near 1: weights near 0 or 1; near 0.5: even blends

    assert spread(0.1) > 0.9 and spread(50.0) < 0.65


def test_mix_iterations_mix_more_clips_into_each_row():
    wave, target = batch()

    def classes_per_row(iterations):
        torch.manual_seed(0)
        _, soft = augment.mix(wave, target, settings(mix_audio="mixup", mix_iterations=iterations))
        return (soft > 1e-6).sum(1).float().mean().item()

    assert classes_per_row(1) <= 2 < classes_per_row(3)


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="augmentation.mix_audio"):
        settings(mix_audio="cutmix")
    with pytest.raises(ConfigError, match="augmentation.mix_probability"):
        settings(mix_probability=1.5)


def test_the_training_loop_trains_on_mixed_batches(tmp_path):
    """fit() hands the loss mixed waves and soft targets when mix_audio is mixup, the data's own otherwise."""
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(SAMPLES, CLASSES)

        def forward(self, x):
            seen.append(x[:, 0].detach().clone())
            return self.head(x)

    def run(aug: dict, folder: str) -> list[torch.Tensor]:
        seen.clear()
        exp = config.parse(
            tiny_params(
                {"augmentation": aug, "training": {"epochs": 1, "batch_size": 16, "optimizer": "SGD"}}
            )
        )
        torch.manual_seed(0)
        model = Spy()
        wave, target = batch()
        loader = DataLoader(TensorDataset(wave, target), batch_size=16)
        opt = training.optimizer(exp, model)
        steps = math.ceil(len(loader) / exp.training.grad_accumulation)
        loop = training.Loop(
            loader=loader,
            loss_fn=nn.CrossEntropyLoss(),
            opt=opt,
            sched=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: training.lr_factor(exp, s, steps)),
            scaler=torch.amp.GradScaler(enabled=False),
            dev=torch.device("cpu"),
            live=Live(str(tmp_path / folder), report=None, save_dvc_exp=False, dvcyaml=None),
            prefix="fold0",
            seed=1,
        )
        training.fit(exp, model, loop, training.RunState(batch_size=16))
        return [s for s in seen]

    plain = torch.cat(run({}, "plain"))
    assert set(plain.tolist()) <= set(range(1, BATCH + 1))  # the clips as they are
    mixed = torch.cat(run({"mix_audio": "mixup"}, "mixed"))
    assert not set(mixed.tolist()) <= set(range(1, BATCH + 1))  # blends of two clips
