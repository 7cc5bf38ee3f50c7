"""Batch prediction from a CSV of raw columns with an exported tabular SavedModel.

Problems are reported one line each, naming the row (1 = the first data row) and column:
a missing column (no row can be predicted), an extra column (ignored), a value that is not a
number in a number column (that row is skipped). Empty cells and `?` are "not measured" and are
fine: the model imputes them. A category never seen in training (a code, or a text value in a
text column: `metadata.json`'s `column_types`) is a warning, not an error: the model sends it
to its out-of-vocabulary bucket, exactly as the serving endpoint would.

What spreadsheets write is read as meant:

- a UTF-8 byte-order mark (Excel's "CSV UTF-8") is accepted;
- `;` as the separator (European Excel) is accepted when the header holds `;` and no `,`:
  then a comma can only be a decimal comma (`2,3`), and is read as one;
- a row with more or fewer fields than the header is an error naming its row and line; that
  row is skipped, the others are predicted;
- a duplicated column is an error for the file (nothing predicted): which copy the model
  should read cannot be known;
- an empty file, or a header without rows, is an error naming the file.

A file that cannot be read is an error for that file only: the other files are predicted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.core.runtime import import_keras
from pipelines.export.saved_model import call_serving, read_metadata


@dataclass
class TablePredictions:
    rows: list[dict] = field(default_factory=list)  # {"row", "probability" or "probabilities", "label"}
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(table, metadata: dict, source: str, skipped: frozenset = frozenset()):
    """(frame of float32 columns for the valid rows, their 1-based row numbers, errors, warnings).
    `skipped` holds 0-based rows already reported (e.g. a wrong number of fields)."""
    import pandas as pd

    expected = metadata["columns"]
    errors, warnings = [], []
    missing = [c for c in expected if c not in table.columns]
    extra = [c for c in table.columns if c not in expected]
    if missing:
        mixed = " (the header mixes ';' and ',': use one separator)" if any(";" in str(c) for c in table.columns) else ""
        errors.append(f"{source}: missing column(s) {', '.join(missing)}; the model needs {', '.join(expected)}{mixed}")
        return None, [], errors, warnings
    if extra:
        errors.append(f"{source}: unexpected column(s) {', '.join(extra)} ignored; the model reads {', '.join(expected)}")
    text_columns = [c for c, kind in metadata.get("column_types", {}).items() if kind == "text"]
    values = table[expected].replace({"?": None})
    numbers = values.apply(pd.to_numeric, errors="coerce")
    valid = np.ones(len(table), dtype=bool)
    valid[list(skipped)] = False
    for column in expected:
        if column in text_columns:
            continue
        text = values[column]
        not_number = numbers[column].isna() & text.notna() & (text.astype(str).str.strip() != "")
        for row in np.flatnonzero(not_number):
            errors.append(f"{source} row {row + 1}, column {column}: '{text.iloc[row]}' is not a number")
            valid[row] = False
    for column, known in metadata.get("categories", {}).items():
        observed = values[column].fillna("").astype(str) if column in text_columns else numbers[column]
        unknown = (observed.notna() & ~observed.isin(known)) if column not in text_columns else ~observed.isin(known)
        for row in np.flatnonzero(unknown & valid):
            shown = f"'{observed.iloc[row]}'" if column in text_columns else f"{observed.iloc[row]:g}"
            listed = ", ".join(map(str, known[:10])) + (", ..." if len(known) > 10 else "")
            warnings.append(
                f"{source} row {row + 1}, column {column}: {shown} is not a category seen in training "
                f"({listed}); predicted with the out-of-vocabulary bucket"
            )
    frame = numbers[valid].astype("float32")
    for column in text_columns:  # text categories stay text; an empty cell is "" (not recorded)
        frame[column] = values[column][valid].fillna("").astype(str).to_numpy(object)
    return frame, (np.flatnonzero(valid) + 1).tolist(), errors, warnings


def read_rows(csv_path: str) -> tuple:
    """(DataFrame of text cells, None for empty, 0-based rows to skip, errors) for one CSV."""
    import csv
    import io

    import pandas as pd

    try:
        text = Path(csv_path).read_text(encoding="utf-8-sig")  # a byte-order mark is dropped
    except FileNotFoundError:
        raise PipelineError(f"{csv_path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{csv_path}: not UTF-8 text (byte {exc.start}); save it as CSV UTF-8") from None
    except OSError as exc:
        raise PipelineError(f"{csv_path}: cannot be read ({exc.strerror})") from None
    if not text.strip():
        raise PipelineError(f"{csv_path}: the file is empty; expected a header row naming the columns, then one row per example")
    first_line = text.splitlines()[0]
    separator = ";" if ";" in first_line and "," not in first_line else ","
    reader = csv.reader(io.StringIO(text), delimiter=separator, skipinitialspace=True)
    header = [name.strip() for name in next(reader)]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise PipelineError(f"{csv_path}: column(s) {', '.join(duplicated)} appear more than once; keep one of each")
    rows, skipped, errors = [], set(), []
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue  # a blank line, as pandas skips it
        if len(fields) != len(header):
            errors.append(f"{csv_path} row {len(rows) + 1} (line {reader.line_num}): {len(fields)} fields, the header has "
                          f"{len(header)}; row skipped")
            skipped.add(len(rows))
            fields = [""] * len(header)
        rows.append(fields)
    if not rows:
        raise PipelineError(f"{csv_path}: a header but no data rows")
    table = pd.DataFrame(rows, columns=header, dtype=object)
    if separator == ";":
        table = table.apply(lambda column: column.str.replace(",", ".", regex=False))  # decimal commas
    table = table.apply(lambda column: column.str.strip()).replace({"": None})
    return table, frozenset(skipped), errors


def prepare(csv_path: str, metadata: dict) -> tuple:
    """(frame of the rows to predict, their 1-based row numbers, errors, warnings) for one CSV;
    a file that cannot be read at all gives one error and no rows."""
    try:
        table, skipped, read_errors = read_rows(csv_path)
    except PipelineError as exc:
        return None, [], [str(exc)], []
    frame, row_numbers, errors, warnings = validate(table, metadata, csv_path, skipped)
    if frame is None:  # refused as a whole (a missing column): the rows' own faults are noise then
        return None, [], errors, warnings
    return frame, row_numbers, read_errors + errors, warnings


def predict_csv(model_dir: Path, csv_path: str) -> TablePredictions:
    metadata = read_metadata(model_dir)
    frame, row_numbers, errors, warnings = prepare(csv_path, metadata)
    result = TablePredictions(errors=errors, warnings=warnings)
    if frame is None or frame.empty:
        return result
    import_keras()
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    text = {c for c, kind in metadata.get("column_types", {}).items() if kind == "text"}
    outputs = call_serving(loaded, {c: frame[c].to_numpy(str) if c in text else frame[c].to_numpy(np.float32)
                                    for c in metadata["columns"]})
    classes, threshold = metadata["class_names"], metadata.get("threshold")
    for number, output in zip(row_numbers, outputs):
        if len(classes) == 2:  # [P(negative), P(positive)]; older exports answered P(positive) alone
            probability = float(output[-1])
            label = classes[1] if probability >= (threshold if threshold is not None else 0.5) else classes[0]
            result.rows.append({"row": number, "probability": probability, "label": label})
        else:
            result.rows.append({"row": number, "probabilities": output.tolist(), "label": classes[int(np.argmax(output))]})
    return result


def print_table_predictions(result: TablePredictions, metadata: dict, as_json: bool = False) -> int:
    import json

    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in result.errors:
        print(f"error: {line}", file=sys.stderr)
    threshold = metadata.get("threshold")
    for row in result.rows:
        if as_json:
            print(json.dumps(row))
        elif "probability" in row:
            print(f"row {row['row']}: P({metadata['class_names'][1]}) {row['probability']:.3f} -> {row['label']}"
                  + (f" (threshold {threshold:.3f})" if threshold is not None else ""))
        else:
            print(f"row {row['row']}: {row['label']} " + " ".join(f"{p:.3f}" for p in row["probabilities"]))
    return len(result.errors)
