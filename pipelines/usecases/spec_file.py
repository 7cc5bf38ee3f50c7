"""A use case is one TOML file: the `Spec` written as data, checked by the same typed schema.

The file's tables are the spec's sections, and its keys are the keys `--set` takes:

    title = "Grape grading"            # top-level Spec fields
    task = "image_classification"
    input_shape = [64, 64, 3]
    class_names = ["A", "B"]

    [data]                             # DataConfig
    loader = "image_folder"
    [data.options]                     # the loader's own settings
    folder = "~/grapes"

    [model]                            # ModelConfig: builder, augmentation, test-time views,
    builder = "transfer"               # and the builder's parameters beside them
    dropout = 0.3

    [train]                            # TrainConfig, [validation], [export], [checks], [tabular] likewise
    epochs = 20

The name is the file's stem. An unknown key, a value of the wrong type or one outside its
domain is one `UsageError` naming the file, the key and what is allowed; a builder's
parameters are completed with its defaults, so `show` and MLflow list every one.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Any

from pipelines.core.errors import UsageError
from pipelines.core.spec import ModelConfig, Spec
from pipelines.modeling import builders
from pipelines.usecases.settings import validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

NAME = re.compile(r"[a-z][a-z0-9_-]*")
# Sections the file may hold, as Spec fields whose values are dataclasses.
SECTIONS = {f.name for f in dataclasses.fields(Spec) if f.name in ("data", "model", "train", "validation", "export", "checks", "tabular")}
_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def read_spec_file(path: Path) -> Spec:
    """The spec in `path`, completed and validated; every mistake in it is a one-line UsageError."""
    path = Path(path)
    name = path.stem
    if not NAME.fullmatch(name):
        raise UsageError(f"{path}: a use-case file's name is its use case's name: lower-case letters, digits, - and _ "
                         f"(e.g. grapes.toml), not '{name}'")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such use-case file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc}); is it a UTF-8 text file?") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    try:
        return _spec_of(document, name)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _spec_of(document: dict, name: str) -> Spec:
    document = dict(document)
    if document.setdefault("name", name) != name:
        raise UsageError(f"name = {document['name']!r}: a use case is named by its file; drop the key or rename the file")
    model = document.get("model")
    if not isinstance(model, dict) or "builder" not in model:
        raise UsageError(f"[model] needs builder = one of {', '.join(sorted(builders.BUILDERS))}")
    if model["builder"] not in builders.BUILDERS:
        raise UsageError(f"model.builder={model['builder']}: must be one of {', '.join(sorted(builders.BUILDERS))}")
    document["model"] = _model_section(model)
    spec = _build(Spec, document, "")
    params = {**builders.default_params(spec.model.builder), **spec.model.params}
    spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, params=params))
    validate(spec)
    return spec


def _model_section(model: dict) -> dict:
    """Builder parameters sit beside `builder` in the file (as `--set model.dropout` does) or in
    `[model.params]`; either way they must be parameters of that builder."""
    allowed = builders.default_params(model["builder"])
    params = dict(model.get("params") or {})
    for key, value in model.items():
        if key not in _MODEL_FIELDS:
            params[key] = value
    for key, value in params.items():
        if key not in allowed:
            raise UsageError(f"model.{key}: not a parameter of builder '{model['builder']}'; "
                             f"its parameters: {', '.join(allowed) or 'none'}")
        params[key] = _coerce(value, type(allowed[key]) if allowed[key] is not None else None, f"model.{key}")
    return {**{k: v for k, v in model.items() if k in _MODEL_FIELDS}, "params": params}


def _build(cls, values: dict, prefix: str):
    """`cls(**values)` with every key known and every value of its field's type."""
    if not isinstance(values, dict):
        raise UsageError(f"{prefix.rstrip('.')}: must be a table ([{prefix.rstrip('.')}])")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UsageError(f"{prefix}{unknown[0]}: unknown key; {('[' + prefix.rstrip('.') + ']') if prefix else 'the top level'} "
                         f"takes {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UsageError(f"{prefix}{missing[0]}: required")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        section = _dataclass_in(hint)
        if section is not None:
            kwargs[key] = _build(section, value, f"{prefix}{key}.")
        elif key == "params" and cls is ModelConfig:
            kwargs[key] = value
        else:
            kwargs[key] = _coerce(value, _base_type(hint), f"{prefix}{key}")
    return cls(**kwargs)


def _dataclass_in(hint):
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _base_type(hint):
    """`Annotated[int, Range(...)]` -> int; `str | None` -> str; `tuple` -> tuple."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) is not tuple:
        hint = args[0]
    return typing.get_origin(hint) or hint


def _coerce(value: Any, kind, key: str) -> Any:
    """TOML's types onto the schema's: arrays become tuples, an integer is a float where a float
    is asked; anything else of another type is refused, naming the type wanted."""
    if kind is None or kind is Any:
        return _frozen(value)
    if kind is tuple:
        if not isinstance(value, list):
            raise UsageError(f"{key}: must be an array, e.g. {key.rpartition('.')[2]} = [...]")
        return _frozen(value)
    if kind is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{key}: must be a table")
        return {k: _frozen(v) for k, v in value.items()}
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool and not isinstance(value, bool) or kind is not bool and isinstance(value, bool):
        raise UsageError(f"{key}: must be {_describe(kind)}, not {_toml_type(value)}")
    if not isinstance(value, kind):
        raise UsageError(f"{key}: must be {_describe(kind)}, not {_toml_type(value)}")
    return value


def _frozen(value: Any) -> Any:
    """Arrays as tuples all the way down (specs are frozen and hashable); tables stay dicts."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def _describe(kind) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(kind, kind.__name__)


def _toml_type(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)
