"""UCI Heart Disease, the 14 processed attributes, one table per site.

Reads, per site, whichever the folder holds: `<site>.csv` (header row, empty = missing: the
bundled copy) or UCI's original `processed.<site>.data` (no header, `?` = missing), as the
canonical download gives them. Every value must be a number; a cell that is not is named
(file, row, column) in a one-line error.

A value of 0 for `chol` or `trestbps` is physiologically impossible and is how some sites
(Switzerland: every `chol`) wrote "not measured": it becomes missing too.

As a `Table` (`load_table`, what the small-table task reads): one group per site, the 13
features, and the target the loader option `[data.options] target` asks for: `binary`
(disease, `num` > 0, against none; the default) or `severity` (`num` itself, 0-4; `prepare` names
its five classes). Which columns are numeric and which categorical codes is heart's use-case file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.data.table_schema import Table, as_dataset
from pipelines.data.sources import RemoteFile, locate, sha256sum

TARGETS = {"binary": 2, "severity": 5}  # loader option `target` -> how many classes it has
FEATURES = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak", "slope", "ca", "thal")
NUMERIC = ("age", "trestbps", "chol", "thalach", "oldpeak")
CATEGORICAL = ("sex", "cp", "fbs", "restecg", "exang", "slope", "ca", "thal")
TARGET = "num"
COLUMNS = FEATURES + (TARGET,)
ZERO_MEANS_MISSING = ("chol", "trestbps")
SITES = ("cleveland", "hungarian", "switzerland", "va")

UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/"
REMOTE_FILES = (
    RemoteFile("processed.cleveland.data", UCI + "processed.cleveland.data", "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8"),
    RemoteFile("processed.hungarian.data", UCI + "processed.hungarian.data", "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796"),
    RemoteFile("processed.switzerland.data", UCI + "processed.switzerland.data", "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314"),
    RemoteFile("processed.va.data", UCI + "processed.va.data", "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f"),
)
LAYOUTS = "<site>.csv with a header row, or UCI's processed.<site>.data files"


def load_sites(spec):
    """{site: DataFrame of the 13 features (float, NaN = missing) plus `num`}, and {file: sha256}."""
    located = locate(spec.name, spec.data.source, spec.data.data_dir, REMOTE_FILES, describe=LAYOUTS)
    return read_folder(located.folder), located.origin


def read_folder(folder: Path):
    frames, files = {}, {}
    for site in SITES:
        csv, original = folder / f"{site}.csv", folder / f"processed.{site}.data"
        if csv.is_file():
            frames[site], files[csv.name] = read_table(csv, header=True), sha256sum(csv)
        elif original.is_file():
            frames[site], files[original.name] = read_table(original, header=False), sha256sum(original)
    if not frames:
        raise PipelineError(f"{folder} holds no UCI heart disease data; expected {LAYOUTS} for sites {', '.join(SITES)}")
    return frames, files


def read_table(path: Path, header: bool):
    import pandas as pd

    try:
        table = pd.read_csv(path, header=0 if header else None, names=None if header else list(COLUMNS),
                            na_values=["?"], keep_default_na=True, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise PipelineError(f"{path} is not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise PipelineError(f"{path} lacks column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    table = table[list(COLUMNS)]
    numbers = table.apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna() & table.notna()
    if bad.any().any():
        row, column = next((r, c) for c in table.columns for r in np.flatnonzero(bad[c]))
        raise PipelineError(f"{path} row {row + 1}, column {column}: '{table[column].iloc[row]}' is not a number")
    if numbers[TARGET].isna().any():
        raise PipelineError(f"{path} row {int(np.flatnonzero(numbers[TARGET].isna())[0]) + 1}: the diagnosis `num` is missing")
    for column in ZERO_MEANS_MISSING:
        numbers.loc[numbers[column] == 0, column] = np.nan
    numbers[list(FEATURES)] = numbers[list(FEATURES)].astype("float32")
    numbers[TARGET] = numbers[TARGET].astype("int64")
    return numbers


def targets(frame, target: str) -> np.ndarray:
    """`binary`: disease (num > 0) vs none; `severity`: num itself (0-4)."""
    if target == "binary":
        return (frame[TARGET].to_numpy() > 0).astype(np.int64)
    if target == "severity":
        return frame[TARGET].to_numpy().astype(np.int64)
    raise PipelineError(f"unknown heart target '{target}'; use binary or severity")


SEVERITY_CLASSES = ("0 none", "1", "2", "3", "4 severe")


def prepare(spec):
    """The severity target has five classes; the use case's class names describe the binary one."""
    import dataclasses

    if spec.data.options.get("target") == "severity" and spec.num_classes != len(SEVERITY_CLASSES):
        return dataclasses.replace(spec, class_names=SEVERITY_CLASSES)
    return spec


def load_table(spec) -> Table:
    """The four sites as groups; `tabular.numeric`/`categorical` of the spec pick the columns."""
    target = str(spec.data.options.get("target", "binary"))
    if target not in TARGETS:
        raise PipelineError(f"data.options.target={target}: must be one of {', '.join(TARGETS)}")
    if spec.num_classes != TARGETS[target]:
        raise PipelineError(f"data.options.target={target} has {TARGETS[target]} classes; the use case names "
                            f"{spec.num_classes} class_names")
    features = tuple(spec.tabular.numeric) + tuple(spec.tabular.categorical)
    unknown = [c for c in features if c not in FEATURES]
    if unknown:
        raise PipelineError(f"tabular column(s) {', '.join(unknown)} are not UCI heart attributes; they are {', '.join(FEATURES)}")
    (frames, files), origin = load_sites(spec)
    train_groups = tuple(spec.tabular.train_groups) or tuple(frames)
    missing = [s for s in train_groups if s not in frames]
    if missing:
        raise PipelineError(f"training site(s) {', '.join(missing)} not in the data; sites found: {', '.join(frames)}")
    about = ("UCI Heart Disease (Janosi, Steinbrunn, Pfisterer, Detrano), processed 14-attribute files, one group per "
             "site; target " + ("disease (`num` > 0)" if target == "binary" else "`num` (0-4)") + ".",
             "`chol` or `trestbps` of 0 are read as missing (not measured).")
    return Table(frames={s: f[list(features)].reset_index(drop=True) for s, f in frames.items()},
                 targets={s: targets(f, target) for s, f in frames.items()}, class_names=tuple(spec.class_names),
                 numeric=tuple(spec.tabular.numeric), categorical=tuple(spec.tabular.categorical),
                 train_groups=train_groups, origin=origin, files=files, about=about)


def load(spec):
    """As a `Dataset`: train = the spec's training sites, test = every other site (external)."""
    return as_dataset(load_table(spec))
