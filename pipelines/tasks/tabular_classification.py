"""Small tables (a few hundred to a few thousand rows, any CSV; heart is one): the validation
protocol fit for them.

The data comes from a table loader as a `pipelines.data.table_schema.Table` (groups of rows,
class indices, column kinds; see `pipelines.data.loaders`), so nothing here knows one data set.
One MLflow run holds all of it:
1. repeated stratified k-fold on the training groups' rows (grouped folds when they span at
   least k groups), the Keras model and a scikit-learn logistic-regression baseline (same
   imputation and encoding) on the same folds: mean and spread of accuracy, ROC AUC,
   sensitivity, specificity and the Brier score (calibration) for two classes, accuracy,
   balanced accuracy and macro AUC for more;
2. for two classes, the decision threshold chosen on the pooled out-of-fold predictions;
3. external validation: the model trained on the training groups, tested on each other group;
4. leave-one-group-out over a few groups (sites): trained on the others, tested on each;
5. the final model on all training-group rows, exported with raw named-column inputs.
Every statistic a model uses is fitted inside its training fold only.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from pipelines.core.console import say
from pipelines.core.errors import PipelineError, UsageError
from pipelines.core.runtime import import_keras, many_models_in_one_process, seed_everything
from pipelines.data.dataset import Split
from pipelines.data.input_pipeline import fit_arguments
from pipelines.data.loaders import load_table, prepare_table_spec
from pipelines.data.table_schema import MAX_LEFT_OUT_GROUPS, check_signature_names, signature_name
from pipelines.evaluation.model_card import data_checks
from pipelines.evaluation.plots import _pyplot
from pipelines.evaluation.report import classification_report, headline, write_report_text
from pipelines.modeling.builders import get_builder
from pipelines.modeling.builders.tabular_mlp import MISSING_CODE
from pipelines.tasks import Evaluation, Fitted, Loaded, Task
from pipelines.training import cross_validation
from pipelines.training.cross_validation import describe, is_grouped, run_metrics, summary_table
from pipelines.training.fit import class_weights, learning_rate_schedule, predict_probabilities

# --- models -------------------------------------------------------------------------------


def fit_keras(spec, table, frame, y, seed: int):
    """The tabular MLP, every statistic adapted on `frame` (these training rows only)."""

    keras = import_keras()
    seed_everything(seed, spec.train.deterministic)
    builder = get_builder(spec.model.builder)
    model = builder(frame, table.numeric, table.categorical, spec.num_classes, **spec.model.params)
    steps = int(np.ceil(len(frame) / spec.train.batch_size))
    schedule = learning_rate_schedule(spec, steps)
    optimizer = (keras.optimizers.AdamW(schedule, weight_decay=spec.train.weight_decay) if spec.train.weight_decay
                 else keras.optimizers.Adam(schedule))
    # A whole epoch per call into the compiled step: these models are tiny, the Python
    # round trip per batch was most of the time. (For two classes, sparse cross-entropy on
    # [1 - p, p] is the binary cross-entropy of p.)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", steps_per_execution=steps)
    weights = class_weights(y, spec.num_classes, spec.train.class_weights) if spec.train.class_weights else None
    features = frame[list(table.columns)].rename(columns=signature_name).reset_index(drop=True)
    model.fit(**fit_arguments(Split(features, y), spec.train.batch_size, seed, training=True),
              epochs=spec.train.epochs, class_weight=weights, verbose=0)
    return model


def columns(frame, table) -> dict[str, np.ndarray]:
    """One array per model input, keyed by its signature name: float32 numbers and codes, text
    categories as strings."""
    text = set(table.text_columns())
    return {signature_name(c): frame[c].to_numpy(str) if c in text else frame[c].to_numpy(np.float32) for c in table.columns}


def predict_keras(model, frame, table) -> np.ndarray:
    """P(positive) `[n]` for binary targets, else `[n, classes]`."""

    probabilities = predict_probabilities(model, columns(frame, table))
    return probabilities[:, 1] if len(table.class_names) == 2 else probabilities


def baseline(spec, table):
    """Logistic regression with the same treatment of the columns as the Keras model."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    text = table.text_columns()
    codes = [c for c in table.categorical if c not in text]
    prepare = ColumnTransformer(
        [
            ("numeric",
             make_pipeline(SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True), StandardScaler()),
             list(table.numeric)),
            ("categorical",
             make_pipeline(SimpleImputer(strategy="constant", fill_value=MISSING_CODE), OneHotEncoder(handle_unknown="ignore")),
             codes),
            ("text", OneHotEncoder(handle_unknown="ignore"), list(text)),  # "" (missing) is a category already
        ]
    )
    weighting = "balanced" if spec.train.class_weights else None
    return make_pipeline(prepare, LogisticRegression(max_iter=2000, class_weight=weighting))


def fit_baseline(spec, table, frame, y):
    return baseline(spec, table).fit(frame[list(table.columns)], y)


def predict_baseline(model, frame, table) -> np.ndarray:
    probabilities = model.predict_proba(frame[list(table.columns)])
    return probabilities[:, 1] if len(table.class_names) == 2 else probabilities


# --- metrics ------------------------------------------------------------------------------


def metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Binary: accuracy, ROC AUC, sensitivity, specificity, Brier; multi-class: accuracy,
    balanced accuracy, macro AUC (one-vs-rest) when every class is present."""
    from sklearn import metrics as m

    if p.ndim == 1:
        predicted = (p >= threshold).astype(int)
        positives, negatives = y == 1, y == 0
        result = {
            "accuracy": float(m.accuracy_score(y, predicted)),
            "sensitivity": float(m.recall_score(y, predicted, pos_label=1)) if positives.any() else float("nan"),
            "specificity": float(m.recall_score(y, predicted, pos_label=0)) if negatives.any() else float("nan"),
            "brier": float(m.brier_score_loss(y, p, pos_label=1)) if positives.any() else float(np.mean((p - y) ** 2)),
        }
        result["roc_auc"] = float(m.roc_auc_score(y, p)) if positives.any() and negatives.any() else float("nan")
        return result

    return {k: v for k, v in headline(classification_report(y, p, tuple(range(p.shape[1])))).items() if k != "log_loss"}


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 on validation predictions."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


# --- the validation schemes ---------------------------------------------------------------


def repeated_cv(spec, table, frame, y, groups, tracker=None) -> dict:
    """The Keras model and the baseline on the same folds (`pipelines.training.cross_validation`)."""

    def fit_fold(index, train, test):
        keras_model = fit_keras(spec, table, frame.iloc[train], y[train], spec.train.seed + index)
        base_model = fit_baseline(spec, table, frame.iloc[train], y[train])
        predictions = {"keras": predict_keras(keras_model, frame.iloc[test], table),
                       "baseline": predict_baseline(base_model, frame.iloc[test], table)}
        return {name: (metrics(y[test], p), p) for name, p in predictions.items()}

    return cross_validation.run(spec.validation, spec.train.seed, y, fit_fold, tracker, shown=("roc_auc", "accuracy"),
                                groups=groups)


def _scores(spec, table, frame, y, held_frame, held_y) -> dict:
    keras_model = fit_keras(spec, table, frame, y, spec.train.seed)
    base_model = fit_baseline(spec, table, frame, y)
    return {"rows": len(held_y), "keras": metrics(held_y, predict_keras(keras_model, held_frame, table)),
            "baseline": metrics(held_y, predict_baseline(base_model, held_frame, table))}


def group_validation(spec, table) -> tuple[dict, dict]:
    """(external: trained on the training groups, tested per other group;
    leave-one-group-out over a few groups: trained on the other groups, tested on each)."""
    train, y, _ = table.rows(table.train_groups)
    others = [g for g in table.frames if g not in table.train_groups]
    external = {}
    if others:
        keras_model = fit_keras(spec, table, train, y, spec.train.seed)
        base_model = fit_baseline(spec, table, train, y)
        for group in others:
            held, held_y, _ = table.rows([group])
            external[group] = {"rows": len(held_y), "keras": metrics(held_y, predict_keras(keras_model, held, table)),
                               "baseline": metrics(held_y, predict_baseline(base_model, held, table))}
    left_out = {}
    if 2 <= len(table.frames) <= MAX_LEFT_OUT_GROUPS:
        for group in table.frames:
            rest, rest_y, _ = table.rows([g for g in table.frames if g != group])
            held, held_y, _ = table.rows([group])
            left_out[group] = _scores(spec, table, rest, rest_y, held, held_y)
    return external, left_out


def metric_safe(name: str) -> str:
    """A group's name as part of an MLflow metric name (letters, digits, `_-. /` only)."""
    return re.sub(r"[^\w\-. /]", "_", str(name))


# --- plots and report ---------------------------------------------------------------------


def plot_roc_and_calibration(out_of_fold: dict, folder: Path) -> list[Path]:
    """ROC curves and reliability diagrams of both models, from scikit-learn's displays."""
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import RocCurveDisplay

    plt = _pyplot()
    figures = (
        ("roc_curve.png", "ROC, pooled out-of-fold predictions",
         lambda name, axis: RocCurveDisplay.from_predictions(out_of_fold["y"], out_of_fold[name], name=name, ax=axis,
                                                             plot_chance_level=name == "baseline")),
        ("calibration.png", "Calibration (reliability), out-of-fold",
         lambda name, axis: CalibrationDisplay.from_predictions(out_of_fold["y"], out_of_fold[name], n_bins=10,
                                                                strategy="quantile", name=name, ax=axis)),
    )
    paths = []
    for file_name, title, draw in figures:
        figure, axis = plt.subplots(figsize=(4.8, 4.5))
        for name in ("keras", "baseline"):
            draw(name, axis)
        axis.set_title(title)
        figure.tight_layout()
        paths.append(folder / file_name)
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return paths


def to_markdown(spec, report: dict) -> str:
    cv = report["cross_validation"]
    names = list(next(iter(cv.values())).keys())
    lines = [f"# {spec.title}: validation report", "",
             f"{report['protocol'].capitalize()} ({', '.join(report['train_groups'])}), "
             "threshold 0.5; mean +- sd over folds.", "", *summary_table(cv, names)]
    if "threshold" in report:
        t = report["threshold"]
        lines += ["", f"Decision threshold (max. Youden J on pooled out-of-fold predictions): **{t['value']:.3f}**, "
                  f"sensitivity {t['sensitivity']:.3f}, specificity {t['specificity']:.3f} there."]
    for title, key in (("External validation (trained on the training groups)", "external"),
                       ("Leave one group out (trained on the others)", "leave_one_group_out")):
        if not report.get(key):
            continue
        lines += ["", f"## {title}", "", "| group | rows | model | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
        for group, row in report[key].items():
            for model in ("keras", "baseline"):
                lines.append(f"| {group} | {row['rows']} | {model} | "
                             + " | ".join(f"{row[model].get(k, float('nan')):.3f}" for k in names) + " |")
    return "\n".join(lines) + "\n"


def render_card(spec, metadata: dict, markdown_report: str) -> str:
    types = metadata.get("column_types", {})
    columns_text = ", ".join(f"`{c}`" + (" (text)" if types.get(c) == "text" else "") for c in metadata["columns"])
    output = (f"probabilities `[batch, {spec.num_classes}]` in the order {', '.join(spec.class_names)}"
              + (f"; column 1 is P({spec.class_names[1]})" if spec.num_classes == 2 else ""))
    threshold = metadata.get("threshold")
    about = "\n".join(f"- {line}" for line in metadata.get("data_about", ()))
    notes = "".join(f"\n- {line}" for line in metadata.get("data_notes", ()))
    return f"""# Model card: {spec.title} (`{spec.name}`)

{spec.description}

## Model
- Builder `{spec.model.builder}` {spec.model.params}; trained on {", ".join(metadata["train_groups"])} ({metadata["train_rows"]} rows), \
seed {spec.train.seed}; MLflow run `{metadata["mlflow_run_id"]}`; code `{metadata["git_commit"]}`.
- Input: one tensor `[batch]` per column, named {columns_text}: float32 numbers (NaN = not measured), \
or strings for text columns ("" = not recorded). Imputation, missing indicators, normalisation and category lookups are inside the model, \
fitted on the training rows only; a category never seen in training goes to an out-of-vocabulary bucket.
- Output: {output}.
- Decision threshold: {f"{threshold:.3f} (chosen on out-of-fold validation predictions, maximising sensitivity + specificity)"
                       if threshold is not None else "argmax"}.

## Data
{about}
- Source {metadata["data_origin"]}, sha256 `{metadata["data_sha256"]}`.{notes}
{data_checks(metadata)}
{markdown_report.replace("# ", "## ", 1)}
## Intended use
{spec.intended_use}

## Limitations
{spec.limitations}
"""

# --- the task ------------------------------------------------------------------------------

# What a small-table run never reads: no augmentation, views, precision policy, backbone,
# early stopping (CV fixes the epochs) or subsampling (CV uses every row).
_IMAGE_ONLY_KEYS = frozenset({
    "data.val_fraction", "data.views", "data.train_limit", "model.augmentation", "model.test_time_augmentation",
    "train.precision", "train.early_stopping_patience", "train.fine_tune_epochs",
    "train.fine_tune_layers", "train.fine_tune_learning_rate",
    "operating_point",  # a binary model has its decision threshold instead
    "checks.near_duplicate_distance", "checks.near_duplicate_difference",  # rows have exact copies only
    "export.formats",  # LiteRT / ONNX: its lookups are TensorFlow hash tables (pipelines/export/edge.py)
})


class TabularClassification(Task):
    unused_keys = _IMAGE_ONLY_KEYS
    headline_metrics = ("cv_keras_roc_auc_mean", "cv_keras_accuracy_mean", "cv_baseline_roc_auc_mean")

    def check(self, spec) -> None:
        if spec.tabular is None:
            raise UsageError(f"{spec.name} is a table use case: it needs a [tabular] section (at least target = \"COLUMN\")")
        if not spec.validation.cv_folds:
            raise UsageError(f"validation.cv_folds=0: {spec.name} is judged by cross-validation only; give at least 2 folds")
        if spec.data.views > 1:
            raise UsageError(f"data.views={spec.data.views} stacks RGB photos as channels: only colour image use cases have views")

    def prepare(self, spec):
        return prepare_table_spec(spec)

    def for_selection(self, spec):
        # The other sites are this task's test data: a trial is judged by the CV on the training sites alone.
        return dataclasses.replace(spec, tabular=dataclasses.replace(spec.tabular, external_validation=False))

    def load(self, spec) -> Loaded:
        import hashlib

        table = load_table(spec)
        check_signature_names(table.columns)
        train, y, groups = table.rows(table.train_groups)
        counts = np.bincount(y, minlength=len(table.class_names))
        too_few = [name for name, count in zip(table.class_names, counts) if count < spec.validation.cv_folds]
        if too_few:
            raise PipelineError(f"class(es) {', '.join(map(str, too_few))} have fewer training rows than the "
                                f"{spec.validation.cv_folds} cross-validation folds; lower validation.cv_folds or add rows")
        sha256 = hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(table.files.items())).encode()).hexdigest()
        description = (f"{table.origin} data: " + ", ".join(f"{g} {len(f)}" for g, f in table.frames.items())
                       + f" rows, {len(table.numeric)} numeric and {len(table.categorical)} categorical columns (sha256 {sha256[:12]})")
        data = {"table": table, "train": train, "y": y, "groups": groups}
        return Loaded(data, table.origin, sha256, table.files, {"train_rows": len(train)}, description, y)

    def fit(self, spec, loaded: Loaded, tracker, resume) -> Fitted:
        """The protocol: repeated CV with the baseline on the same folds, the decision threshold,
        external and leave-one-group-out validation; then the final model on all training rows."""
        import time

        many_models_in_one_process()  # dozens of small models
        started = time.perf_counter()
        data = loaded.data
        table, train, y, groups = data["table"], data["train"], data["y"], data["groups"]
        protocol = describe(spec.validation, len(train), is_grouped(groups, spec.validation.cv_folds))
        say(f"[{spec.name}] {protocol}: keras vs logistic regression on the same folds")
        cv = repeated_cv(spec, table, train, y, groups, tracker)
        report = {"train_rows": len(train), "train_groups": list(table.train_groups), "protocol": protocol,
                  "cross_validation": cv["summary"], "per_fold": cv["folds"]}
        if spec.num_classes == 2:
            oof = cv["out_of_fold"]
            threshold = youden_threshold(oof["y"], oof["keras"])
            at = metrics(oof["y"], oof["keras"], threshold)
            report["threshold"] = {"value": threshold, "sensitivity": at["sensitivity"], "specificity": at["specificity"]}
        if spec.tabular.external_validation and len(table.frames) > 1:
            say(f"[{spec.name}] external validation on the other groups, and leave-one-group-out")
            report["external"], report["leave_one_group_out"] = group_validation(spec, table)
        say(f"[{spec.name}] final model on all {len(train)} rows of {', '.join(table.train_groups)}")
        final = fit_keras(spec, table, train, y, spec.train.seed)
        seconds = time.perf_counter() - started
        return Fitted(final, epochs_run=spec.train.epochs, fit_seconds=seconds, examples_seen=len(train) * spec.train.epochs,
                      extra={"cv": cv, "report": report})

    def evaluate(self, spec, loaded: Loaded, fitted: Fitted, tracker, out) -> Evaluation:
        report = fitted.extra["report"]
        cv = fitted.extra["cv"]

        logged = run_metrics(cv["summary"])
        files = []
        if "threshold" in report:
            t = report["threshold"]
            logged.update(threshold=t["value"], threshold_sensitivity=t["sensitivity"], threshold_specificity=t["specificity"])
            files = [(path, "plots") for path in plot_roc_and_calibration(cv["out_of_fold"], out)]
        for key, prefix in (("external", "external"), ("leave_one_group_out", "loso")):
            for group, row in report.get(key, {}).items():
                for model in ("keras", "baseline"):
                    logged.update({f"{prefix}_{model}_{metric_safe(group)}_{k}": v for k, v in row[model].items() if np.isfinite(v)})

        markdown = to_markdown(spec, report)
        files += [(path, "evaluation") for path in write_report_text(report, markdown, out / "evaluation")]
        headline = {f"cv {k}": v["mean"] for k, v in cv["summary"]["keras"].items()}
        summary = {"cv": cv["summary"], "threshold": report.get("threshold", {}).get("value")}
        say(markdown)
        return Evaluation(report, markdown, logged, headline, files, summary)

    def metadata(self, spec, loaded: Loaded, fitted: Fitted, evaluation: Evaluation) -> dict:
        table, train = loaded.data["table"], loaded.data["train"]
        text = table.text_columns()
        threshold = evaluation.report.get("threshold", {}).get("value")
        return {
            "columns": list(table.columns), "input_dtype": "float32",
            "column_types": {c: "text" if c in text else "number" for c in table.columns},
            "signature_names": check_signature_names(table.columns),
            "categories": {c: sorted({str(v) for v in train[c]} if c in text else {int(v) for v in train[c].dropna()})
                           for c in table.categorical},
            "threshold": threshold, "target": spec.tabular.target, "train_rows": len(train),
            "train_groups": list(table.train_groups), "data_about": list(table.about), "data_notes": list(table.notes),
            "cv_summary": evaluation.report["cross_validation"],
        }

    def check_splits(self, spec, loaded: Loaded) -> dict:
        """The training groups' rows are the pool of folds; every other group is an external test set."""
        data = loaded.data
        table = data["table"]
        columns = list(table.columns)
        splits = {"folds": Split(data["train"][columns], data["y"])}
        for group, frame in table.frames.items():
            if group not in table.train_groups:
                splits[group] = Split(frame[columns], table.targets[group])
        return splits

    def drop_examples(self, spec, loaded: Loaded, to_drop: dict) -> Loaded:
        data = dict(loaded.data)
        table = data["table"]
        drop = to_drop.get("folds", np.zeros(0, dtype=np.int64))
        # The pool is the training groups' rows end to end: drop from each group its share of the indices.
        frames, targets, start = dict(table.frames), dict(table.targets), 0
        for group in table.train_groups:
            rows = len(frames[group])
            mine = drop[(drop >= start) & (drop < start + rows)] - start
            keep = np.setdiff1d(np.arange(rows), mine)
            frames[group] = frames[group].iloc[keep].reset_index(drop=True)
            targets[group] = np.asarray(targets[group])[keep]
            start += rows
        table = dataclasses.replace(table, frames=frames, targets=targets)
        data["table"] = table
        data["train"], data["y"], data["groups"] = table.rows(table.train_groups)
        return dataclasses.replace(loaded, data=data, sizes={**loaded.sizes, "train_rows": len(data["train"])}, chance_labels=data["y"])

    def model_card(self, spec, metadata: dict, evaluation: Evaluation) -> str:
        return render_card(spec, metadata, evaluation.markdown)

    def export_inputs(self, spec, loaded: Loaded) -> tuple:
        import pandas as pd

        table = loaded.data["table"]
        everything = pd.concat(list(table.frames.values()), ignore_index=True)
        check = everything.iloc[np.linspace(0, len(everything) - 1, 64).astype(int)]  # all groups, NaNs included
        return columns(check, table), columns(check.iloc[:4], table)
