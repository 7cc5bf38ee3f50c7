"""`train` for tabular use cases (heart): validation fit for a few hundred rows.

One MLflow run holds all of it:
1. repeated stratified k-fold on the training sites, the Keras model and a scikit-learn
   logistic-regression baseline (same imputation and encoding) on the same folds: mean and
   spread of accuracy, ROC AUC, sensitivity, specificity, Brier score;
2. the decision threshold chosen on the pooled out-of-fold (validation) predictions;
3. external validation: the model trained on the training sites, tested on each other site;
4. site-grouped validation: trained on all sites but one, tested on the one left out;
5. the final model on all training-site rows, exported with raw named-column inputs.
Every statistic a model uses is fitted inside its training fold only.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines import config, export
from pipelines.errors import PipelineError
from pipelines.pipeline import gate, judge_against_chance, say, say_where_exported


def resolve_classes(spec):
    """The severity target has 5 classes; the spec's class names describe the binary one."""
    if spec.tabular.target == "severity":
        return dataclasses.replace(spec, class_names=("0 none", "1", "2", "3", "4 severe"))
    return spec


# --- models -------------------------------------------------------------------------------


def fit_keras(spec, frame, y, seed: int):
    """The tabular MLP, every statistic adapted on `frame` (these training rows only)."""
    from pipelines.builders import get_builder
    from pipelines.dataset import Split
    from pipelines.input_pipeline import fit_arguments
    from pipelines.runtime import import_keras, seed_everything
    from pipelines.training import class_weights, learning_rate_schedule

    keras = import_keras()
    seed_everything(seed, spec.train.deterministic)
    builder = get_builder(spec.model.builder)
    model = builder(frame, spec.tabular.numeric, spec.tabular.categorical, spec.num_classes, **spec.model.params)
    steps = int(np.ceil(len(frame) / spec.train.batch_size))
    schedule = learning_rate_schedule(spec, steps)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=spec.train.weight_decay) if spec.train.weight_decay else keras.optimizers.Adam(schedule)
    binary = spec.num_classes == 2
    # A whole epoch per call into the compiled step: these models are tiny, the Python
    # round trip per batch was most of the time.
    model.compile(optimizer=optimizer, loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
                  steps_per_execution=steps)
    weights = class_weights(y, spec.num_classes, spec.train.class_weights) if spec.train.class_weights else None
    features = frame[list(spec.tabular.numeric + spec.tabular.categorical)].reset_index(drop=True)
    model.fit(**fit_arguments(Split(features, y), spec.train.batch_size, seed, training=True),
              epochs=spec.train.epochs, class_weight=weights, verbose=0)
    return model


def columns(frame, spec) -> dict[str, np.ndarray]:
    return {c: frame[c].to_numpy(np.float32) for c in (*spec.tabular.numeric, *spec.tabular.categorical)}


def predict_keras(model, frame, spec) -> np.ndarray:
    """P(positive) `[n]` for binary targets, else `[n, classes]`."""
    from pipelines.training import predict_probabilities

    probabilities = predict_probabilities(model, columns(frame, spec))
    return probabilities[:, 0] if spec.num_classes == 2 else probabilities


def baseline(spec):
    """Logistic regression with the same treatment of the columns as the Keras model."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from pipelines.builders.tabular_mlp import MISSING_CODE

    prepare = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True), StandardScaler()), list(spec.tabular.numeric)),
            ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value=MISSING_CODE), OneHotEncoder(handle_unknown="ignore")), list(spec.tabular.categorical)),
        ]
    )
    weighting = "balanced" if spec.train.class_weights else None
    return make_pipeline(prepare, LogisticRegression(max_iter=2000, class_weight=weighting))


def fit_baseline(spec, frame, y):
    return baseline(spec).fit(frame[list(spec.tabular.numeric + spec.tabular.categorical)], y)


def predict_baseline(model, frame, spec) -> np.ndarray:
    probabilities = model.predict_proba(frame[list(spec.tabular.numeric + spec.tabular.categorical)])
    return probabilities[:, 1] if spec.num_classes == 2 else probabilities


# --- metrics ------------------------------------------------------------------------------


def metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Binary: accuracy, ROC AUC, sensitivity, specificity, Brier; multi-class: accuracy,
    balanced accuracy, macro AUC (one-vs-rest) when every class is present."""
    from sklearn import metrics as m

    if p.ndim == 1:
        predicted = (p >= threshold).astype(int)
        positives, negatives = y == 1, y == 0
        result = {
            "accuracy": float(np.mean(predicted == y)),
            "sensitivity": float(np.mean(predicted[positives] == 1)) if positives.any() else float("nan"),
            "specificity": float(np.mean(predicted[negatives] == 0)) if negatives.any() else float("nan"),
            "brier": float(np.mean((p - y) ** 2)),
        }
        result["roc_auc"] = float(m.roc_auc_score(y, p)) if positives.any() and negatives.any() else float("nan")
        return result
    from pipelines.evaluation import classification_report, headline

    return {k: v for k, v in headline(classification_report(y, p, tuple(range(p.shape[1])))).items() if k != "log_loss"}


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 on validation predictions."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


def summarise(folds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(np.nanmean([f[k] for f in folds])), "sd": float(np.nanstd([f[k] for f in folds], ddof=1))} for k in folds[0]}


# --- the validation schemes ---------------------------------------------------------------


def repeated_cv(spec, frame, y) -> dict:
    from sklearn.model_selection import RepeatedStratifiedKFold

    splitter = RepeatedStratifiedKFold(n_splits=spec.tabular.cv_folds, n_repeats=spec.tabular.cv_repeats, random_state=spec.train.seed)
    folds = {"keras": [], "baseline": []}
    out_of_fold = {"keras": [], "baseline": [], "y": []}
    for index, (train, test) in enumerate(splitter.split(frame, y)):
        keras_model = fit_keras(spec, frame.iloc[train], y[train], spec.train.seed + index)
        base_model = fit_baseline(spec, frame.iloc[train], y[train])
        for name, p in (("keras", predict_keras(keras_model, frame.iloc[test], spec)), ("baseline", predict_baseline(base_model, frame.iloc[test], spec))):
            folds[name].append(metrics(y[test], p))
            out_of_fold[name].append(p)
        out_of_fold["y"].append(y[test])
        say(f"  fold {index + 1}/{spec.tabular.cv_folds * spec.tabular.cv_repeats}: keras AUC/acc "
            + "/".join(f"{folds['keras'][-1].get(k, float('nan')):.3f}" for k in ("roc_auc", "accuracy"))
            + ", baseline " + "/".join(f"{folds['baseline'][-1].get(k, float('nan')):.3f}" for k in ("roc_auc", "accuracy")))
    pooled = {k: np.concatenate(v) for k, v in out_of_fold.items()}
    return {"folds": folds, "summary": {name: summarise(f) for name, f in folds.items()}, "out_of_fold": pooled}


def site_validation(spec, frames, target_of) -> tuple[dict, dict]:
    """(external: trained on the training sites, tested per other site;
    leave-one-site-out: trained on the other sites, tested on each site)."""
    import pandas as pd

    train_sites = [s for s in spec.tabular.train_sites if s in frames]
    train = pd.concat([frames[s] for s in train_sites], ignore_index=True)
    keras_model = fit_keras(spec, train, target_of(train), spec.train.seed)
    base_model = fit_baseline(spec, train, target_of(train))
    external = {}
    for site in (s for s in frames if s not in train_sites):
        y = target_of(frames[site])
        external[site] = {"rows": len(y), "keras": metrics(y, predict_keras(keras_model, frames[site], spec)),
                          "baseline": metrics(y, predict_baseline(base_model, frames[site], spec))}
    left_out = {}
    for site in frames:
        rest = pd.concat([frames[s] for s in frames if s != site], ignore_index=True)
        keras_rest = fit_keras(spec, rest, target_of(rest), spec.train.seed)
        base_rest = fit_baseline(spec, rest, target_of(rest))
        y = target_of(frames[site])
        left_out[site] = {"rows": len(y), "keras": metrics(y, predict_keras(keras_rest, frames[site], spec)),
                          "baseline": metrics(y, predict_baseline(base_rest, frames[site], spec))}
    return external, left_out


# --- plots and report ---------------------------------------------------------------------


def plot_roc_and_calibration(out_of_fold: dict, folder: Path) -> list[Path]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_auc_score, roc_curve

    from pipelines.plots import _pyplot

    plt = _pyplot()
    y = out_of_fold["y"]
    paths = []
    figure, axis = plt.subplots(figsize=(4.8, 4.5))
    for name in ("keras", "baseline"):
        fpr, tpr, _ = roc_curve(y, out_of_fold[name])
        axis.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, out_of_fold[name]):.3f})")
    axis.plot([0, 1], [0, 1], "k:", lw=1)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, pooled out-of-fold predictions")
    axis.legend(loc="lower right")
    figure.tight_layout()
    paths.append(folder / "roc_curve.png")
    figure.savefig(paths[-1], dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(4.8, 4.5))
    for name in ("keras", "baseline"):
        observed, predicted = calibration_curve(y, out_of_fold[name], n_bins=10, strategy="quantile")
        axis.plot(predicted, observed, marker="o", label=name)
    axis.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    axis.set(xlabel="predicted probability of disease", ylabel="observed frequency", title="Calibration (reliability), out-of-fold")
    axis.legend(loc="upper left")
    figure.tight_layout()
    paths.append(folder / "calibration.png")
    figure.savefig(paths[-1], dpi=100)
    plt.close(figure)
    return paths


def to_markdown(spec, report: dict) -> str:
    cv = report["cross_validation"]
    names = list(next(iter(cv.values())).keys())
    lines = [f"# {spec.title}: validation report", "",
             f"Repeated stratified {spec.tabular.cv_folds}-fold CV x {spec.tabular.cv_repeats} on {', '.join(spec.tabular.train_sites)} "
             f"({report['train_rows']} rows), threshold 0.5; mean +- sd over folds.", "",
             "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for model, summary in cv.items():
        lines.append(f"| {model} | " + " | ".join(f"{summary[k]['mean']:.3f} +- {summary[k]['sd']:.3f}" for k in names) + " |")
    if "threshold" in report:
        t = report["threshold"]
        lines += ["", f"Decision threshold (max. Youden J on pooled out-of-fold predictions): **{t['value']:.3f}**, "
                  f"sensitivity {t['sensitivity']:.3f}, specificity {t['specificity']:.3f} there."]
    for title, key in (("External validation (trained on the training sites)", "external"), ("Leave one site out (trained on the others)", "leave_one_site_out")):
        if not report.get(key):
            continue
        lines += ["", f"## {title}", "", "| site | rows | model | " + " | ".join(names) + " |", "|---" * (len(names) + 3) + "|"]
        for site, row in report[key].items():
            for model in ("keras", "baseline"):
                lines.append(f"| {site} | {row['rows']} | {model} | " + " | ".join(f"{row[model].get(k, float('nan')):.3f}" for k in names) + " |")
    return "\n".join(lines) + "\n"


def render_card(spec, metadata: dict, markdown_report: str) -> str:
    columns_text = ", ".join(f"`{c}`" for c in (*spec.tabular.numeric, *spec.tabular.categorical))
    output = "P(disease) `[batch, 1]`" if spec.num_classes == 2 else f"probabilities `[batch, {spec.num_classes}]`"
    threshold = metadata.get("threshold")
    return f"""# Model card: {spec.title} (`{spec.name}`)

{spec.description}

## Model
- Builder `{spec.model.builder}` {spec.model.params}; trained on {", ".join(spec.tabular.train_sites)} ({metadata["train_rows"]} rows), seed {spec.train.seed}; MLflow run `{metadata["mlflow_run_id"]}`; code `{metadata["git_commit"]}`.
- Input: one float32 tensor `[batch]` per column, named {columns_text}; NaN = not measured. Imputation, missing indicators, normalisation and category lookups are inside the model, fitted on the training rows only; an unknown category code goes to an out-of-vocabulary bucket.
- Output: {output}.
- Decision threshold: {f"{threshold:.3f} (chosen on out-of-fold validation predictions, maximising sensitivity + specificity)" if threshold is not None else "argmax"}.

## Data
- UCI Heart Disease (Janosi, Steinbrunn, Pfisterer, Detrano), processed 14-attribute files; source {metadata["data_origin"]}, sha256 `{metadata["data_sha256"]}`.
- `chol` or `trestbps` of 0 are read as missing (not measured).

{markdown_report.replace("# ", "## ", 1)}
## Intended use
{spec.intended_use}

## Limitations
{spec.limitations}
"""


# --- the verb -----------------------------------------------------------------------------


def run_train_tabular(spec, run_name: str | None = None, tags: dict | None = None) -> dict:
    import pandas as pd

    from pipelines.loaders.uci_heart_format import load_sites, targets
    from pipelines.runtime import import_keras
    from pipelines.tracking import Tracker, git_commit

    spec = resolve_classes(spec)
    (frames, files), origin = load_sites(spec)
    import_keras()
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # dozens of small models: tf.function retracing notes are expected
    missing_sites = [s for s in spec.tabular.train_sites if s not in frames]
    if missing_sites:
        raise PipelineError(f"training site(s) {', '.join(missing_sites)} not in the data; sites found: {', '.join(frames)}")
    target_of = lambda frame: targets(frame, spec.tabular.target)  # noqa: E731
    train = pd.concat([frames[s] for s in spec.tabular.train_sites], ignore_index=True)
    y = target_of(train)
    dataset_sha = __import__("hashlib").sha256("\n".join(f"{k} {v}" for k, v in sorted(files.items())).encode()).hexdigest()
    say(f"[{spec.name}] {origin} data: " + ", ".join(f"{s} {len(f)}" for s, f in frames.items()) + f" rows (sha256 {dataset_sha[:12]})")

    started = time.perf_counter()
    with Tracker(spec.name, run_name=run_name, tags=tags) as tracker, tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        commit = git_commit()
        tracker.log_params({**config.flatten(spec), "train_rows": len(train)})
        tracker.log_dict(spec.to_dict(), "spec.json")
        tracker.log_dict(files, "data_files_sha256.json")
        tracker.set_tags({"usecase": spec.name, "data_source": origin, "data_sha256": dataset_sha, "git_commit": commit, "verb": "train"})

        say(f"[{spec.name}] repeated stratified CV: {spec.tabular.cv_repeats} x {spec.tabular.cv_folds} folds, keras vs logistic regression")
        cv = repeated_cv(spec, train, y)
        report = {"train_rows": len(train), "cross_validation": cv["summary"], "per_fold": cv["folds"]}
        for model, summary in cv["summary"].items():
            tracker.log_metrics({f"cv_{model}_{k}_{stat}": v[stat] for k, v in summary.items() for stat in ("mean", "sd")})
        judge_against_chance(spec, tracker, {f"cv_keras_{k}_mean": v["mean"] for k, v in cv["summary"]["keras"].items()}, y)
        threshold = None
        if spec.num_classes == 2:
            oof = cv["out_of_fold"]
            threshold = youden_threshold(oof["y"], oof["keras"])
            at = metrics(oof["y"], oof["keras"], threshold)
            report["threshold"] = {"value": threshold, "sensitivity": at["sensitivity"], "specificity": at["specificity"]}
            tracker.log_metrics({"threshold": threshold, "threshold_sensitivity": at["sensitivity"], "threshold_specificity": at["specificity"]})
            for path in plot_roc_and_calibration(oof, out):
                tracker.log_artifact(path, "plots")

        if spec.tabular.external_validation and len(frames) > 1:
            say(f"[{spec.name}] external validation on the other sites, and leave-one-site-out")
            report["external"], report["leave_one_site_out"] = site_validation(spec, frames, target_of)
            for key, prefix in (("external", "external"), ("leave_one_site_out", "loso")):
                for site, row in report[key].items():
                    for model in ("keras", "baseline"):
                        tracker.log_metrics({f"{prefix}_{model}_{site}_{k}": v for k, v in row[model].items() if np.isfinite(v)})

        say(f"[{spec.name}] final model on all {len(train)} rows of {', '.join(spec.tabular.train_sites)}")
        final = fit_keras(spec, train, y, spec.train.seed)
        markdown = to_markdown(spec, report)
        (out / "report.md").write_text(markdown)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        tracker.log_artifact(out / "report.md", "evaluation")
        tracker.log_artifact(out / "report.json", "evaluation")
        metadata = {
            "usecase": spec.name, "title": spec.title, "task": spec.task, "class_names": list(spec.class_names),
            "columns": list(spec.tabular.numeric + spec.tabular.categorical), "input_dtype": "float32",
            "categories": {c: sorted({int(v) for v in train[c].dropna()}) for c in spec.tabular.categorical},
            "threshold": threshold, "target": spec.tabular.target, "mlflow_run_id": tracker.run_id, "git_commit": commit,
            "data_origin": origin, "data_sha256": dataset_sha, "train_rows": len(train),
            "cv_summary": cv["summary"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        card = render_card(spec, metadata, markdown)
        tracker.log_text(card, "MODEL_CARD.md")
        summary = {"run_id": tracker.run_id, "cv": cv["summary"], "threshold": threshold, "report": report}
        if spec.export.enabled:
            everything = pd.concat(list(frames.values()), ignore_index=True)
            check = everything.iloc[np.linspace(0, len(everything) - 1, 64).astype(int)]  # all sites, NaNs included
            model_dir = export.export_savedmodel(final, spec.name, columns(check, spec), metadata, spec.export.tolerance,
                                                 extra_files={"MODEL_CARD.md": card, "report.json": json.dumps(report, indent=2)})
            tracker.log_artifacts(model_dir, "saved_model")
            tracker.set_tags({"exported_to": str(model_dir)})
            sample = columns(check.iloc[:4], spec)
            registered = tracker.when_reachable("model registration", lambda: tracker.log_keras_model(
                final, sample, np.asarray(final.predict_on_batch(sample)), spec.name if spec.export.register else None,
                saved_model_dir=model_dir))
            summary.update(exported_to=str(model_dir), registered_version=registered, **gate(spec, registered, model_dir))
        tracker.log_metrics({"pipeline_seconds": time.perf_counter() - started})

    print(markdown)
    say(f"[{spec.name}] MLflow run: {tracker.ui_hint}; browse with `make mlflow-ui`")
    say_where_exported(spec, summary)
    return summary
