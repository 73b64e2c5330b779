"""The one audio loader: formats, channels, bit depths, sample rates and broken files."""

import contextlib
import io

import numpy as np
import pytest
import soundfile as sf

from deuterium import scoring
from deuterium.data_types.audio import io as audio_io
from deuterium.errors import AudioError, InputError

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


def _stereo(channels: int) -> bytes:
    buf = io.BytesIO()
    waves = [tone(freq=300 + 200 * c) for c in range(channels)]
    sf.write(buf, np.stack(waves, axis=1), RATE, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_channels_one_averages_into_a_channel_axis():
    data = _stereo(2)
    wave = audio_io.load(data, RATE, channels=1)
    assert wave.shape == (1, int(0.5 * RATE))
    assert np.allclose(wave[0], audio_io.load(data, RATE), atol=1e-6)  # the default: mono, no channel axis


def test_more_channels_keep_the_first_ones_and_zero_pad_the_missing():
    four = audio_io.load(_stereo(4), RATE, channels=2)
    assert four.shape == (2, int(0.5 * RATE))
    assert np.allclose(four, np.stack([tone(freq=300), tone(freq=500)]), atol=1e-6)
    mono = audio_io.load(_stereo(1), RATE, channels=3)
    assert np.allclose(mono[0], tone(freq=300), atol=1e-6) and not mono[1:].any()


def test_channels_survive_resampling():
    buf = io.BytesIO()
    sf.write(
        buf, np.stack([tone(rate=16000, freq=300), tone(rate=16000, freq=900)], axis=1), 16000, format="WAV"
    )
    wave = audio_io.load(buf.getvalue(), RATE, channels=2)
    assert wave.shape == (2, int(0.5 * RATE))
    peaks = [np.argmax(np.abs(np.fft.rfft(w))) * RATE / wave.shape[1] for w in wave]
    assert abs(peaks[0] - 300) < 10 and abs(peaks[1] - 900) < 10


def test_fix_pieces_are_padded_chunks_varying_pieces_are_whole_clips():
    wave = np.ones(2500, dtype=np.float32)
    fix = audio_io.pieces(wave, 1000, "fix")
    assert [len(p) for p in fix] == [1000, 1000, 1000] and fix[2][500:].sum() == 0
    assert [len(p) for p in audio_io.pieces(wave, 1000, "varying")] == [1000, 1000, 500]  # unpadded
    assert [len(p) for p in audio_io.pieces(wave, 4000, "varying")] == [2500]  # the whole clip
    assert [len(p) for p in audio_io.pieces(np.ones(100, np.float32), 4000, "varying", 256)] == [256]
    stereo = np.ones((2, 2500), dtype=np.float32)
    assert [p.shape for p in audio_io.pieces(stereo, 1000, "varying")] == [(2, 1000), (2, 1000), (2, 500)]
    assert audio_io.chunks(stereo, 1000).shape == (3, 2, 1000)


def test_piece_averager_batches_equal_shapes_and_averages_per_clip():
    batches = []

    def run(batch):
        batches.append(batch.shape)
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)

    averager = scoring.PieceAverager(run, batch_size=2)
    averager.add([np.full(4, 1.0, np.float32), np.full(4, 3.0, np.float32), np.full(2, 5.0, np.float32)])
    averager.add([np.full(2, 7.0, np.float32)])
    out = averager.result()
    assert np.allclose(out[:, 0], [3.0, 7.0])
    assert sorted(batches) == [(2, 2), (2, 4)]  # never more than batch_size, never mixed lengths


def test_a_padded_tail_counts_for_the_samples_it_holds():
    """Issue 15: in fix mode a tail chunk of a quarter clip counted as much as a whole one."""
    from deuterium.data_types.audio.decode import AudioDecoder

    decoder = AudioDecoder({"sample_rate": RATE, "chunk_samples": 1000, "chunk_method": "fix"})
    wave = np.ones(1250, np.float32)
    assert [len(p) for p in decoder.pieces(wave)] == [1000, 1000]
    assert decoder.piece_weights(wave) == [1000.0, 250.0]
    seen = []
    averager = scoring.PieceAverager(lambda b: seen.append(len(b)) or np.array([[1.0], [3.0]]), batch_size=8)
    averager.add(decoder.pieces(wave), decoder.piece_weights(wave))
    assert averager.result()[0, 0] == pytest.approx((1.0 * 1000 + 3.0 * 250) / 1250)
    varying = AudioDecoder(
        {"sample_rate": RATE, "chunk_samples": 1000, "chunk_method": "varying", "min_samples": 256}
    )
    assert varying.piece_weights(np.ones(2100, np.float32)) == [1000.0, 1000.0, 100.0]


def test_validate_keeps_the_mp3_decoders_notes_out_of_the_terminal(tmp_path, capfd):
    """Issue 15: libsndfile's MP3 decoder printed notes for every broken MP3 into the user's terminal."""
    from deuterium.data_types.audio import Audio

    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(RATE * 3) / 5)).astype(np.float32), RATE, format="MP3")
    data = bytearray(buf.getvalue())
    rng = np.random.default_rng(0)
    for i in range(2000, len(data), 97):
        data[i] = rng.integers(0, 256)
    path = tmp_path / "broken.mp3"
    path.write_bytes(bytes(data))
    capfd.readouterr()
    # mpg123 decodes these broken frames differently from run to run (now and then to samples beyond
    # MAX_ABS_SAMPLE, refused): what is checked here is the terminal, whichever way the load ends
    with contextlib.suppress(AudioError):
        audio_io.load(path, RATE)  # unguarded: the decoder's notes reach file descriptor 2
    assert "error" in capfd.readouterr().err
    with audio_io.quiet_stderr(), contextlib.suppress(AudioError):
        audio_io.load(path, RATE)
    Audio().check_file(path, "broken.mp3", None)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("rate", [0, 2**31, 0xFFFFFFFF])
def test_a_header_rate_libsndfile_refuses_is_named_as_a_sample_rate(rate):
    """libsndfile says "Internal error : SF_INFO struct incomplete" of a header's rate of 0 or beyond 2^31."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800, np.float32), 8000, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    data[24:28] = rate.to_bytes(4, "little")  # the fmt chunk's sample rate
    with pytest.raises(
        AudioError, match=r"x.wav: .*its header states no usable sample rate; the limit is 384000 Hz"
    ):
        audio_io.info(bytes(data), "x.wav")


def test_a_json_sample_beyond_float32_is_said_to_be_out_of_range_not_infinite():
    from deuterium.data_types.audio.decode import AudioDecoder

    decoder = AudioDecoder({"sample_rate": RATE, "chunk_samples": 1000, "chunk_method": "fix"})
    with pytest.raises(InputError, match=r"waveform: the audio contains samples beyond \+-1e\+06"):
        decoder.from_json({"waveform": [1e308, 0.3], "sample_rate": RATE})
    with pytest.raises(InputError, match=r"waveform: the audio contains samples beyond \+-1e\+06"):
        decoder.from_json({"waveform": [1e10, 0.3], "sample_rate": RATE})
    assert decoder.from_json({"waveform": [0.5, -0.25], "sample_rate": RATE}).dtype == np.float32
