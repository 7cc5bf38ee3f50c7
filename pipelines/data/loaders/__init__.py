"""Data loaders by name: each turns a located folder into a `Dataset`.

Loaders are imported lazily (by dotted path), so listing them costs nothing. A loader is
`load(spec) -> Dataset`; it calls `pipelines.data.sources.locate` for its files.
"""

from __future__ import annotations

import importlib

from pipelines.core.errors import UsageError
from pipelines.data.splits import finalize_splits

LOADERS = {
    "mnist_format": "pipelines.data.loaders.mnist_format:load",
    "cifar_format": "pipelines.data.loaders.cifar_format:load",
    "medmnist_format": "pipelines.data.loaders.medmnist_format:load",
    "uci_heart_format": "pipelines.data.loaders.uci_heart_format:load",
    "image_folder": "pipelines.data.loaders.image_folder:load",  # DIR/<class>/*.jpg, a user's photos
}

# Data keys only some loaders read: `--set` refuses them for the other use cases, like a key the
# task never reads, rather than accept a value that would change nothing.
LOADER_KEYS = {
    "medmnist_format": frozenset({"data.image_size"}),  # resizes the HAM10000 JPEGs
    "image_folder": frozenset({"data.image_size", "data.image_fit"}),  # decodes every photo to the spec's size
}
_OPTIONAL_KEYS = frozenset().union(*LOADER_KEYS.values())


# Loaders that check their own `data.options` when a use-case file is read ("module:function").
OPTION_CHECKS = {
    "image_folder": "pipelines.data.loaders.image_folder:check_options",
}


def check_options(loader: str, options: dict) -> None:
    """A loader's options are its own: the loader says which it takes (one UsageError a mistake)."""
    if loader in OPTION_CHECKS:
        module_name, _, function = OPTION_CHECKS[loader].partition(":")
        getattr(importlib.import_module(module_name), function)(options)


def unused_keys(loader: str) -> frozenset:
    return _OPTIONAL_KEYS - LOADER_KEYS.get(loader, frozenset())


def get_loader(name: str):
    if name not in LOADERS:
        raise UsageError(f"unknown data loader '{name}'; known: {', '.join(sorted(LOADERS))}")
    module_name, _, function = LOADERS[name].partition(":")
    return getattr(importlib.import_module(module_name), function)


def load_dataset(spec):
    """Load the spec's data set, split off validation data, and apply `train_limit`."""

    dataset = get_loader(spec.data.loader)(spec)
    return finalize_splits(dataset, spec)
