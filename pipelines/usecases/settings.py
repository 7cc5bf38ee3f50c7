"""The settable keys of a use case: `flatten` lists them, `apply_overrides` edits a copy of a
spec by `--set key=value`, `validate` checks every value against its domain and every rule
across keys before any data is loaded.

A key is a dotted path (`train.epochs`, `model.dropout`) or, where unambiguous, just its last
part (`epochs`). Builder parameters live under `model.` next to `model.builder`. What a key
may hold is declared once, on the schema (`pipelines.core.spec`) or on the builder's
signature; rules that hold for one kind of task only are the task's (`Task.check`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipelines.core.domains import domain_of
from pipelines.core.errors import UsageError
from pipelines.core.spec import ModelConfig, Spec, _show, parse_value
from pipelines.data import augmentation
from pipelines.data.loaders import check_options, settable_options, unused_keys
from pipelines.modeling import builders
from pipelines.tasks import get_task


def flatten(spec: Spec) -> dict[str, Any]:
    """All settable keys with their current values: `train.epochs`, `model.builder`, `model.<param>`;
    without the keys the spec's task or loader never reads (heart has no `train.precision`, digits
    no `data.image_size`)."""
    unused = get_task(spec.task).unused_keys | unused_keys(spec.data.loader)
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
    for name in settable_options(spec.data.loader):  # e.g. heart's data.options.target
        if name in spec.data.options:
            flat[f"data.options.{name}"] = spec.data.options[name]
    return {key: value for key, value in flat.items() if key not in unused}


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


def domain_of_key(spec: Spec, path: str):
    """The declared domain (Range/OneOf) of a resolved key, or None where it declares none:
    a search space is checked against it before any trial runs."""
    head, _, name = path.rpartition(".")
    if head == "model" and name in spec.model.params:
        return domain_of(builders.get_builder(spec.model.builder), name)
    owner = spec
    for part in filter(None, head.split(".")):
        owner = getattr(owner, part)
    return domain_of(type(owner), name)


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
            spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, params=builders.default_params(value)))
        current = flatten(spec)
    validate(spec)
    return spec


def validate(spec: Spec) -> None:
    """Every value in its declared domain and every cross-field rule holds, or one UsageError
    naming the key, the value and what is allowed: before any data is loaded or model built."""
    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
                continue
            domain = domain_of(type(obj), f.name)
            if domain is not None and not domain.admits(value):
                raise UsageError(f"{prefix}{f.name}={_show(value)}: must be {domain.allowed()}")

    walk(spec, "")
    for name, domain in settable_options(spec.data.loader).items():
        value = spec.data.options.get(name)
        if value is not None and not domain.admits(value):
            raise UsageError(f"data.options.{name}={_show(value)}: must be {domain.allowed()}")
    entry = builders.BUILDERS.get(spec.model.builder)
    if entry is None:
        raise UsageError(f"model.builder={spec.model.builder}: must be one of {', '.join(sorted(builders.BUILDERS))}")
    if entry.task != spec.task:
        fitting = sorted(name for name, e in builders.BUILDERS.items() if e.task == spec.task)
        raise UsageError(f"model.builder={spec.model.builder} builds {entry.task} models; {spec.name} needs one of {', '.join(fitting)}")
    builder = builders.get_builder(spec.model.builder)
    for name, value in spec.model.params.items():
        domain = domain_of(builder, name)
        if domain is not None and not domain.admits(value):
            raise UsageError(f"model.{name}={_show(value)}: must be {domain.allowed()}")
    _check_rules(spec, entry)


def _check_rules(spec: Spec, entry) -> None:
    """Rules across fields, each a one-line UsageError."""
    train = spec.train
    if train.warmup_epochs >= train.epochs:
        raise UsageError(f"train.warmup_epochs={train.warmup_epochs}: must be fewer than train.epochs={train.epochs}")
    if train.fine_tune_epochs and not entry.has_backbone:
        raise UsageError(f"train.fine_tune_epochs={train.fine_tune_epochs} needs a pretrained backbone; builder "
                         f"'{spec.model.builder}' has none (use model.builder=transfer, or fine_tune_epochs=0)")
    check_options(spec.data.loader, spec.data.options)
    test_fraction = spec.data.options.get("test_fraction", 0.0)
    if spec.data.val_fraction + test_fraction >= 1:
        raise UsageError(f"data.val_fraction={spec.data.val_fraction}: with test_fraction {test_fraction} it leaves no training data")
    for entry_text in spec.model.augmentation:
        augmentation.parse(entry_text)
    get_task(spec.task).check(spec)
    _check_validation(spec)
    weights = spec.model.params.get("weights")
    if isinstance(weights, str) and weights not in ("imagenet", "none", "") and not Path(weights).expanduser().is_file():
        raise UsageError(f"model.weights={weights}: no such file; use imagenet, none, or the path of a no-top weight file")
    if "weights" in spec.model.params and weights in (None, "none", "") and train.fine_tune_epochs:  # `--set weights=none` is None
        # The collapse this prevents is measured in benchmarks/RESULTS.md (`make bench-cucumber`).
        raise UsageError(f"train.fine_tune_epochs={train.fine_tune_epochs} with model.weights=none: fine-tuning freezes "
                         "the BatchNorm statistics a network trained from scratch is still learning; set fine_tune_epochs=0 "
                         "and give epochs the total")


def _check_validation(spec: Spec) -> None:
    folds, repeats = spec.validation.cv_folds, spec.validation.cv_repeats
    if folds == 1:
        raise UsageError("validation.cv_folds=1: must be 0 (the held-out test split) or at least 2 folds")
    if repeats > 1 and not folds:
        raise UsageError(f"validation.cv_repeats={repeats} repeats cross-validation, which is off (cv_folds=0): set cv_folds too")


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set expects key=value, got '{override}'")
    return key.strip(), value.strip()


def _replace_path(obj: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    if isinstance(obj, dict):  # data.options.<name>
        return {**obj, path: value}
    if isinstance(obj, ModelConfig) and head not in {f.name for f in dataclasses.fields(obj)}:
        return dataclasses.replace(obj, params={**obj.params, head: value})
    if not rest:
        return dataclasses.replace(obj, **{head: value})
    return dataclasses.replace(obj, **{head: _replace_path(getattr(obj, head), rest, value)})
