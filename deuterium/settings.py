"""The sections of params.yaml that every problem type shares (pydantic, unknown keys rejected).

Names follow H2O Hydrogen Torch's experiment settings, in snake_case. A problem type
subclasses `ExperimentBase` with its own `problem_type` literal and the sections
whose allowed values differ (loss, metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSettings(Section):
    train_dataframe: Path | None  # null: no training, score test_dataframe with previous_experiment's models
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
    data_sample_choice: list[Literal["train", "validation"]] = Field(
        default_factory=lambda: ["train", "validation"], min_length=1
    )

    @model_validator(mode="after")
    def _strategy_needs(self) -> DatasetSettings:
        if self.train_dataframe is None:
            if self.test_dataframe is None:
                raise ValueError("dataset.train_dataframe null (inference only) needs dataset.test_dataframe")
            if self.unlabeled_dataframe is not None:
                raise ValueError(
                    "dataset.unlabeled_dataframe needs a train_dataframe to train a second round on"
                )
        if len(set(self.data_sample_choice)) != len(self.data_sample_choice):
            raise ValueError("dataset.data_sample_choice repeats a choice")
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
    audio_parameters: Literal["auto", "manual"] = "manual"  # auto: see deuterium/audio_params.py
    audio_channels: int = Field(1, ge=1, le=32)
    sample_rate: int = Field(16000, ge=1000, le=192000)
    training_chunk_seconds: float = Field(1.0, gt=0, le=60)
    stft_window_size: int = Field(512, ge=16)
    hop_size: int = Field(128, ge=1)
    mel_frequency_bins: int = Field(64, ge=8, le=512)
    min_frequency: float = Field(0.0, ge=0)
    max_frequency: float | None = Field(None, gt=0)
    spectrogram_normalization: Literal["no", "image"] = "image"

    @field_validator("spectrogram_normalization", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @model_validator(mode="after")
    def _frequencies(self) -> AudioSettings:
        manual = sorted(self.model_fields_set - {"audio_parameters", "audio_channels"})
        if self.audio_parameters == "auto" and manual:
            raise ValueError(
                f"audio.audio_parameters 'auto' chooses {', '.join(manual)} from the training files; "
                "remove them or set audio_parameters: manual"
            )
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
    differential_learning_rate_layers: list[str] = Field(default_factory=list)
    differential_learning_rate: float = Field(1e-5, ge=0)
    automatically_adjust_batch_size: bool = True
    grad_accumulation: int = Field(1, ge=1, le=1024)
    save_best_checkpoint: bool = False
    evaluation_epochs: float = Field(1.0, gt=0)
    evaluate_before_training: bool = False
    calculate_train_metric: bool = False
    train_validation_data: bool = False

    @model_validator(mode="after")
    def _training_needs(self) -> TrainingBase:
        if len(set(self.differential_learning_rate_layers)) != len(self.differential_learning_rate_layers):
            raise ValueError("training.differential_learning_rate_layers repeats a layer")
        if self.save_best_checkpoint and self.train_validation_data:
            raise ValueError(
                "training.save_best_checkpoint picks an epoch by the validation metric, which "
                "training.train_validation_data makes meaningless (the validation rows are trained on); "
                "turn one of them off"
            )
        return self


class PredictionBase(Section):
    batch_size_inference: int = Field(0, ge=0)
    inference_chunk_method: Literal["fix", "varying"] = "fix"
    inference_chunk_seconds: float | None = Field(None, gt=0, le=600)  # fix: chunk length
    max_inference_chunk_seconds: float = Field(600.0, gt=0, le=600)  # varying: longest piece

    @model_validator(mode="after")
    def _chunk_method(self) -> PredictionBase:
        if self.inference_chunk_method == "varying" and self.inference_chunk_seconds is not None:
            raise ValueError(
                "prediction.inference_chunk_seconds is for inference_chunk_method 'fix'; "
                "'varying' takes max_inference_chunk_seconds"
            )
        return self


class AugmentationSettings(Section):
    """Mixing whole training clips within a batch (deuterium/augment.py)."""

    mix_audio: Literal["disabled", "mixup"] = "disabled"
    mix_target: Literal["ratio", "min", "max"] = "ratio"
    mix_concentration: float = Field(1.0, gt=0, le=100)  # Beta(c, c) draws the mixing weight
    mix_probability: float = Field(1.0, ge=0, le=1)  # of mixing a batch
    mix_iterations: int = Field(1, ge=1, le=16)  # mixes applied to the same batch, one after another


class EnvironmentSettings(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision_training: bool = False
    mixed_precision_inference: bool = False
    number_of_workers: int = Field(0, ge=0, le=64)
    seed: int = Field(42, ge=-1)
    number_of_seeds: int = Field(1, ge=1, le=100)
    number_of_gpus: int = Field(1, ge=1, le=64)
    sync_batch_normalization: bool = False


class LoggingSettings(Section):
    log_grad_norm: bool = False
    number_of_audios_to_show: int = Field(10, ge=0, le=1000)


class ExportSettings(Section):
    """The deployed ONNX graph. The spectrogram front end always stays float32 (power spectra overflow float16)."""

    onnx_device: Literal["cpu", "gpu"] = "cpu"  # gpu: float16 weights and activations, float32 in and out
    # cpu only. dynamic: weights INT8, activations quantized per batch (no data needed; ConvInteger is slow);
    # static: activations calibrated on training clips (QDQ), the fast INT8 path for convolutions.
    int8_quantization: Literal[False, "dynamic", "static"] = False

    @model_validator(mode="after")
    def _int8_on_cpu(self) -> ExportSettings:
        if self.int8_quantization and self.onnx_device != "cpu":
            raise ValueError(
                "export.int8_quantization needs export.onnx_device 'cpu': its INT8 kernels run on the CPU"
            )
        return self


class ExperimentBase(Section):
    experiment_name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=63)
    dataset: DatasetSettings
    audio: AudioSettings = AudioSettings()
    architecture: ArchitectureSettings = ArchitectureSettings()
    environment: EnvironmentSettings = EnvironmentSettings()
    logging: LoggingSettings = LoggingSettings()
    augmentation: AugmentationSettings = AugmentationSettings()
    previous_experiment: Path | None = None  # a trained model folder; see deuterium/previous.py
    use_previous_experiment_weights: bool = False

    @model_validator(mode="after")
    def _previous_needs(self) -> ExperimentBase:
        if self.previous_experiment is None:
            if self.use_previous_experiment_weights:
                raise ValueError(
                    "use_previous_experiment_weights needs previous_experiment (a trained model folder)"
                )
            if self.dataset.train_dataframe is None:
                raise ValueError(
                    "dataset.train_dataframe null (inference only) needs previous_experiment: "
                    "the folder of the models to score with"
                )
        return self

    export: ExportSettings = ExportSettings()

    @property
    def inference_chunk_samples(self) -> int:
        """fix: the length of every chunk; varying: the longest piece a clip is cut into."""
        pred = self.prediction  # type: ignore[attr-defined]
        if pred.inference_chunk_method == "varying":
            return round(pred.max_inference_chunk_seconds * self.audio.sample_rate)
        seconds = pred.inference_chunk_seconds or self.audio.training_chunk_seconds
        return round(seconds * self.audio.sample_rate)

    @property
    def inference_batch_size(self) -> int:
        return self.prediction.batch_size_inference or self.training.batch_size  # type: ignore[attr-defined]
