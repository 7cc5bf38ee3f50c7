"""Any CSV with a named target column, as a `Table` for the small-table task.

The use-case file names the file and the target (`python -m pipelines init NAME --table
FILE.csv --target COLUMN` writes both):

    [data]
    loader = "csv"
    [data.options]
    file = "/home/me/patients.csv"      # relative paths are read from the checkout's root
    [tabular]
    target = "diagnosis"
    positive_class = "malignant"         # binary targets: what column 1 of the answer means
    group = ""                           # optional: a site column (grouped CV, external validation)

Column kinds are inferred (`pipelines.data.table_schema.infer_columns`, the same inference
`init` reports), `tabular.numeric` / `tabular.categorical` override them and `tabular.drop`
leaves columns out. `--data-dir DIR` reads the file of the same name in DIR instead.

Empty cells, `?`, `NA`, `N/A`, `NaN` and `null` are missing values; a row without a target
value is left out, with a note. A UTF-8 byte-order mark is dropped and a header with `;` but
no `,` is read as European Excel writes it (`;` separated, decimal commas).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.core import paths
from pipelines.core.console import say
from pipelines.core.errors import PipelineError
from pipelines.data.sources import sha256sum
from pipelines.data.table_schema import Table, as_dataset, class_names_of, feature_frame, infer_columns

MISSING = ["", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
WHOLE_TABLE = "all"  # the one group of a table without a group column


def read_csv(path: Path):
    """The CSV's cells as text (None = missing), stripped; any reading problem is one line."""
    import pandas as pd

    try:
        with open(path, encoding="utf-8-sig") as handle:
            first_line = handle.readline()
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PipelineError(f"{path}: a folder, not a CSV file") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path}: not UTF-8 text (byte {exc.start}); save it as CSV UTF-8") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot be read ({exc.strerror})") from None
    if not first_line.strip():
        raise PipelineError(f"{path}: the file is empty; expected a header row naming the columns, then one row per example")
    european = ";" in first_line and "," not in first_line
    try:
        table = pd.read_csv(path, sep=";" if european else ",", decimal="," if european else ".", dtype=str,
                            keep_default_na=False, na_values=MISSING, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise PipelineError(f"{path}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    if table.empty:
        raise PipelineError(f"{path}: a header but no data rows")
    table.columns = [str(c).strip() for c in table.columns]
    duplicated = sorted({c for c in table.columns if list(table.columns).count(c) > 1
                         or (c.rpartition(".")[2].isdigit() and c.rpartition(".")[0] in table.columns)})
    if duplicated:
        raise PipelineError(f"{path}: column(s) {', '.join(duplicated)} appear more than once; keep one of each")
    table = table.apply(lambda column: column.str.strip()).replace({"": None})
    if european:
        table = table.apply(lambda column: column.str.replace(",", ".", regex=False))
    return table.astype(object).where(table.notna(), None)


def csv_path(spec) -> Path:
    text = spec.data.options.get("file")
    if not text:
        raise PipelineError(f"{spec.name}: the csv loader needs [data.options] file = \"path/to/table.csv\"")
    path = Path(str(text)).expanduser()
    if spec.data.data_dir:
        path = Path(spec.data.data_dir).expanduser() / path.name
    return path if path.is_absolute() else paths.REPO_ROOT / path


def load_table(spec) -> Table:
    path = csv_path(spec)
    table = read_csv(path)
    settings = spec.tabular
    where = path.name
    target = settings.target
    if not target:
        raise PipelineError(f"{spec.name}: name the column to predict, [tabular] target = \"COLUMN\"")
    for role, column in (("target", target), ("group", settings.group)):
        if column and column not in table.columns:
            raise PipelineError(f"{where} has no {role} column '{column}'; its columns: {', '.join(table.columns)}")
    notes = []
    unlabelled = table[target].isna()
    if unlabelled.all():
        raise PipelineError(f"{where}: the target column '{target}' is empty")
    if unlabelled.any():
        notes.append(f"{int(unlabelled.sum())} row(s) without a '{target}' value left out")
        table = table[~unlabelled].reset_index(drop=True)
    values = table[target].astype(str)
    if values.nunique() < 2:
        raise PipelineError(f"{where}: the target column '{target}' holds one value ('{values.iloc[0]}') on every row; "
                            "a classifier needs at least two classes")
    found = class_names_of(values, settings.positive_class)
    if tuple(map(str, spec.class_names)) != found:
        raise PipelineError(f"{spec.name}: class_names = {list(spec.class_names)}, but '{target}' in {where} holds "
                            f"{list(found)}; make class_names exactly that list (the order the model answers in)")
    kinds = infer_columns(table, (target, settings.group, *settings.drop), settings.numeric, settings.categorical, where)
    notes += [f"column '{column}' dropped: {why}" for column, why in kinds.dropped.items()]
    features = feature_frame(table, kinds)
    y = values.map({name: index for index, name in enumerate(found)}).to_numpy(np.int64)
    if settings.group:
        groups = table[settings.group].fillna("(none)").astype(str).to_numpy()
        names = sorted(set(groups))
    else:
        groups, names = np.full(len(table), WHOLE_TABLE, dtype=object), [WHOLE_TABLE]
    train_groups = tuple(settings.train_groups) or tuple(names)
    unknown = [g for g in train_groups if g not in names]
    if unknown:
        raise PipelineError(f"tabular.train_groups names {', '.join(unknown)}, not in column '{settings.group or '(none)'}'"
                            f" of {where}; its groups: {', '.join(names)}")
    for note in notes:
        say(f"[{spec.name}] {where}: {note}")
    frames = {g: features[groups == g].reset_index(drop=True) for g in names}
    targets = {g: y[groups == g] for g in names}
    about = (f"`{path}`: {len(table)} rows, {len(kinds.numeric)} numeric and {len(kinds.categorical)} categorical "
             f"column(s); target `{target}`.",)
    return Table(frames, targets, found, tuple(kinds.numeric), tuple(kinds.categorical), train_groups,
                 origin=str(path.parent), files={path.name: sha256sum(path)}, about=about, notes=tuple(notes))


def load(spec):
    """For `evaluate`: the training groups as train, the others as test."""
    return as_dataset(load_table(spec))
