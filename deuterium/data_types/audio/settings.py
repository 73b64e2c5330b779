"""The audio data type's settings: its `audio` section and its keys in dataset, prediction, augmentation
and logging (H2O Hydrogen Torch's names)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from deuterium.settings import LoggingBase, MixSettings, PredictionBase, Section


class AudioSettings(Section):
    audio_parameters: Literal["auto", "manual"] = "manual"  # auto: see deuterium/data_types/audio/params.py
    audio_channels: int = Field(1, ge=1, le=32)
    sample_rate: int = Field(16000, ge=1000, le=192000)
    training_chunk_seconds: float = Field(1.0, gt=0, le=60)
    stft_window_size: int = Field(512, ge=16)
    hop_size: int = Field(128, ge=1)
    mel_frequency_bins: int = Field(64, ge=8, le=512)
    min_frequency: float = Field(0.0, ge=0)
    max_frequency: float | None = Field(None, gt=0)
    # image: the spectrogram's mean and std; frequency: each mel bin's mean over time (cepstral mean
    # normalization, which takes out a recording's fixed colouring), then the spectrogram's std
    spectrogram_normalization: Literal["no", "image", "frequency"] = "image"
    # what one input to the service or the scorer may be, saved with the model (checked from the header)
    max_seconds: float = Field(600.0, gt=0, le=86400)
    max_decoded_samples: int = Field(600 * 48000 * 2, ge=1000)  # frames x channels of the file as stored

    @field_validator("spectrogram_normalization", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @model_validator(mode="after")
    def _frequencies(self) -> AudioSettings:
        nyquist = self.sample_rate / 2
        top = self.max_frequency if self.max_frequency is not None else nyquist
        if top > nyquist:
            raise ValueError(
                f"audio.max_frequency {top} is above the Nyquist frequency {nyquist} of sample_rate"
            )
        if self.min_frequency >= top:
            raise ValueError(f"audio.min_frequency {self.min_frequency} must be below max_frequency {top}")
        if self.hop_size > self.stft_window_size:
            raise ValueError("audio.hop_size must not exceed audio.stft_window_size")
        return self

    @property
    def chunk_samples(self) -> int:
        return round(self.training_chunk_seconds * self.sample_rate)


CHOSEN = ("sample_rate", "training_chunk_seconds")  # what audio_parameters auto chooses


class AudioPrediction(PredictionBase):
    inference_chunk_method: Literal["fix", "varying"] = "fix"
    inference_chunk_seconds: float | None = Field(None, gt=0, le=600)  # fix: chunk length
    max_inference_chunk_seconds: float = Field(600.0, gt=0, le=600)  # varying: longest piece

    @model_validator(mode="after")
    def _chunk_method(self) -> AudioPrediction:
        if self.inference_chunk_method == "varying" and self.inference_chunk_seconds is not None:
            raise ValueError(
                "prediction.inference_chunk_seconds is for inference_chunk_method 'fix'; "
                "'varying' takes max_inference_chunk_seconds"
            )
        return self


class AudioAugmentation(MixSettings):
    """Training-only augmentations (deuterium/data_types/audio/augment.py); a probability of 0 turns one off.
    The defaults are params.yaml's, chosen by the ablation in README (bench/ablation.py)."""

    mix_audio: Literal["disabled", "mixup"] = "disabled"
    # waveform, per clip (torch-audiomentations)
    time_shift_probability: float = Field(0.5, ge=0, le=1)
    time_shift_max: float = Field(0.2, gt=0, le=1)  # fraction of the crop, either way; silence comes in
    gain_probability: float = Field(0.5, ge=0, le=1)
    gain_min_db: float = Field(-12.0, ge=-60, le=30)
    gain_max_db: float = Field(6.0, ge=-60, le=30)
    noise_probability: float = Field(0.5, ge=0, le=1)
    noise_min_snr_db: float = Field(10.0, ge=-20, le=100)
    noise_max_snr_db: float = Field(40.0, ge=-20, le=100)
    noise_min_f_decay: float = Field(-2.0, ge=-3, le=3)  # spectral slope: 0 white, 1 pink, 2 brown, -1 blue
    noise_max_f_decay: float = Field(2.0, ge=-3, le=3)
    pitch_probability: float = Field(0.0, ge=0, le=1)
    pitch_min_semitones: float = Field(-4.0, ge=-12, le=12)
    pitch_max_semitones: float = Field(4.0, ge=-12, le=12)
    # speed (tempo and pitch together, soxr), per clip before the crop
    speed_probability: float = Field(0.8, ge=0, le=1)
    speed_min: float = Field(0.85, ge=0.5, le=2)
    speed_max: float = Field(1.15, ge=0.5, le=2)
    # SpecAugment masking on the log-mel spectrogram (torchaudio)
    frequency_masks: int = Field(2, ge=0, le=10)
    frequency_mask_max_bins: int = Field(8, ge=0, le=512)
    time_masks: int = Field(2, ge=0, le=10)
    time_mask_max_seconds: float = Field(0.05, ge=0, le=10)

    @model_validator(mode="after")
    def _ranges(self) -> AudioAugmentation:
        for low, high in (
            ("gain_min_db", "gain_max_db"),
            ("noise_min_snr_db", "noise_max_snr_db"),
            ("noise_min_f_decay", "noise_max_f_decay"),
            ("pitch_min_semitones", "pitch_max_semitones"),
            ("speed_min", "speed_max"),
        ):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"augmentation.{low} {getattr(self, low)} is above augmentation.{high} {getattr(self, high)}"
                )
        return self


class AudioLogging(LoggingBase):
    number_of_audios_to_show: int = Field(10, ge=0, le=1000)


DATASET_FIELDS = {"audio_column": (str, "audio")}
