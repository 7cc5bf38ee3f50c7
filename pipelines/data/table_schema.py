"""What the small-table task reads from a loader (`Table`), and how a raw CSV's columns get
their kinds (`infer_columns`): one inference for `init --table` and the `csv` loader, so the
file `init` writes says exactly what training will do.

A column is, in this order:

- the target, the group column or a `tabular.drop` column: not a feature;
- `numeric` or `categorical` if `tabular.numeric` / `tabular.categorical` name it;
- dropped, with a note, if it is empty or holds one value (nothing to learn), or if it looks
  like an identifier: a different value on every row that is text, or an integer in a column
  named like `id`, `patient_id`, `ID`;
- refused as **free text** if it holds many distinct long strings (a note, a comment): the
  network reads numbers and categories, and a sentence per row would become as many one-off
  categories; the message names the column and the two ways out (drop it, or declare it a
  category);
- `numeric` if every filled cell is a number, unless they are a few distinct integers
  (at most `CATEGORY_CODES`: a code such as 0/1 or a chest-pain type 1-4): `categorical`;
- `categorical` otherwise (text with repeated values: colours, yes/no, a hospital).

A categorical column whose values are all integers is served as numbers (its codes), any other
as text; in both, a value never seen in training goes to the model's out-of-vocabulary bucket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.data.dataset import Dataset, Split

CATEGORY_CODES = 10  # at most this many distinct integers read as category codes
ID_NAME = re.compile(r"(^|[_\W])id$|^id([_\W]|$)|^(uu|gu)?id$", re.IGNORECASE)
# Free text: more distinct values than this share of the rows, and longer than this on average.
FREE_TEXT_DISTINCT = 0.5
FREE_TEXT_LENGTH = 20
MISSING_TEXT = ""  # a missing cell of a text category: served as the empty string
MAX_LEFT_OUT_GROUPS = 10  # leave-one-group-out only over a few groups (sites); more: grouped CV


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def signature_name(column: str) -> str:
    """A column's name as a TensorFlow name (the exported signature's argument, the model's
    layers): `mean radius` -> `mean_radius`. TensorFlow refuses spaces and most punctuation in
    names; clients still send the raw column names, which `metadata.json`'s `signature_names`
    maps."""
    name = _UNSAFE.sub("_", str(column))
    return name if re.match(r"[A-Za-z0-9.]", name) else f"c{name}"


def check_signature_names(columns) -> dict:
    """{column: signature name}; two columns that would share one are a PipelineError."""
    names = {column: signature_name(column) for column in columns}
    seen: dict = {}
    for column, name in names.items():
        if name in seen:
            raise PipelineError(f"columns '{seen[name]}' and '{column}' would have the same name '{name}' in the served "
                                "model (spaces and punctuation become _): rename one, or drop one (tabular.drop)")
        seen[name] = column
    return names


@dataclass
class Table:
    """A small table as the tabular task reads it, whichever loader read it.

    - `frames`: group (site) -> the feature columns of its rows, one column each: numeric ones
      float32 with NaN for "not measured"; categorical ones float32 codes (NaN missing) or
      text (`MISSING_TEXT` missing). A table without a group column is one group, `"all"`;
    - `targets`: group -> the class index of each row, in the order of `class_names`;
    - `train_groups`: the groups the exported model trains and cross-validates on; every
      other group is external validation;
    - `numeric`, `categorical`: the feature columns by kind, in the order the model reads them;
    - `about`: lines for the model card's Data section (what the data is, rules applied);
    - `notes`: what the loader decided that a user should hear (columns dropped, rows skipped).
    """

    frames: dict
    targets: dict
    class_names: tuple
    numeric: tuple
    categorical: tuple
    train_groups: tuple
    origin: str
    files: dict  # file name -> sha256
    about: tuple = ()
    notes: tuple = ()

    @property
    def columns(self) -> tuple:
        return (*self.numeric, *self.categorical)

    def text_columns(self) -> tuple:
        """Categorical columns served as text (the others take numbers)."""
        first = next(iter(self.frames.values()))
        return tuple(c for c in self.categorical if first[c].dtype == object)

    def rows(self, groups) -> tuple:
        """(features, targets, each row's group) of `groups`, concatenated; the groups are None
        for one group (nothing to keep apart in cross-validation)."""
        import pandas as pd

        groups = list(groups)
        frame = pd.concat([self.frames[g] for g in groups], ignore_index=True)
        y = np.concatenate([self.targets[g] for g in groups]).astype(np.int64)
        labels = np.concatenate([np.full(len(self.frames[g]), g, dtype=object) for g in groups]) if len(groups) > 1 else None
        return frame, y, labels


def as_dataset(table: Table):
    """The table as a `Dataset` for `evaluate`: train = the training groups, test = the others."""

    others = [g for g in table.frames if g not in table.train_groups]
    if not others:
        raise PipelineError("every row of this table trained the model, so there are no held-out rows to evaluate it on; "
                            "its estimate is the cross-validation in the run's report.json (or name tabular.train_groups "
                            "to hold groups out)")
    train, y_train, _ = table.rows(table.train_groups)
    test, y_test, _ = table.rows(others)
    return Dataset(train=Split(train, y_train), test=Split(test, y_test), class_names=tuple(table.class_names),
                   origin=table.origin, files=table.files)


@dataclass
class Columns:
    """What `infer_columns` found: feature columns by kind, and what it dropped and why."""

    numeric: list = field(default_factory=list)
    categorical: list = field(default_factory=list)
    dropped: dict = field(default_factory=dict)  # column -> why
    text: list = field(default_factory=list)  # categorical columns served as text

    def describe(self, column: str, cells) -> str:
        """A short line for `init`'s comments: the kind and what the values look like."""
        filled = cells[cells.notna()]
        missing = f", {len(cells) - len(filled)} missing" if len(filled) < len(cells) else ""
        if column in self.numeric:
            numbers = filled.astype(float)
            return f"numeric, {numbers.min():g} to {numbers.max():g}{missing}"
        values = filled.value_counts()
        shown = ", ".join(f"{value} ({count})" for value, count in values.head(5).items())
        more = f", ... ({len(values)} values)" if len(values) > 5 else ""
        return f"categorical, {shown}{more}{missing}"


def numbers_of(cells):
    """The cells as floats where every filled cell is a number, else None."""
    import pandas as pd

    numbers = pd.to_numeric(cells, errors="coerce")
    return numbers if not (numbers.isna() & cells.notna()).any() else None


def infer_columns(frame, not_features=(), numeric=(), categorical=(), where: str = "the table") -> Columns:
    """Each column of `frame` (text cells, None = empty) with its kind; see the module docstring.
    A column named in `numeric` that holds text, or one that is free text, is a PipelineError."""
    found = Columns()
    for name in (*numeric, *categorical):
        if name not in frame.columns:
            raise PipelineError(f"{where} has no column '{name}' (named in tabular.{'numeric' if name in numeric else 'categorical'}); "
                                f"its columns: {', '.join(frame.columns)}")
    for column in frame.columns:
        if column in not_features:
            continue
        cells = frame[column]
        numbers = numbers_of(cells)
        if column in numeric:
            if numbers is None:
                raise PipelineError(f"{where}, column '{column}' is declared numeric (tabular.numeric) but holds "
                                    f"'{_first_text(cells)}'")
            found.numeric.append(column)
            continue
        if column in categorical:
            found.categorical.append(column)
            if numbers is None or not _integers(numbers):
                found.text.append(column)
            continue
        filled = cells.dropna()
        distinct = filled.nunique()
        if distinct == 0:
            found.dropped[column] = "empty"
            continue
        if distinct == 1:
            found.dropped[column] = f"one value ({filled.iloc[0]})"
            continue
        unique_per_row = distinct == len(cells) and len(cells) >= 20
        if numbers is not None:
            if unique_per_row and ID_NAME.search(column) and _integers(numbers):
                found.dropped[column] = "an identifier (a different integer on every row)"
            elif _integers(numbers) and distinct <= CATEGORY_CODES:
                found.categorical.append(column)
            else:
                found.numeric.append(column)
            continue
        length = float(filled.str.len().mean())
        if distinct > FREE_TEXT_DISTINCT * len(filled) and length > FREE_TEXT_LENGTH:
            raise PipelineError(
                f"{where}, column '{column}' looks like free text ({distinct} distinct values in {len(filled)} rows, "
                f"{length:.0f} characters on average), which the tabular network cannot read: drop it "
                f"(tabular.drop = [\"{column}\"]) or, if its values are categories, declare it one "
                f"(tabular.categorical = [\"{column}\"])")
        if unique_per_row:
            found.dropped[column] = "an identifier (a different value on every row)"
            continue
        found.categorical.append(column)
        found.text.append(column)
    if not found.numeric and not found.categorical:
        raise PipelineError(f"{where} has no feature column left to learn from"
                            + (f" (dropped: {', '.join(found.dropped)})" if found.dropped else ""))
    return found


def _first_text(cells) -> str:
    import pandas as pd

    parsed = pd.to_numeric(cells, errors="coerce")
    return str(cells[parsed.isna() & cells.notna()].iloc[0])


def _integers(numbers) -> bool:
    filled = numbers.dropna()
    return bool(len(filled)) and bool(np.all(np.equal(np.mod(filled.to_numpy(float), 1), 0)))


def feature_frame(frame, columns: Columns):
    """The feature columns as the task reads them: numbers float32 (NaN missing), text
    categories as strings (`MISSING_TEXT` missing), integer categories float32 codes."""
    import pandas as pd

    out = pd.DataFrame(index=frame.index)
    for column in (*columns.numeric, *columns.categorical):
        if column in columns.text:
            out[column] = frame[column].fillna(MISSING_TEXT).astype(str).astype(object)
        else:
            out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float32")
    return out.reset_index(drop=True)


def class_names_of(values, positive: str = "") -> tuple:
    """The classes of a target column (text cells), in the order the model answers them:
    sorted (numerically when they are numbers); for two classes with `positive` named, that one
    second (column 1 is P(positive))."""
    distinct = sorted(set(values))
    numbers = numbers_of(_series(distinct))
    if numbers is not None:
        distinct = [v for _, v in sorted(zip(numbers.tolist(), distinct))]
    if positive:
        if positive not in distinct:
            raise PipelineError(f"the positive class '{positive}' is not a value of the target; its values: {', '.join(distinct)}")
        if len(distinct) != 2:
            raise PipelineError(f"a positive class is named ('{positive}') but the target has {len(distinct)} classes, "
                                f"not 2: {', '.join(distinct)}")
        distinct = [v for v in distinct if v != positive] + [positive]
    return tuple(distinct)


def _series(values):
    import pandas as pd

    return pd.Series(list(values), dtype=object)


def class_balance(values, class_names) -> dict:
    counts = {name: 0 for name in class_names}
    for value in values:
        counts[value] += 1
    return counts
