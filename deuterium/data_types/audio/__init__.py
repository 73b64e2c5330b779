"""Audio: a column of audio files (WAV, FLAC, OGG, MP3, any rate and channels) -> waveform -> log-mel -> timm.

The ONNX graph takes raw waveform pieces at the model's sample rate; decoding, mixing down and
resampling happen in the torch-free `AudioDecoder` (deuterium/data_types/audio/decode.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deuterium.data_types.audio.settings import (
    DATASET_FIELDS,
    AudioAugmentation,
    AudioLogging,
    AudioPrediction,
    AudioSettings,
)
from deuterium.data_types.base import DataType, register
from deuterium.errors import InputError


def chunk_samples(exp) -> int:
    """fix: the length of every inference chunk; varying: the longest piece a clip is cut into."""
    pred, audio = exp.prediction, exp.audio
    if pred.inference_chunk_method == "varying":
        return round(pred.max_inference_chunk_seconds * audio.sample_rate)
    seconds = pred.inference_chunk_seconds or audio.training_chunk_seconds
    return round(seconds * audio.sample_rate)


@register("audio")
class Audio(DataType):
    noun = "audio"
    Settings = AudioSettings
    Prediction = AudioPrediction
    Augmentation = AudioAugmentation
    Logging = AudioLogging
    dataset_fields = DATASET_FIELDS
    column_key = "audio_column"
    file_suffixes = frozenset(
        {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
    )
    scoring_requirements = ("soundfile", "scipy")
    front_end = "deuterium.data_types.audio.frontend.LogMel"
    decoder_class = "deuterium.data_types.audio.decode:AudioDecoder"
    json_help = (
        "`waveform` (mono samples, a list of floats) or `waveform_base64` (base64 of float32 little-endian), "
        "each with its `sample_rate`; or `audio_base64`, a whole audio file in base64"
    )
    json_example = {"waveform": [0.0, 0.01, -0.02, 0.03], "sample_rate": 16000}
    limits_example = {"sample_rate": 8000, "max_seconds": 600.0}

    def check_file(self, path: Path, shown: str, exp) -> str | None:
        from deuterium.data_types.audio import io

        try:
            with io.quiet_stderr():  # a broken MP3 makes the decoder print notes; the report names the file
                meta = io.info(path, name=shown)
                if meta.frames <= 0:
                    return f"{shown}: the audio file has no frames"
                io.scan(path, shown)  # every sample: NaN, inf, corrupt data past the header
        except InputError as err:
            return str(err)
        return None

    def choose(self, files: list[Path], exp) -> dict | None:
        from deuterium.data_types.audio import params

        return params.choose(files, exp.audio) if exp.audio.audio_parameters == "auto" else None

    def chosen_keys(self, exp) -> dict[str, str]:
        from deuterium.data_types.audio.settings import CHOSEN

        if exp.audio.audio_parameters != "auto":
            return {}
        why = "audio.audio_parameters auto chooses it from the training files (set audio_parameters: manual to search it)"
        return {f"audio.{key}": why for key in CHOSEN}

    def resolve(self, exp, info: dict):
        from deuterium.data_types.audio import params

        return params.resolve(exp, info)

    def preprocessing(self, exp) -> dict:
        return {
            "sample_rate": exp.audio.sample_rate,
            "chunk_samples": chunk_samples(exp),
            "channels": exp.audio.audio_channels,
            "chunk_method": exp.prediction.inference_chunk_method,
            "min_samples": exp.audio.stft_window_size,
            "max_seconds": exp.audio.max_seconds,
            "max_decoded_samples": exp.audio.max_decoded_samples,
        }

    def dataset(self, files, targets, exp, seed):
        from deuterium.data_types.audio.dataset import AudioClips

        decoder = self.decoder(self.preprocessing(exp), bounded=False)
        return AudioClips(files, targets, decoder, exp.audio.chunk_samples, seed, exp.augmentation)

    def batch_augmenter(self, exp):
        from deuterium.data_types.audio.augment import wave_augmenter

        return wave_augmenter(exp.augmentation, exp.audio.sample_rate)

    def model(self, exp, n_outputs: int):
        from deuterium.data_types.audio.augment import spec_masks
        from deuterium.data_types.audio.frontend import LogMel
        from deuterium.models.timm_model import TimmModel

        a = exp.audio
        masks = spec_masks(exp.augmentation, a.sample_rate, a.hop_size, a.mel_frequency_bins)
        return TimmModel(LogMel(a, masks), a.audio_channels, exp.architecture, n_outputs)

    def example_input(self, exp):
        import torch

        pre = self.preprocessing(exp)
        chunk, channels, min_samples = pre["chunk_samples"], pre["channels"], pre["min_samples"]
        varying = pre["chunk_method"] == "varying"
        if varying:
            chunk = max(chunk, min_samples + 1)
        length = min(chunk, 8 * min_samples) if varying else chunk
        example = torch.zeros(2, length) if channels == 1 else torch.zeros(2, channels, length)
        dims = {}
        if varying:
            dims[example.dim() - 1] = torch.export.Dim("samples", min=min_samples, max=chunk)
        return example, dims

    def render(self, x: np.ndarray, exp) -> tuple[np.ndarray, dict]:
        import torch

        from deuterium.data_types.audio.frontend import LogMel

        mel = LogMel(exp.audio).eval()
        piece = self.decoder(self.preprocessing(exp), bounded=False).pieces(x)[0]
        with torch.no_grad():
            image = mel(torch.from_numpy(piece)[None])[0, 0].numpy()
        return image, {
            "origin": "lower",
            "aspect": "auto",
            "cmap": "magma",
            "xlabel": "frame",
            "ylabel": "mel bin",
        }
