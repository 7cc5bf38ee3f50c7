"""Typed experiment configs: a use case is one `Spec`, and `--set key=value` edits a copy of it.

A key is a dotted path (`train.epochs`, `model.dropout`) or, where unambiguous, just its
last part (`epochs`). Builder parameters live under `model.` next to `model.builder`.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any

from pipelines.core.domains import OneOf, Range
from pipelines.core.errors import UsageError

AtLeastOne = Annotated[int, Range(min=1)]
NonNegative = Annotated[int, Range(min=0)]
Positive = Annotated[float, Range(min=0, min_open=True)]
Fraction = Annotated[float, Range(0, 1, max_open=True)]  # a share of the data, or a dropout rate

# Fields a user cannot override: they define the use case itself.
_FIXED = {"fixed": True}


@dataclass(frozen=True)
class DataConfig:
    loader: str = field(metadata=_FIXED)  # name in pipelines.data.loaders.LOADERS
    source: Annotated[str, OneOf(("full", "sample"))] = "full"  # the whole data set, or the sample in data/samples/
    data_dir: str | None = None  # a local folder holding the data set; skips the download
    val_fraction: Fraction = 0.1  # carved from train, stratified, when the data set has no val split; 0: none
    train_limit: NonNegative = 0  # keep at most this many training examples (0: all); for quick runs
    # Square images of this side, decoded and resized by the loader (skin: the HAM10000 JPEGs, or
    # MedMNIST+'s dermamnist_<size>.npz); the image task derives `input_shape` from it. 0: the
    # spec's own input_shape. Only loaders that resize read it (`pipelines.data.loaders.LOADER_KEYS`).
    image_size: Annotated[int, Range(0, 1024)] = 0
    # How a photo meets that size (`pipelines.data.images`): stretched (resize), letterboxed on
    # black (pad) or centre-cropped (crop). Read by loaders that decode files (image_folder); it
    # travels with the exported model, so `predict` decodes a photo file the same way.
    image_fit: Annotated[str, OneOf(("resize", "pad", "crop"))] = "resize"
    options: dict = field(default_factory=dict, metadata=_FIXED)  # loader-specific, e.g. target
    # Photos of each object stacked as channels, RGB after RGB: 3 reads CUCUMBER-9 prototype 2
    # (three views of each cucumber) and serves (32, 32, 9) (`pipelines.tasks.image_classification.stacked_views`).
    views: AtLeastOne = 1


@dataclass(frozen=True)
class ModelConfig:
    builder: str  # name in pipelines.modeling.builders.BUILDERS
    params: dict = field(default_factory=dict)  # the builder's keyword arguments
    augmentation: tuple = ()  # names in pipelines.data.augmentation.AUGMENTATIONS, training model only
    # Serving model only: average over every combination of these fixed transforms
    # (pipelines.modeling.test_time_augmentation.TRANSFORMS); n transforms cost 2**n network passes.
    test_time_augmentation: tuple = ()


@dataclass(frozen=True)
class TrainConfig:
    epochs: AtLeastOne = 10
    batch_size: AtLeastOne = 128  # per replica; the global batch is this times the replica count
    learning_rate: Positive = 1e-3
    weight_decay: Annotated[float, Range(min=0)] = 0.0
    schedule: Annotated[str, OneOf(("cosine", "constant"))] = "cosine"  # cosine: decay to 1% over the run
    warmup_epochs: NonNegative = 0  # fewer than `epochs`
    early_stopping_patience: NonNegative = 0  # 0: off; else stop when the primary metric stalls
    # Loss weight of class c is (N / (K * count_c)) ** class_weights: 0 off, 1 fully "balanced",
    # between the two a softer balance that costs less plain accuracy.
    class_weights: Annotated[float, Range(0, 1)] = 0.0
    seed: Annotated[int, Range(0, 2**32 - 1)] = 42
    deterministic: bool = True  # deterministic TF ops: same seed, machine and data give same metrics
    # auto: bf16/fp16 on GPUs, bf16 on CPUs with AMX-BF16, else float32.
    precision: Annotated[str, OneOf(("auto", "float32", "mixed_bfloat16", "mixed_float16"))] = "auto"
    # Transfer learning, phase 2: unfreeze the top of the pretrained backbone at a lower rate.
    fine_tune_epochs: NonNegative = 0  # 0: the backbone stays frozen; else the builder needs a backbone
    fine_tune_layers: NonNegative = 20  # how many of the backbone's top layers to unfreeze (0: all); BatchNorm stays frozen
    fine_tune_learning_rate: Positive = 1e-4


@dataclass(frozen=True)
class ExportConfig:
    enabled: bool = True  # `train` exports a SavedModel when it ends
    register: bool = True  # register the model in the MLflow model registry
    tolerance: Positive = 1e-5  # exported vs in-memory predictions, max abs difference
    # Device and cross-stack files `train` writes beside the SavedModel, each verified by its own
    # runtime (pipelines.export.edge): litert (int8 + float16), onnx. Image use cases only.
    formats: Annotated[tuple, OneOf(("litert", "onnx"))] = ()


@dataclass(frozen=True)
class TabularConfig:
    """Settings of small-table use cases (`pipelines.tasks.tabular_classification`): which column
    is predicted, how the others are read, which rows train and how models are validated.

    Column kinds are inferred from the data (`pipelines.data.table_schema`); `numeric` and
    `categorical` name columns whose kind is set by hand instead (an integer code that is a
    category, a number column that looks like a category). Every other column not named as
    target, group or id is inferred."""

    target: str = field(default="", metadata=_FIXED)  # the column predicted (the csv loader needs it)
    positive_class: str = field(default="", metadata=_FIXED)  # binary targets: the class column 1 means
    numeric: tuple = field(default=(), metadata=_FIXED)  # columns read as numbers, whatever they look like
    categorical: tuple = field(default=(), metadata=_FIXED)  # columns read as categories
    drop: tuple = field(default=(), metadata=_FIXED)  # columns never read (ids, free text, leaks)
    # A column naming each row's group or site: rows of one group never straddle CV folds, and
    # groups outside `train_groups` are external validation (heart: the four hospitals).
    group: str = field(default="", metadata=_FIXED)
    train_groups: tuple = ()  # the groups the exported model is trained on; empty: every group
    external_validation: bool = True  # test on the other groups; leave-one-group-out when there are few


@dataclass(frozen=True)
class ValidationConfig:
    """How a model is judged, for every task (`pipelines.training.cross_validation`): on the held-out test
    split (`cv_folds=0`, image use cases), or by repeated stratified k-fold cross-validation over
    all the data, after which the exported model is trained on all of it (the tabular task always)."""

    cv_folds: NonNegative = 0  # 0: the held-out test split; else k >= 2 folds
    cv_repeats: AtLeastOne = 1  # how many times the k folds are drawn (reshuffled); cv_folds x cv_repeats fits


@dataclass(frozen=True)
class ChecksConfig:
    """The data checks every run makes before training (`pipelines.data.checks`): duplicates
    within and across the splits, inputs with two labels, class counts per split."""

    # Drop the training (and validation) examples that copy a held-out (test) example, exactly or
    # nearly; cross-validated: keep one example of each group of copies in the pool of folds.
    drop_test_duplicates: bool = False
    # Images: two are near copies when their 64-bit pHashes differ in at most this many bits ...
    near_duplicate_distance: Annotated[int, Range(0, 8)] = 4
    # ... and their 32x32 grey thumbnails by at most this many grey levels (0-255), root mean
    # square: pHash alone calls thousands of different MNIST digits copies (docs/data-checks.md).
    near_duplicate_difference: Annotated[float, Range(0, 255)] = 4.0


@dataclass(frozen=True)
class Spec:
    name: str = field(metadata=_FIXED)
    title: str = field(metadata=_FIXED)
    task: str = field(metadata=_FIXED)  # "image_classification" or "tabular_classification"
    input_shape: tuple = field(metadata=_FIXED)  # raw input as served: (H, W) grey or (H, W, 3)
    class_names: tuple = field(metadata=_FIXED)
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    validation: ValidationConfig = ValidationConfig()
    export: ExportConfig = ExportConfig()
    checks: ChecksConfig = ChecksConfig()
    tabular: TabularConfig | None = field(default=None, metadata={"section": True})  # tabular use cases only
    # The decision rule `predict` and `serve` answer with (pipelines.evaluation.operating_points.POINTS):
    # argmax of the probabilities, or the logit-adjusted rule tuned for balanced accuracy.
    # Both are measured on every image run and both travel with the exported model.
    operating_point: Annotated[str, OneOf(("accuracy", "balanced"))] = "accuracy"
    priority_classes: tuple = field(default=(), metadata=_FIXED)  # reported first, recall logged per point
    primary_metric: str = field(default="val_accuracy", metadata=_FIXED)  # what early stopping watches
    # The MLflow metric that ranks finished runs (`compare`) and gates the registry alias
    # `champion`; higher is better. Only runs on the same data (sha256) are ranked together.
    ranking_metric: str = field(default="test_accuracy", metadata=_FIXED)
    description: str = field(default="", metadata=_FIXED)
    intended_use: str = field(default="", metadata=_FIXED)  # goes into the model card
    limitations: str = field(default="", metadata=_FIXED)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_value(text: str, current: Any, key: str) -> Any:
    """Parse `text` to the type of the current value (bool, int, float, str, tuple, or None)."""
    lowered = text.strip().lower()
    try:
        if isinstance(current, bool):
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if lowered in ("none", "null", ""):
            if current is None or isinstance(current, str):
                return None
            if isinstance(current, tuple):
                return ()
            raise ValueError
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, tuple):
            if text.strip().startswith(("(", "[")):
                items = ast.literal_eval(text)
            else:
                items = [item.strip() for item in text.split(",") if item.strip()]
            # An empty default (augmentation, views) lists names: text, whatever it looks like.
            element = current[0] if current else ""
            return tuple(parse_value(str(i), element, key) for i in items)
        return text
    except (ValueError, SyntaxError):
        kind = type(current).__name__ if current is not None else "text"
        raise UsageError(f"--set {key}={text}: expected {'an' if kind[0] in 'aeiou' else 'a'} {kind} value") from None


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
