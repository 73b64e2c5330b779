"""The log-mel front end: torchaudio's numbers from a conv1d STFT, and what each audio setting does to the image."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio
from projects import tiny_params

from deuterium import config, problems
from deuterium.data_types.audio.frontend import LogMel
from deuterium.data_types.audio.settings import AudioSettings

RATE = 8000


def tone(freq: float, seconds: float = 1.0, rate: int = RATE) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return (0.5 * torch.sin(2 * torch.pi * freq * t)).float()


def raw(audio: AudioSettings, wave: torch.Tensor) -> torch.Tensor:
    mel = LogMel(audio.model_copy(update={"spectrogram_normalization": "no"}))
    with torch.no_grad():
        return mel(wave)


@pytest.mark.parametrize(
    "settings",
    [
        {"sample_rate": 8000, "stft_window_size": 256, "hop_size": 128, "max_frequency": 4000},
        {"sample_rate": 16000},
        {
            "sample_rate": 16000,
            "stft_window_size": 400,
            "hop_size": 160,
            "mel_frequency_bins": 40,
            "min_frequency": 50,
            "max_frequency": 7000,
        },
        {"sample_rate": 22050, "stft_window_size": 1024, "hop_size": 333, "mel_frequency_bins": 128},
    ],
)
def test_matches_torchaudio_melspectrogram(settings):
    audio = AudioSettings(**settings)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=audio.sample_rate,
        n_fft=audio.stft_window_size,
        hop_length=audio.hop_size,
        f_min=audio.min_frequency,
        f_max=audio.max_frequency,
        n_mels=audio.mel_frequency_bins,
        power=2.0,
    )
    wave = torch.randn(3, audio.sample_rate, generator=torch.Generator().manual_seed(0)) * 0.3
    wave[1, audio.sample_rate // 2 :] = 0  # silence: where log amplifies any difference
    ours = raw(audio, wave)
    exact = torch.log(reference.double()(wave.double()) + 1e-6).unsqueeze(1)
    assert (ours - exact).abs().max() < 1e-4
    if audio.stft_window_size <= 512:
        # With 1024-sample windows and 128 mels, torchaudio's float32 FFT itself strays ~1e-4 from
        # the float64 answer in the narrowest low bands; the conv1d STFT stays within 1e-4 of it.
        expected = torch.log(reference.float()(wave) + 1e-6).unsqueeze(1)
        assert (ours - expected).abs().max() < 1e-4


def test_hop_size_and_mel_bins_set_the_image_size():
    audio = AudioSettings(sample_rate=RATE, stft_window_size=256, hop_size=128, mel_frequency_bins=64)
    assert raw(audio, torch.zeros(2, RATE)).shape == (2, 1, 64, RATE // 128 + 1)
    audio = audio.model_copy(update={"hop_size": 64, "mel_frequency_bins": 32})
    assert raw(audio, torch.zeros(2, RATE)).shape == (2, 1, 32, RATE // 64 + 1)


def test_stft_window_size_sets_the_frequency_resolution():
    # Two tones 40 Hz apart: a 1024-sample window (7.8 Hz bins) separates them, a 64-sample one (125 Hz) cannot.
    wave = (tone(1000) + tone(1040)).unsqueeze(0)
    for window, resolved in ((1024, True), (64, False)):
        mel = LogMel(
            AudioSettings(sample_rate=RATE, stft_window_size=window, hop_size=32, max_frequency=4000)
        )
        power = mel.power(wave)[0].mean(-1)
        hz = np.fft.rfftfreq(window, 1 / RATE)
        between = power[np.argmin(np.abs(hz - 1020))]
        assert (between < 0.5 * power.max()) == resolved


def test_min_and_max_frequency_bound_the_mel_bands():
    wave = tone(3000).unsqueeze(0)
    wide = AudioSettings(sample_rate=RATE, stft_window_size=256, hop_size=128, max_frequency=4000)
    narrow = wide.model_copy(update={"max_frequency": 2000.0})
    high = wide.model_copy(update={"min_frequency": 3500.0})
    assert raw(wide, wave).max() > 0  # the tone's band is loud
    assert raw(narrow, wave).max() < raw(wide, wave).max() - 5  # above max_frequency: no band sees it
    assert raw(high, wave).max() < raw(wide, wave).max() - 5  # below min_frequency: no band sees it


def test_spectrogram_normalization():
    wave = torch.stack([tone(500), 0.01 * tone(1500)])
    base = AudioSettings(sample_rate=RATE, stft_window_size=256, hop_size=128, max_frequency=4000)
    with torch.no_grad():
        image = LogMel(base.model_copy(update={"spectrogram_normalization": "image"}))(wave)
        plain = LogMel(base.model_copy(update={"spectrogram_normalization": "no"}))(wave)
    means, stds = image.mean(dim=(1, 2, 3)), image.std(dim=(1, 2, 3))
    assert torch.allclose(means, torch.zeros(2), atol=1e-4) and torch.allclose(stds, torch.ones(2), atol=1e-3)
    assert plain.mean(dim=(1, 2, 3)).abs().min() > 1  # raw log power, not centred


def test_frequency_normalization_takes_out_a_fixed_colouring():
    """Each mel bin's mean over time is removed: a recording through a fixed filter (here a first-order
    high-pass, a cheap microphone's tilt) gives nearly the same image; image normalization keeps the tilt."""
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(RATE).astype(np.float32))
    speechlike = noise * (0.2 + torch.sin(torch.linspace(0, 12, RATE)).abs())  # loudness moving in time
    tilted = speechlike.clone()
    tilted[1:] -= 0.9 * speechlike[:-1]  # y[n] = x[n] - 0.9 x[n-1]
    base = AudioSettings(sample_rate=RATE, stft_window_size=256, hop_size=128, max_frequency=4000)
    with torch.no_grad():
        by_bin = LogMel(base.model_copy(update={"spectrogram_normalization": "frequency"}))
        image = LogMel(base.model_copy(update={"spectrogram_normalization": "image"}))
        a, b = by_bin(torch.stack([speechlike, tilted]))
        c, d = image(torch.stack([speechlike, tilted]))
    assert torch.allclose(a.mean(dim=2), torch.zeros_like(a.mean(dim=2)), atol=1e-4)  # every bin centred
    assert a.std().item() == pytest.approx(1.0, abs=1e-3)
    assert (a - b).abs().mean() < 0.15  # the tilt is gone
    assert (c - d).abs().mean() > 3 * (a - b).abs().mean()  # and image normalization keeps it


def test_channels_become_image_channels():
    audio = AudioSettings(sample_rate=RATE, stft_window_size=256, hop_size=128, max_frequency=4000)
    stereo = torch.stack([tone(500), tone(1500)]).unsqueeze(0)  # [1, 2, samples]
    image = raw(audio, stereo)
    assert image.shape[:2] == (1, 2)
    # equal up to float rounding: the STFT of a batch of two may sum in another order (threads, kernels)
    torch.testing.assert_close(image[:, :1], raw(audio, stereo[:, 0]), rtol=1e-4, atol=1e-3)


def test_models_saved_with_torchaudio_buffers_still_load():
    exp = config.parse(tiny_params())
    model = problems.of(exp).model(exp, 10)
    state = model.state_dict()
    state["frontend.mel.spectrogram.window"] = torch.ones(256)
    state["frontend.mel.mel_scale.fb"] = torch.ones(129, 64)
    model.load_state_dict(state)  # strict: the old front end's buffers are dropped, nothing else differs


def test_training_chunk_seconds_is_the_crop_length(tmp_path):
    for name, seconds in (("short.wav", 0.2), ("long.wav", 2.0)):
        sf.write(tmp_path / name, np.full(int(seconds * RATE), 0.5, dtype=np.float32), RATE)
    frame_exp = config.parse(tiny_params({"audio": {"training_chunk_seconds": 0.75}}))
    frame = pd.DataFrame({"file": ["short.wav", "long.wav"]})
    exp = frame_exp.model_copy(
        update={"dataset": frame_exp.dataset.model_copy(update={"data_folder": tmp_path})}
    )
    items = problems.of(exp).dataset(frame, exp, np.zeros((2, 1), dtype=np.float32), seed=0)
    short, long = items[0][0], items[1][0]
    assert short.shape == long.shape == (int(0.75 * RATE),)
    assert (short != 0).sum() == int(0.2 * RATE)  # zero-padded, not stretched
    assert (long != 0).sum() > 0.7 * RATE  # a crop of the long clip


def test_audio_channels_shape_the_training_items_and_the_model_input(tmp_path):
    stereo = np.stack([np.full(RATE, 0.5), np.full(RATE, -0.25)], axis=1).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", stereo, RATE)
    frame = pd.DataFrame({"file": ["stereo.wav"]})
    for channels, expected in ((1, [0.125]), (2, [0.5, -0.25]), (3, [0.5, -0.25, 0.0])):
        base = config.parse(tiny_params({"audio": {"audio_channels": channels}}))
        exp = base.model_copy(update={"dataset": base.dataset.model_copy(update={"data_folder": tmp_path})})
        problem = problems.of(exp)
        wave, _ = problem.dataset(frame, exp, np.zeros((1, 1), dtype=np.float32), seed=0)[0]
        assert wave.shape == (
            (exp.audio.chunk_samples,) if channels == 1 else (channels, exp.audio.chunk_samples)
        )
        assert np.allclose(wave.reshape(channels, -1)[:, 0].numpy(), expected, atol=1e-4)
        model = problem.model(exp, 10).eval()
        with torch.no_grad():
            assert model(wave.unsqueeze(0)).shape == (1, 10)
