"""Audio augmentations on a real FSDD clip, the decode-once cache and `training.epochs: auto`."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from projects import REPO, tiny_params

from deuterium import config, problems, training
from deuterium.data_types import decoded
from deuterium.data_types.audio import augment
from deuterium.data_types.audio.dataset import AudioClips
from deuterium.data_types.audio.decode import AudioDecoder
from deuterium.data_types.audio.settings import AudioAugmentation
from deuterium.errors import ConfigError

CLIP = REPO / "data" / "fsdd" / "recordings" / "3_jackson_10.wav"
RATE = 8000


def decoder(rate: int = RATE) -> AudioDecoder:
    return AudioDecoder({"sample_rate": rate, "chunk_samples": rate}, bounded=False)


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    wave = decoder().load(CLIP)
    out = np.zeros(RATE, dtype=np.float32)
    out[1000 : 1000 + min(len(wave), RATE - 2000)] = wave[: RATE - 2000]
    return torch.from_numpy(out)


OFF = {
    "time_shift_probability": 0.0,
    "gain_probability": 0.0,
    "noise_probability": 0.0,
    "pitch_probability": 0.0,
    "speed_probability": 0.0,
    "frequency_masks": 0,
    "time_masks": 0,
}


def only(**settings) -> augment.WaveAugment:
    return augment.WaveAugment(AudioAugmentation(**{**OFF, **settings}), RATE)


def test_time_shift_moves_the_clip_and_lets_silence_in(clip):
    torch.manual_seed(0)
    batch = clip.repeat(8, 1)
    out = only(time_shift_probability=1.0, time_shift_max=0.1)(batch)
    shifts = []
    for row in out:
        lags = range(-RATE // 10, RATE // 10 + 1)
        best = max(lags, key=lambda k: float(torch.dot(torch.roll(clip, k), row)))
        assert torch.allclose(torch.roll(clip, best), row, atol=1e-6)  # the clip moved whole, no wrap
        shifts.append(best)
    assert any(s != 0 for s in shifts) and all(abs(s) <= RATE // 10 for s in shifts)


def test_gain_scales_the_clip_within_the_range(clip):
    torch.manual_seed(1)
    out = only(gain_probability=1.0, gain_min_db=-12, gain_max_db=6)(clip.repeat(8, 1))
    ratios = out.norm(dim=1) / clip.norm()
    db = 20 * torch.log10(ratios)
    assert ((db >= -12 - 1e-3) & (db <= 6 + 1e-3)).all()
    assert db.std() > 0.5  # each clip drew its own gain
    assert torch.allclose(out / ratios[:, None], clip.repeat(8, 1), atol=1e-5)  # scaled, nothing else


def test_noise_reaches_the_asked_signal_to_noise_ratio(clip):
    torch.manual_seed(2)
    out = only(noise_probability=1.0, noise_min_snr_db=20, noise_max_snr_db=20)(clip.repeat(4, 1))
    noise = out - clip
    snr = 10 * torch.log10(clip.square().mean() / noise.square().mean(dim=1))
    assert torch.allclose(snr, torch.full_like(snr, 20.0), atol=0.5)


def test_probability_zero_is_identity(clip):
    assert augment.wave_augmenter(AudioAugmentation(**OFF), RATE) is None  # every probability 0: no module
    assert augment.spec_masks(AudioAugmentation(**OFF), RATE, 128, 64) is None
    torch.manual_seed(3)
    aug = only(gain_probability=1e-9, noise_probability=1e-9, time_shift_probability=1e-9)
    assert torch.equal(aug(clip.repeat(4, 1)), clip.repeat(4, 1))
    wave = decoder().load(CLIP)
    assert augment.speed(wave, 1.0, RATE) is wave


def test_speed_changes_the_length_by_the_factor():
    wave = decoder().load(CLIP)
    fast, slow = augment.speed(wave, 1.25, RATE), augment.speed(wave, 0.8, RATE)
    assert abs(len(fast) - len(wave) / 1.25) <= 2 and abs(len(slow) - len(wave) / 0.8) <= 2
    spectrum = lambda x: np.abs(np.fft.rfft(x, 4096))  # noqa: E731
    centroid = lambda x: (spectrum(x) * np.arange(2049)).sum() / spectrum(x).sum()  # noqa: E731
    assert centroid(fast) > centroid(wave) > centroid(slow)  # pitch goes with the speed


def test_spectrogram_masking_zeroes_whole_bands_only_in_training():
    torch.manual_seed(4)
    masks = augment.SpecMasks(frequency_masks=1, max_bins=10, time_masks=1, max_frames=6)
    spec = torch.randn(16, 1, 32, 40) + 5  # no zeros of its own
    out = masks.train()(spec)
    for clip in out[:, 0]:
        zero = clip == 0
        rows = zero.all(dim=1).nonzero().flatten()
        cols = zero.all(dim=0).nonzero().flatten()
        assert len(rows) < 10 and len(cols) < 6  # at most the asked widths
        if len(rows):
            assert (rows.diff() == 1).all()  # one contiguous band of mel bins
        # nothing is zeroed outside the masked bands and spans
        others = zero.clone()
        others[rows, :] = False
        others[:, cols] = False
        assert not others.any()
    assert sum(bool((c == 0).all(dim=1).any()) for c in out[:, 0]) >= 8  # most clips got a band
    assert torch.equal(masks.eval()(spec), spec)


def test_pitch_shift_without_a_fast_ratio_is_a_config_error():
    with pytest.raises(ConfigError, match="pitch_min_semitones"):
        only(pitch_probability=1.0, pitch_min_semitones=-2, pitch_max_semitones=2)  # none at 8 kHz


def test_a_reversed_range_is_refused():
    with pytest.raises(ValueError, match="speed_min"):
        AudioAugmentation(speed_min=1.2, speed_max=1.1)


def test_the_exported_graph_has_no_augmentation(tmp_path):
    """The model with SpecAugment masks exports the same graph as without (eval mode drops them)."""
    import onnx

    from deuterium import export

    nodes = {}
    for name, masks in (("plain", 0), ("masked", 2)):
        aug = {"frequency_masks": masks, "time_masks": masks}
        exp = config.parse(tiny_params({"augmentation": aug}))
        problem = problems.of(exp)
        model = problem.model(exp, 10).eval()
        assert (model.frontend.masks is not None) == (name == "masked")
        example, dims = problem.data.example_input(exp)
        path = tmp_path / f"{name}.onnx"
        export.to_onnx(model, example, dims, "waveform", path)
        nodes[name] = sorted(n.op_type for n in onnx.load(str(path)).graph.node)
    assert nodes["masked"] == nodes["plain"]


# --- decode once -------------------------------------------------------------------------------------------


class Counting(AudioDecoder):
    loads: list = []

    def load(self, source, name=None):
        Counting.loads.append(Path(source).name)
        return super().load(source, name)


def test_the_cache_decodes_each_clip_once_across_epochs_and_again_when_a_setting_changes(tmp_path):
    files = sorted((REPO / "data" / "fsdd" / "recordings").glob("1_theo_*.wav"))[:6]
    cache = decoded.DecodedCache(max_bytes=2**30)
    Counting.loads = []
    dec = Counting({"sample_rate": RATE, "chunk_samples": 4000}, bounded=False)
    clips = AudioClips(files, np.zeros((6, 1), np.float32), dec, 4000, seed=0, cache=cache)
    assert len(Counting.loads) == 6  # decoded up front
    for epoch in range(3):
        clips.set_epoch(epoch)
        for i in range(len(clips)):
            clips[i]
    assert len(Counting.loads) == 6 and cache.hits == 18

    other = Counting({"sample_rate": 16000, "chunk_samples": 8000}, bounded=False)
    AudioClips(files, np.zeros((6, 1), np.float32), other, 8000, seed=0, cache=cache)
    assert len(Counting.loads) == 12  # another sample rate: decoded again, at that rate
    assert cache.load(files[0], other).shape[-1] > cache.load(files[0], dec).shape[-1]

    changed = tmp_path / files[0].name
    changed.write_bytes(files[0].read_bytes())
    cache.load(changed, dec)
    os.utime(changed, ns=(1, 1))  # a file replaced in place (its modification time moves)
    cache.load(changed, dec)
    assert len(Counting.loads) == 14


def test_the_cache_stops_at_its_budget_and_zero_turns_it_off():
    files = sorted((REPO / "data" / "fsdd" / "recordings").glob("2_theo_*.wav"))[:4]
    dec = decoder()
    one = dec.load(files[0]).nbytes
    small = decoded.DecodedCache(max_bytes=one)
    small.fill(files, dec)
    assert small.bytes <= one and len(small._items) <= 1
    off = decoded.DecodedCache(max_bytes=0)
    off.fill(files, dec)
    off.load(files[0], dec)
    assert off.bytes == 0 and not off._items


# --- training length -----------------------------------------------------------------------------------------


def test_epochs_auto_gives_a_smaller_dataset_more_epochs():
    exp = config.parse(
        tiny_params({"training": {"epochs": "auto", "epochs_auto_steps": 600, "batch_size": 32}})
    )
    big = training.training_length(exp, 1800).training.epochs  # 56 steps an epoch
    small = training.training_length(exp, 450).training.epochs  # 14
    assert (big, small) == (11, 43)
    capped = config.parse(tiny_params({"training": {"epochs": "auto", "epochs_auto_max": 20}}))
    assert training.training_length(capped, 10).training.epochs == 20
    fixed = config.parse(tiny_params({"training": {"epochs": 4}}))
    assert training.training_length(fixed, 10).training.epochs == 4
    with pytest.raises(ConfigError, match="epochs_auto_min"):
        config.parse(tiny_params({"training": {"epochs_auto_min": 9, "epochs_auto_max": 3}}))
