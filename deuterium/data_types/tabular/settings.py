"""The `tabular` section of params.yaml: H2O-3 Deep Learning's parameters, under H2O-3's names.

The response column is `dataset.label_columns` (one column); cross-validation (H2O's nfolds, fold_column,
keep_cross_validation_predictions) is the shared `dataset` section's number_of_folds, fold_column and
selected_folds: all (the out-of-fold predictions are kept in artifacts/train/oof.parquet); H2O's
fold_assignment is here, and the split stage deals the folds by it. The shared
`training` section is not read by the tabular trainer: every training knob is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from deuterium.settings import LoggingBase, MixSettings, Section

Activation = Literal[
    "tanh", "tanh_with_dropout", "rectifier", "rectifier_with_dropout", "maxout", "maxout_with_dropout"
]
Distribution = Literal[
    "auto",
    "bernoulli",
    "multinomial",
    "gaussian",
    "poisson",
    "gamma",
    "tweedie",
    "laplace",
    "quantile",
    "huber",
]
StoppingMetric = Literal[
    "auto",
    "deviance",
    "logloss",
    "MSE",
    "RMSE",
    "MAE",
    "RMSLE",
    "AUC",
    "AUCPR",
    "misclassification",
    "mean_per_class_error",
]

# what shapes the network and its optimizer: a run continues another's checkpoint (PBT's exploit) only when
# these are the same, so a population-based search may not vary them
ARCHITECTURE = (
    "hidden",
    "activation",
    "columns",
    "categorical_encoding",
    "standardize",
    "distribution",
    "adaptive_rate",
)


class TabularSettings(Section):
    # columns
    ignored_columns: list[str] = Field(default_factory=list)
    ignore_const_cols: bool = True
    weights_column: str | None = None
    offset_column: str | None = None  # regression: added to the linear predictor (before the link)
    # cross-validation: how dataset.number_of_folds folds are dealt (auto: random, as H2O-3's AUTO)
    fold_assignment: Literal["auto", "random", "modulo", "stratified"] = "auto"
    # network
    activation: Activation = "rectifier"
    hidden: list[int] = Field(default_factory=lambda: [200, 200], min_length=1)
    epochs: float = Field(10.0, gt=0)
    mini_batch_size: int = Field(32, ge=1)  # H2O-3's is 1 (Hogwild); per-row steps are slow in torch
    # (ADADELTA's epsilon is scaled by it: see trainer.adadelta_epsilon)
    input_dropout_ratio: float = Field(0.0, ge=0, lt=1)
    hidden_dropout_ratios: list[float] | None = None  # *_with_dropout only; default 0.5 per layer
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    max_w2: float = Field(3.4028235e38, gt=0)
    # optimisation
    adaptive_rate: bool = True
    rho: float = Field(0.99, ge=0, lt=1)
    epsilon: float = Field(1e-8, gt=0)
    rate: float = Field(0.005, gt=0)
    rate_annealing: float = Field(1e-6, ge=0)
    rate_decay: float = Field(1.0, gt=0)
    momentum_start: float = Field(0.0, ge=0, lt=1)
    momentum_ramp: float = Field(1e6, gt=0)
    momentum_stable: float = Field(0.0, ge=0, lt=1)
    nesterov_accelerated_gradient: bool = True
    initial_weight_distribution: Literal["uniform_adaptive", "uniform", "normal"] = "uniform_adaptive"
    initial_weight_scale: float = Field(1.0, gt=0)
    # loss and distribution
    loss: Literal["automatic", "cross_entropy", "quadratic", "huber", "absolute", "quantile"] = "automatic"
    distribution: Distribution = "auto"
    quantile_alpha: float = Field(0.5, gt=0, lt=1)
    tweedie_power: float = Field(1.5, gt=1, lt=2)
    huber_alpha: float = Field(0.9, gt=0, le=1)
    # preprocessing (inside the ONNX graph, except the string -> level lookup)
    standardize: bool = True
    categorical_encoding: Literal["auto", "one_hot_internal", "binary", "eigen", "label_encoder"] = "auto"
    max_categorical_features: int = Field(2**31 - 1, ge=1)
    missing_values_handling: Literal["mean_imputation", "skip"] = "mean_imputation"
    # class balance
    balance_classes: bool = False
    class_sampling_factors: list[float] | None = None
    max_after_balance_size: float = Field(5.0, gt=0)
    # scoring and stopping
    stopping_rounds: int = Field(5, ge=0)
    stopping_metric: StoppingMetric = "auto"
    stopping_tolerance: float = Field(0.0, ge=0)
    max_runtime_secs: float = Field(0.0, ge=0)
    score_each_iteration: bool = False  # score every 1/10 epoch instead of every epoch
    overwrite_with_best_model: bool = True
    classification_stop: float = Field(0.0, ge=-1)
    regression_stop: float = Field(1e-6, ge=-1)
    # models from other runs (model folders: model.safetensors + config.yaml)
    checkpoint: Path | None = None
    pretrained_autoencoder: Path | None = None
    # outputs
    variable_importances: bool = True
    export_weights_and_biases: bool = False
    reproducible: bool = (
        False  # accepted for H2O-3's configs; training is always one thread, so a seed repeats
    )
    seed: int | None = None  # None: environment.seed
    max_hit_ratio_k: int = Field(0, ge=0)
    # what the split stage fits on the training frame (columns, means, levels); not set by hand
    columns: list[dict] | None = None
    response_scale: list[float] | None = None  # regression: the response's training mean and sd

    @model_validator(mode="after")
    def _tabular_needs(self) -> TabularSettings:
        dropout = self.activation.endswith("_with_dropout")
        if self.hidden_dropout_ratios is not None:
            if not dropout:
                raise ValueError("tabular.hidden_dropout_ratios needs an activation *_with_dropout")
            if len(self.hidden_dropout_ratios) != len(self.hidden):
                raise ValueError(
                    f"tabular.hidden_dropout_ratios has {len(self.hidden_dropout_ratios)} values, "
                    f"tabular.hidden {len(self.hidden)} layers"
                )
            if not all(0 <= r < 1 for r in self.hidden_dropout_ratios):
                raise ValueError("tabular.hidden_dropout_ratios: each in [0, 1)")
        if any(h < 1 for h in self.hidden):
            raise ValueError("tabular.hidden: every layer needs at least one unit")
        if self.class_sampling_factors is not None and not self.balance_classes:
            raise ValueError("tabular.class_sampling_factors needs balance_classes: true")
        if self.adaptive_rate and (self.momentum_start or self.momentum_stable):
            raise ValueError("tabular.momentum_* are for adaptive_rate: false (ADADELTA has no momentum)")
        return self

    @property
    def dropout_ratios(self) -> list[float]:
        if not self.activation.endswith("_with_dropout"):
            return [0.0] * len(self.hidden)
        return list(self.hidden_dropout_ratios or [0.5] * len(self.hidden))


class TabularAugmentation(MixSettings):
    """No augmentation: H2O-3 Deep Learning has none (the shared mix keys are accepted and unused)."""


class TabularLogging(LoggingBase):
    pass


def fold_assignment_fits(exp) -> None:
    """H2O-3's rules: fold_assignment or fold_column, not both; stratified needs a categorical response."""
    chosen, ds = exp.tabular.fold_assignment, exp.dataset
    if chosen == "auto":
        return
    if ds.fold_column:
        raise ValueError(
            f"tabular.fold_assignment {chosen!r} and dataset.fold_column {ds.fold_column!r}: give one of them "
            "(the fold column already assigns the folds; leave fold_assignment auto)"
        )
    if ds.validation_strategy != "k_fold":
        raise ValueError(
            f"tabular.fold_assignment {chosen!r} needs dataset.validation_strategy k_fold "
            f"(it is {ds.validation_strategy!r})"
        )
    if chosen == "stratified" and not exp.problem_type.endswith("_classification"):
        raise ValueError(
            f"tabular.fold_assignment 'stratified' needs a categorical response (tabular_classification); "
            f"this is {exp.problem_type}: use random or modulo"
        )


DATASET_FIELDS: dict[str, tuple] = {}
