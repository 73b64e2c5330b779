"""The sections of params.yaml that every problem type shares (pydantic, unknown keys rejected).

Names follow H2O Hydrogen Torch's experiment settings, in snake_case. A problem type
subclasses `ExperimentBase` with its own `problem_type` literal and the sections
whose allowed values differ (loss, metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSettings(Section):
    train_dataframe: Path
    data_folder: Path
    audio_column: str = "audio"
    label_columns: list[str] = Field(min_length=1)
    validation_strategy: Literal["k_fold", "grouped_k_fold", "custom_holdout", "automatic_holdout"] = "k_fold"
    number_of_folds: int = Field(5, ge=2, le=100)
    fold_column: str | None = None
    group_column: str | None = None
    validation_dataframe: Path | None = None
    validation_size: float = Field(0.2, gt=0, lt=1)
    selected_folds: list[int] | Literal["all"] = Field(default_factory=lambda: [0])
    test_dataframe: Path | None = None
    data_folder_test: Path | None = None
    unlabeled_dataframe: Path | None = None
    data_sample: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _strategy_needs(self) -> DatasetSettings:
        if self.validation_strategy == "grouped_k_fold" and not self.group_column:
            raise ValueError("validation_strategy 'grouped_k_fold' needs dataset.group_column")
        if self.validation_strategy == "custom_holdout" and self.validation_dataframe is None:
            raise ValueError("validation_strategy 'custom_holdout' needs dataset.validation_dataframe")
        if self.validation_dataframe is not None and self.validation_strategy != "custom_holdout":
            raise ValueError(
                "dataset.validation_dataframe is only used with validation_strategy 'custom_holdout'"
            )
        if isinstance(self.selected_folds, list):
            if not self.selected_folds:
                raise ValueError("dataset.selected_folds must name at least one fold, or be 'all'")
            if len(set(self.selected_folds)) != len(self.selected_folds):
                raise ValueError("dataset.selected_folds repeats a fold")
            n = self.fold_count
            bad = [k for k in self.selected_folds if not 0 <= k < n]
            if bad:
                raise ValueError(
                    f"dataset.selected_folds {bad} out of range: this strategy makes folds 0..{n - 1}"
                )
        return self

    @property
    def fold_count(self) -> int:
        return (
            1 if self.validation_strategy in ("custom_holdout", "automatic_holdout") else self.number_of_folds
        )

    @property
    def folds(self) -> list[int]:
        return list(range(self.fold_count)) if self.selected_folds == "all" else list(self.selected_folds)

    @property
    def test_data_folder(self) -> Path:
        return self.data_folder_test or self.data_folder


class AudioSettings(Section):
    sample_rate: int = Field(16000, ge=1000, le=192000)
    training_chunk_seconds: float = Field(1.0, gt=0, le=60)
    stft_window_size: int = Field(512, ge=16)
    hop_size: int = Field(128, ge=1)
    mel_frequency_bins: int = Field(64, ge=8, le=512)
    min_frequency: float = Field(0.0, ge=0)
    max_frequency: float | None = Field(None, gt=0)
    spectrogram_normalization: Literal["no", "image"] = "image"

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


class ArchitectureSettings(Section):
    backbone: str = "resnet10t"
    pretrained: bool = False
    pool: Literal["average", "max", "gem", "cat_average_max", "mean_average_max"] = "average"
    dropout: float = Field(0.0, ge=0, lt=1)


class TrainingBase(Section):
    optimizer: Literal["SGD", "Adam", "AdamW", "RMSprop", "Adadelta"] = "AdamW"
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(10, ge=1)
    schedule: Literal["constant", "cosine", "linear", "step"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    gradient_clip: float = Field(0.0, ge=0)
    drop_last_batch: bool = True


class PredictionBase(Section):
    batch_size_inference: int = Field(0, ge=0)
    inference_chunk_seconds: float | None = Field(None, gt=0, le=600)


class EnvironmentSettings(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision_training: bool = False
    mixed_precision_inference: bool = False
    number_of_workers: int = Field(0, ge=0, le=64)
    seed: int = Field(42, ge=-1)


class ExperimentBase(Section):
    experiment_name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=63)
    dataset: DatasetSettings
    audio: AudioSettings = AudioSettings()
    architecture: ArchitectureSettings = ArchitectureSettings()
    environment: EnvironmentSettings = EnvironmentSettings()

    @property
    def inference_chunk_samples(self) -> int:
        seconds = self.prediction.inference_chunk_seconds or self.audio.training_chunk_seconds  # type: ignore[attr-defined]
        return round(seconds * self.audio.sample_rate)

    @property
    def inference_batch_size(self) -> int:
        return self.prediction.batch_size_inference or self.training.batch_size  # type: ignore[attr-defined]
