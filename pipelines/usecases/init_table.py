"""`init NAME --table FILE.csv --target COLUMN`: look at a CSV and write the use-case file that
trains the small-table network on it, with what was found written into its comments.

It reads the file with the `csv` loader's reader and infers the columns with the loader's own
inference (`pipelines.data.table_schema.infer_columns`), so the kinds listed in the file are
the kinds training uses; a problem training would hit (no such target column, a target with
one value, free text) is reported here already, as the same one line.

Defaults, for a small table (a few hundred to a few thousand rows): the tabular MLP with one
small hidden layer, dropout and weight decay (heart's choice, `benchmarks/RESULTS.md`), judged
by repeated stratified 5-fold cross-validation with the logistic-regression baseline on the
same folds; class weights on when the smallest class has under half the rows of the largest.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from pipelines.core.errors import PipelineError
from pipelines.data.loaders.csv_format import read_csv
from pipelines.data.table_schema import class_balance, class_names_of, infer_columns

IMBALANCED = 0.5  # smallest / largest class count below this: class weights on


def table_usecase_text(name: str, csv: str, target: str, positive: str = "") -> str:
    """The commented TOML of a use case that trains on `csv` to predict `target`."""
    path = Path(csv).expanduser().resolve()
    table = read_csv(path)
    where = path.name
    if target not in table.columns:
        raise PipelineError(f"{where} has no target column '{target}'; its columns: {', '.join(table.columns)}")
    labelled = table[table[target].notna()]
    values = labelled[target].astype(str)
    if values.nunique() < 2:
        shown = f"one value ('{values.iloc[0]}')" if len(values) else "no values"
        raise PipelineError(f"{where}: the target column '{target}' holds {shown} on every row; a classifier needs at least two classes")
    classes = class_names_of(values, positive)
    if len(classes) == 2 and not positive:
        positive = classes[1]  # sorted order: say which, so the file names it and the user can change it
    kinds = infer_columns(labelled, (target,), where=where)
    counts = class_balance(values, classes)
    binary = len(classes) == 2
    weights = 1.0 if min(counts.values()) < IMBALANCED * max(counts.values()) else 0.0
    width = max(len(c) for c in table.columns) + 2

    lines = [
        f"# Use case `{name}`, written by `python -m pipelines init {name} --table {csv} --target {target}"
        + (f" --positive {positive}" if positive else "") + "`",
        f"# on {datetime.date.today().isoformat()}: {len(table)} rows, {len(table.columns)} columns in {where}.",
        "#",
        f"# Class balance of `{target}`: " + ", ".join(f"{c} {n} ({n / len(values):.1%})" for c, n in counts.items())
        + (f"; {len(table) - len(labelled)} row(s) without a value are left out" if len(labelled) < len(table) else "") + ".",
        "#",
        "# Columns as training reads them (kinds inferred from the values; a different kind: list the",
        "# column in tabular.numeric or tabular.categorical; leave one out: tabular.drop):",
    ]
    for column in table.columns:
        if column == target:
            kind = "the target"
        elif column in kinds.dropped:
            kind = f"dropped: {kinds.dropped[column]}"
        else:
            kind = kinds.describe(column, labelled[column])
        lines.append(f"#   {column:<{width}}{kind}")
    features = len(kinds.numeric) + len(kinds.categorical)
    description = f"Predicts `{target}` ({', '.join(classes)}) from {features} columns of {where}."
    lines += [
        "",
        f"title = {_toml(name.replace('-', ' ').replace('_', ' ').capitalize() + f' ({target} from {where})')}",
        'task = "tabular_classification"',
        f"input_shape = [{features}]",
        f"# The order the model answers in{' (column 1 is P(' + classes[1] + '))' if binary else ''}.",
        f"class_names = {_toml(list(classes))}",
        f"description = {_toml(description)}",
        f'primary_metric = "{"roc_auc" if binary else "balanced_accuracy"}"',
        "# Ranks runs (`compare`) and gates the registry alias `champion`: the cross-validated mean.",
        f'ranking_metric = "{"cv_keras_roc_auc_mean" if binary else "cv_keras_balanced_accuracy_mean"}"',
        'intended_use = "Say who uses the predictions, for what decision, and who checks them."',
        'limitations = "Say where the rows come from and who they leave out: the model knows only them."',
        "",
        "[data]",
        'loader = "csv"',
        "",
        "[data.options]",
        f"file = {_toml(str(path))}",
        "",
        "[model]",
        "# A small table leaves room for little capacity: one small hidden layer, strong dropout.",
        'builder = "tabular_mlp"',
        "hidden_units = [16]",
        "dropout = 0.3",
        "",
        "[train]",
        "epochs = 60",
        "batch_size = 32",
        "learning_rate = 0.003",
        "weight_decay = 0.01",
        f"class_weights = {weights}" + ("  # the classes are imbalanced: weigh the rare ones up" if weights else ""),
        "",
        "[validation]",
        "# Repeated stratified k-fold over every row, the logistic-regression baseline on the same",
        "# folds; the exported model is then trained on all rows.",
        "cv_folds = 5",
        "cv_repeats = 3",
        "",
        "[tabular]",
        f"target = {_toml(target)}",
    ]
    if binary:
        lines.append(f"positive_class = {_toml(positive)}")
    lines += [
        "# A column naming each row's site or group: rows of one group never straddle the CV folds,",
        "# and groups left out of train_groups are external validation.",
        'group = ""',
    ]
    if kinds.dropped:
        lines.append(f"# dropped by the inference: {', '.join(kinds.dropped)}")
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    """A TOML string or array of strings (JSON's escapes are TOML's for these)."""
    return json.dumps(value, ensure_ascii=False)
