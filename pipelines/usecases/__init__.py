"""The use cases: one declarative `Spec` per module. Adding one is adding a module here
(and, at most, a loader in `pipelines.data.loaders`)."""

from __future__ import annotations

import dataclasses
import importlib

from pipelines.core.errors import UsageError
from pipelines.modeling.builders import default_params

# name -> module defining SPEC; imported on demand (specs are plain data, so this is cheap).
USECASES = ("digits", "clothing", "skin", "heart", "cucumber")


def get_spec(name: str):
    """The use case's spec, its model parameters completed with the builder's defaults: a spec
    lists only what it changes, yet every parameter shows in `show`, in MLflow and to `--set`."""
    if name not in USECASES:
        raise UsageError(f"unknown use case '{name}'; choose one of: {', '.join(USECASES)}")
    return _complete(importlib.import_module(f"pipelines.usecases.{name}").SPEC)


def _complete(spec):
    params = {**default_params(spec.model.builder), **spec.model.params}
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, params=params))


def all_specs():
    return [get_spec(name) for name in USECASES]
