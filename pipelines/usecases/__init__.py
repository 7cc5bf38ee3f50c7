"""The use cases: one declarative `Spec` per module. Adding one is adding a module here
(and, at most, a loader in `pipelines.loaders`)."""

from __future__ import annotations

import importlib

from pipelines.errors import UsageError

# name -> module defining SPEC; imported on demand (specs are plain data, so this is cheap).
USECASES = ("digits", "clothing", "skin", "heart", "cucumber")


def get_spec(name: str):
    if name not in USECASES:
        raise UsageError(f"unknown use case '{name}'; choose one of: {', '.join(USECASES)}")
    return importlib.import_module(f"pipelines.usecases.{name}").SPEC


def all_specs():
    return [get_spec(name) for name in USECASES]
