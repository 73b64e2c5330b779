"""The sections of params.yaml that every problem type shares (pydantic, unknown keys rejected).

Names follow H2O Hydrogen Torch's experiment settings, in snake_case. A problem type's settings model is
`ExperimentBase` put together by deuterium.problems from its data type (its own section, named after it,
and its dataset, prediction, augmentation and logging keys) and its task (the loss and metric choices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSettings(Section):
    train_dataframe: Path | None  # null: no training, score test_dataframe with previous_experiment's models
    data_folder: Path
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


class ArchitectureSettings(Section):
    backbone: str = "resnet10t"
    pretrained: bool = False
    pool: Literal["average", "max", "gem", "cat_average_max", "mean_average_max"] = "average"
    dropout: float = Field(0.0, ge=0, lt=1)


class TrainingBase(Section):
    """The training loop's settings (DeepQ's and Piximi's tuning options; HT's names)."""

    optimizer: Literal["SGD", "Adam", "AdamW", "RMSprop", "Adadelta", "Adagrad"] = "AdamW"
    learning_rate: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD and RMSprop
    nesterov: bool = True  # SGD
    batch_size: int = Field(32, ge=1)
    # auto: enough epochs for about epochs_auto_steps optimizer steps, within [epochs_auto_min,
    # epochs_auto_max] (a small dataset gets more epochs); the number is logged and written to the
    # resolved config next to each model (deuterium/training.py, training_length)
    epochs: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    epochs_auto_steps: int = Field(1500, ge=1)
    epochs_auto_min: int = Field(3, ge=1)
    epochs_auto_max: int = Field(100, ge=1)
    schedule: Literal["constant", "cosine", "linear", "step"] = "cosine"
    step_size_epochs: float = Field(0.0, ge=0)  # step: decay every this many epochs (0: at 1/3 and 2/3)
    step_decay: float = Field(0.1, gt=0, le=1)  # step: the factor of each decay
    warmup_epochs: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)  # never on biases and normalization layers (timm's groups)
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
    early_stopping_patience: int = Field(0, ge=0)  # validations without improvement before stopping (0: off)
    early_stopping_min_delta: float = Field(0.0, ge=0)  # what counts as an improvement of the metric
    # an exponential moving average of the weights (timm's ModelEmaV3) is validated, kept and exported
    # instead of the last weights; its decay ramps up from 0 (1 - (1 + step)^(-2/3)) to at most this. 0: off
    ema_decay: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _training_needs(self) -> TrainingBase:
        if len(set(self.differential_learning_rate_layers)) != len(self.differential_learning_rate_layers):
            raise ValueError("training.differential_learning_rate_layers repeats a layer")
        if self.train_validation_data and (self.save_best_checkpoint or self.early_stopping_patience):
            raise ValueError(
                "training.save_best_checkpoint and early_stopping_patience judge by the validation metric, "
                "which training.train_validation_data makes meaningless (the validation rows are trained "
                "on); turn one of them off"
            )
        if self.step_size_epochs and self.schedule != "step":
            raise ValueError("training.step_size_epochs is for schedule 'step'")
        if self.epochs_auto_min > self.epochs_auto_max:
            raise ValueError(
                f"training.epochs_auto_min {self.epochs_auto_min} is above epochs_auto_max {self.epochs_auto_max}"
            )
        return self


class PredictionBase(Section):
    batch_size_inference: int = Field(0, ge=0)


class MixSettings(Section):
    """Mixing whole training samples within a batch (deuterium/augment.py); a data type names the switch
    (`mix_audio`, `mix_image`) and adds its own augmentations."""

    mix_target: Literal["ratio", "min", "max"] = "ratio"
    mix_concentration: float = Field(1.0, gt=0, le=100)  # Beta(c, c) draws the mixing weight
    mix_probability: float = Field(1.0, ge=0, le=1)  # of mixing a batch
    mix_iterations: int = Field(1, ge=1, le=16)  # mixes applied to the same batch, one after another

    @property
    def mixup(self) -> bool:
        return any(getattr(self, k) == "mixup" for k in type(self).model_fields if k.startswith("mix_"))


class EnvironmentSettings(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision_training: bool = False
    mixed_precision_inference: bool = False
    number_of_workers: int = Field(0, ge=0, le=64)
    seed: int = Field(42, ge=-1)
    number_of_seeds: int = Field(1, ge=1, le=100)
    number_of_gpus: int = Field(1, ge=1, le=64)
    sync_batch_normalization: bool = False
    # decoded training and validation inputs kept in memory for the run (deuterium/data_types/decoded.py); 0: off
    decode_cache_megabytes: float = Field(4096, ge=0)
    # folds (and seeds) trained at once on the CPU, each in its own process with a share of the threads
    # (H2O-3's parallelize_cross_validation); auto: all of them, up to twice the threads (deuterium/fitting.py)
    parallel_folds: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"


class LoggingBase(Section):
    log_grad_norm: bool = False

    @property
    def samples_to_show(self) -> int:
        """The data type's `number_of_<noun>s_to_show`: worst validation samples logged as images."""
        return next((getattr(self, k) for k in type(self).model_fields if k.endswith("_to_show")), 0)


class ExportSettings(Section):
    """The deployed ONNX graph. The data type's front end always stays float32 (power spectra overflow float16)."""

    onnx_device: Literal["cpu", "gpu"] = "cpu"  # gpu: float16 weights and activations, float32 in and out
    # cpu only. dynamic: weights INT8, activations quantized per batch (no data needed; ConvInteger is slow);
    # static: activations calibrated on training rows (QDQ), the fast INT8 path for convolutions.
    int8_quantization: Literal[False, "dynamic", "static"] = False

    @model_validator(mode="after")
    def _int8_on_cpu(self) -> ExportSettings:
        if self.int8_quantization and self.onnx_device != "cpu":
            raise ValueError(
                "export.int8_quantization needs export.onnx_device 'cpu': its INT8 kernels run on the CPU"
            )
        return self


class PrepareSettings(BaseModel):
    """The `prepare` section of params.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recipe: Literal["none", "mnist_idx", "mnist_idx_columns", "ecg_discord"] = "none"
    source: Path | None = None  # the folder with the recipe's original files
    max_rows: int | None = Field(None, ge=1)  # per split, for quick runs; None: all

    @model_validator(mode="after")
    def _source_matches_recipe(self) -> PrepareSettings:
        if self.recipe == "none" and self.source is not None:
            raise ValueError(
                "prepare.source: recipe none reads nothing; remove prepare.source or set a recipe"
            )
        if self.recipe != "none" and self.source is None:
            raise ValueError(
                f"prepare.source: required with recipe {self.recipe} (the folder with its files)"
            )
        return self


class ExperimentBase(Section):
    """What every problem type has. deuterium.problems adds `problem_type`, the data type's section and
    the task's and data type's versions of dataset, training, prediction, augmentation and logging."""

    experiment_name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=63)
    dataset: DatasetSettings
    architecture: ArchitectureSettings = ArchitectureSettings()
    environment: EnvironmentSettings = EnvironmentSettings()
    previous_experiment: Path | None = None  # a trained model folder; see deuterium/previous.py
    use_previous_experiment_weights: bool = False
    export: ExportSettings = ExportSettings()
    prepare: PrepareSettings = PrepareSettings()  # read by the prepare stage alone

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

    data_section: ClassVar[str] = ""  # the name of the data type's section, set by deuterium.problems
    data_checks: ClassVar[tuple] = ()  # the data type's checks across sections, set by deuterium.problems

    @model_validator(mode="after")
    def _data_type_needs(self) -> ExperimentBase:
        for check in self.data_checks:
            check(self)
        return self

    @property
    def inference_batch_size(self) -> int:
        return self.prediction.batch_size_inference or self.training.batch_size  # type: ignore[attr-defined]
