"""Batch prediction from a CSV of raw columns with an exported tabular SavedModel.

Problems are reported one line each, naming the row (1 = the first data row) and column:
a missing column (no row can be predicted), an extra column (ignored), a value that is not a
number (that row is skipped). Empty cells and `?` are "not measured" and are fine: the model
imputes them. A category code never seen in training is a warning, not an error: the model
sends it to its out-of-vocabulary bucket, exactly as the serving endpoint would.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.errors import PipelineError


@dataclass
class TablePredictions:
    rows: list[dict] = field(default_factory=list)  # {"row", "probability" or "probabilities", "label"}
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def validate(table, metadata: dict, source: str):
    """(frame of float32 columns for the valid rows, their 1-based row numbers, errors, warnings)."""
    import pandas as pd

    expected = metadata["columns"]
    errors, warnings = [], []
    missing = [c for c in expected if c not in table.columns]
    extra = [c for c in table.columns if c not in expected]
    if missing:
        errors.append(f"{source}: missing column(s) {', '.join(missing)}; the model needs {', '.join(expected)}")
        return None, [], errors, warnings
    if extra:
        errors.append(f"{source}: unexpected column(s) {', '.join(extra)} ignored; the model reads {', '.join(expected)}")
    values = table[expected].replace({"?": None})
    numbers = values.apply(pd.to_numeric, errors="coerce")
    valid = np.ones(len(table), dtype=bool)
    for column in expected:
        text = values[column]
        not_number = numbers[column].isna() & text.notna() & (text.astype(str).str.strip() != "")
        for row in np.flatnonzero(not_number):
            errors.append(f"{source} row {row + 1}, column {column}: '{text.iloc[row]}' is not a number")
            valid[row] = False
    for column, known in metadata.get("categories", {}).items():
        observed = numbers[column]
        unknown = observed.notna() & ~observed.isin(known)
        for row in np.flatnonzero(unknown & valid):
            warnings.append(
                f"{source} row {row + 1}, column {column}: {observed.iloc[row]:g} is not a category seen in training "
                f"({', '.join(map(str, known))}); predicted with the out-of-vocabulary bucket"
            )
    return numbers[valid].astype("float32"), (np.flatnonzero(valid) + 1).tolist(), errors, warnings


def predict_csv(model_dir: Path, csv_path: str) -> TablePredictions:
    import pandas as pd

    from pipelines.export import call_serving, read_metadata
    from pipelines.runtime import import_keras

    metadata = read_metadata(model_dir)
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise PipelineError(f"{csv_path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{csv_path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    table = table.replace({"": None})
    frame, row_numbers, errors, warnings = validate(table, metadata, csv_path)
    result = TablePredictions(errors=errors, warnings=warnings)
    if frame is None or frame.empty:
        return result
    import_keras()
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    outputs = call_serving(loaded, {c: frame[c].to_numpy(np.float32) for c in metadata["columns"]})
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
