"""The one audio loader: formats, channels, bit depths, sample rates and broken files."""

import io

import numpy as np
import pytest
import soundfile as sf

from deuterium import audio_io
from deuterium.errors import AudioError

RATE = 8000


def tone(seconds=0.5, rate=RATE, freq=440.0, channels=1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize(
    "fmt,subtype,channels,rate",
    [
        ("WAV", "PCM_16", 1, 8000),
        ("WAV", "PCM_U8", 1, 8000),
        ("WAV", "PCM_24", 2, 48000),
        ("FLAC", "PCM_16", 2, 44100),
        ("OGG", "VORBIS", 1, 16000),
        ("MP3", "MPEG_LAYER_III", 1, 16000),
    ],
)
def test_formats_are_mixed_to_mono_and_resampled(fmt, subtype, channels, rate):
    buf = io.BytesIO()
    sf.write(buf, tone(rate=rate, channels=channels), rate, format=fmt, subtype=subtype)
    wave = audio_io.load(buf.getvalue(), RATE, name="clip")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 0.5 * RATE) < 0.06 * RATE  # MP3 adds encoder padding
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * RATE / len(wave) - 440) < 10


def test_path_and_bytes_read_the_same(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, tone(), RATE)
    assert np.array_equal(audio_io.load(path, RATE), audio_io.load(path.read_bytes(), RATE))


def test_stereo_channels_are_averaged():
    left, right = tone(freq=300), tone(freq=500)
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], axis=1), RATE, format="WAV", subtype="FLOAT")
    assert np.allclose(audio_io.load(buf.getvalue(), RATE), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("data", [b"", b"not audio at all", b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_broken_input_is_an_audio_error_naming_the_source(data):
    with pytest.raises(AudioError, match="clip.wav"):
        audio_io.load(data, RATE, name="clip.wav")


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(AudioError, match="no samples"):
        audio_io.load(path, RATE)


def test_too_long(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(seconds=3), RATE)
    with pytest.raises(AudioError, match="longer than"):
        audio_io.load(path, RATE, max_seconds=2)


def test_chunks_pad_the_last_piece():
    pieces = audio_io.chunks(np.ones(2500, dtype=np.float32), 1000)
    assert pieces.shape == (3, 1000)
    assert pieces[2, :500].sum() == 500 and pieces[2, 500:].sum() == 0
    assert audio_io.chunks(np.ones(10, dtype=np.float32), 1000).shape == (1, 1000)
