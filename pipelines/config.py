"""Typed experiment configs: a use case is one `Spec`, and `--set key=value` edits a copy of it.

A key is a dotted path (`train.epochs`, `model.dropout`) or, where unambiguous, just its
last part (`epochs`). Builder parameters live under `model.` next to `model.builder`.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import UsageError

# Fields a user cannot override: they define the use case itself.
_FIXED = {"fixed": True}


@dataclass(frozen=True)
class DataConfig:
    loader: str = field(metadata=_FIXED)  # name in pipelines.loaders.LOADERS
    source: str = "full"  # "full" (the whole data set) or "sample" (bundled in data/samples/)
    data_dir: str | None = None  # a local folder holding the data set; skips the download
    val_fraction: float = 0.1  # carved from train, stratified, when the data set has no val split; 0: none
    train_limit: int = 0  # keep at most this many training examples (0: all); for quick runs
    options: dict = field(default_factory=dict, metadata=_FIXED)  # loader-specific, e.g. target


@dataclass(frozen=True)
class ModelConfig:
    builder: str  # name in pipelines.builders.BUILDERS
    params: dict = field(default_factory=dict)  # the builder's keyword arguments
    augmentation: tuple = ()  # names in pipelines.augmentation.AUGMENTATIONS, training model only
    # Serving model only: average over every combination of these fixed transforms
    # (pipelines.test_time_augmentation.TRANSFORMS); n transforms cost 2**n network passes.
    test_time_augmentation: tuple = ()


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # per replica; the global batch is this times the replica count
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (decay to 1% over the run) or "constant"
    warmup_epochs: int = 0
    early_stopping_patience: int = 0  # 0: off; else stop when the primary metric stalls
    # Loss weight of class c is (N / (K * count_c)) ** class_weights: 0 off, 1 fully "balanced",
    # between the two a softer balance that costs less plain accuracy.
    class_weights: float = 0.0
    seed: int = 42
    deterministic: bool = True  # deterministic TF ops: same seed, machine and data give same metrics
    precision: str = "auto"  # "auto" (bf16/fp16 on GPUs, bf16 on CPUs with AMX-BF16, else float32), or a Keras policy
    # Transfer learning, phase 2: unfreeze the top of the pretrained backbone at a lower rate.
    fine_tune_epochs: int = 0  # 0: the backbone stays frozen
    fine_tune_layers: int = 20  # how many of the backbone's top layers to unfreeze (0: all); BatchNorm stays frozen
    fine_tune_learning_rate: float = 1e-4


@dataclass(frozen=True)
class ExportConfig:
    enabled: bool = True  # `train` exports a SavedModel when it ends
    register: bool = True  # register the model in the MLflow model registry
    tolerance: float = 1e-5  # exported vs in-memory predictions, max abs difference


@dataclass(frozen=True)
class TabularConfig:
    """Settings of tabular use cases: column roles, target and how models are validated."""

    numeric: tuple = field(default=(), metadata=_FIXED)
    categorical: tuple = field(default=(), metadata=_FIXED)
    target: str = "binary"  # heart: "binary" (num > 0) or "severity" (num 0-4)
    train_sites: tuple = ("cleveland",)  # what the exported model is trained on
    cv_folds: int = 5  # repeated stratified k-fold on the training sites
    cv_repeats: int = 5
    external_validation: bool = True  # test on the other sites; leave-one-site-out on all


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
    export: ExportConfig = ExportConfig()
    tabular: TabularConfig | None = field(default=None, metadata={"section": True})  # tabular use cases only
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


def flatten(spec: Spec) -> dict[str, Any]:
    """All settable keys with their current values: `train.epochs`, `model.builder`, `model.<param>`."""
    flat: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            if f.metadata.get("fixed"):
                continue
            value = getattr(obj, f.name)
            if value is None and f.metadata.get("section"):
                continue  # an optional section this use case does not have
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            elif isinstance(obj, ModelConfig) and f.name == "params":
                for name, param in value.items():
                    flat[f"{prefix}{name}"] = param
            else:
                flat[key] = value

    walk(spec, "")
    return flat


def resolve_key(spec: Spec, key: str) -> str:
    """`epochs` -> `train.epochs`; raises UsageError listing valid keys when unknown or ambiguous."""
    keys = flatten(spec)
    if key in keys:
        return key
    matches = [k for k in keys if k.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"--set key '{key}' is ambiguous for {spec.name}: use one of {', '.join(matches)}")
    raise UsageError(f"unknown --set key '{key}' for {spec.name}; valid keys: {', '.join(sorted(keys))}")


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
            element = current[0] if current else None
            return tuple(parse_value(str(i), element, key) if element is not None else i for i in items)
        return text
    except (ValueError, SyntaxError):
        kind = type(current).__name__ if current is not None else "text"
        raise UsageError(f"--set {key}={text}: expected a {kind} value") from None


def apply_overrides(spec: Spec, overrides: list[str] | dict[str, Any]) -> Spec:
    """Return a copy of `spec` with `key=value` overrides applied (strings parsed to the field's type)."""
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    current = flatten(spec)
    for key, raw in items:
        path = resolve_key(spec, key)
        value = parse_value(raw, current[path], path) if isinstance(raw, str) else raw
        spec = _replace_path(spec, path, value)
        if path == "model.builder" and value != current[path]:
            # Another builder takes other parameters: start from its defaults.
            from pipelines.builders import default_params

            spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, params=default_params(value)))
        current = flatten(spec)
    return spec


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set expects key=value, got '{override}'")
    return key.strip(), value.strip()


def _replace_path(obj: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    if isinstance(obj, ModelConfig) and head not in {f.name for f in dataclasses.fields(obj)}:
        return dataclasses.replace(obj, params={**obj.params, head: value})
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: _replace_path(getattr(obj, head), rest, value)})
