"""Data loaders by name: each turns a located folder into a `Dataset`.

Loaders are imported lazily (by dotted path), so listing them costs nothing. A loader is
`load(spec) -> Dataset`; it calls `pipelines.data.sources.locate` for its files.

A table loader (`TABLE_LOADERS`) also has `load_table(spec) -> Table`
(`pipelines.data.table_schema.Table`), the contract the small-table task reads, whatever the
format:

- `frames`: group (site) -> a DataFrame of the feature columns of that group's rows, numeric
  columns float32 with NaN for "not measured", categorical ones float32 integer codes (NaN
  missing) or text ("" missing); one group, `"all"`, when the table has no group column;
- `targets`: group -> each row's class index, in the order of `class_names`;
- `class_names`: what the model answers, column by column (binary: column 1 the positive class);
- `numeric`, `categorical`: the feature columns by kind, in the order the model reads them;
- `train_groups`: the groups that train and cross-validate the exported model; every other
  group is external validation;
- `origin`, `files` (name -> sha256): provenance; `about`: lines for the model card's Data
  section (heart: the citation and its zero-means-missing rule); `notes`: what the loader
  decided on the user's behalf (a column dropped as an identifier, rows without a target).

Its `load(spec)` is `as_dataset(load_table(spec))`: the training groups as train, the others
as test, for `evaluate`.
"""

from __future__ import annotations

import importlib

from pipelines.core.domains import OneOf
from pipelines.core.errors import UsageError
from pipelines.data.splits import finalize_splits

LOADERS = {
    "mnist_format": "pipelines.data.loaders.mnist_format:load",
    "cifar_format": "pipelines.data.loaders.cifar_format:load",
    "medmnist_format": "pipelines.data.loaders.medmnist_format:load",
    "uci_heart_format": "pipelines.data.loaders.uci_heart_format:load",
    "image_folder": "pipelines.data.loaders.image_folder:load",  # DIR/<class>/*.jpg, a user's photos
    "csv": "pipelines.data.loaders.csv_format:load",
}
TABLE_LOADERS = {
    "uci_heart_format": "pipelines.data.loaders.uci_heart_format:load_table",
    "csv": "pipelines.data.loaders.csv_format:load_table",
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


# Loader options (`[data.options]`) that `--set` may change, with their domains: a setting of the
# data a user chooses per run (heart's target), where the other options say where the data is.
# The key is `data.options.<name>`; checked before any data is loaded like every other key.
LOADER_OPTIONS = {
    "uci_heart_format": {"target": OneOf(("binary", "severity"))},
}


def settable_options(loader: str) -> dict:
    return LOADER_OPTIONS.get(loader, {})


def prepare_table_spec(spec):
    """The spec as a table loader reads it: its classes may follow from an option (heart's
    severity target has five); loaders without a `prepare(spec)` leave it as it is."""
    if spec.data.loader not in TABLE_LOADERS:
        return spec
    module_name = TABLE_LOADERS[spec.data.loader].partition(":")[0]
    prepare = getattr(importlib.import_module(module_name), "prepare", None)
    return prepare(spec) if prepare else spec


def unused_keys(loader: str) -> frozenset:
    return _OPTIONAL_KEYS - LOADER_KEYS.get(loader, frozenset())


def get_loader(name: str, registry: dict | None = None):
    registry = LOADERS if registry is None else registry
    if name not in registry:
        kind = "table loader" if registry is TABLE_LOADERS else "data loader"
        raise UsageError(f"unknown {kind} '{name}'; known: {', '.join(sorted(registry))}")
    module_name, _, function = registry[name].partition(":")
    return getattr(importlib.import_module(module_name), function)


def load_table(spec):
    """The spec's table (`pipelines.data.table_schema.Table`), through its table loader."""
    return get_loader(spec.data.loader, TABLE_LOADERS)(spec)


def load_dataset(spec):
    """Load the spec's data set, split off validation data, and apply `train_limit`."""

    dataset = get_loader(spec.data.loader)(spec)
    return finalize_splits(dataset, spec)
