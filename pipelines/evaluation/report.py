"""The evaluation report every classifier gets: metrics, per-class table, confusion matrix.

Written as JSON (for machines and MLflow) and Markdown (for people), with plots beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.evaluation.plots import plot_confusion_matrix


def classification_report(y_true: np.ndarray, probabilities: np.ndarray, class_names: tuple,
                          predicted: np.ndarray | None = None) -> dict:
    """Metrics of the decisions `predicted` (default: the argmax of `probabilities`); the
    threshold-free ones (AUC, log loss) of the probabilities themselves."""
    from sklearn import metrics

    y_true = np.asarray(y_true)
    y_pred = probabilities.argmax(axis=1) if predicted is None else np.asarray(predicted)
    labels = np.arange(len(class_names))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    report = {
        "examples": int(len(y_true)),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(metrics.log_loss(y_true, np.clip(probabilities, 1e-7, 1), labels=labels)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }
    present = np.unique(y_true)
    if len(present) == len(class_names) and len(class_names) > 1:
        # One-vs-rest AUC needs every class in the evaluated data.
        if len(class_names) == 2:
            report["roc_auc"] = float(metrics.roc_auc_score(y_true, probabilities[:, 1]))
        else:
            report["macro_auc_ovr"] = float(
                metrics.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro", labels=labels)
            )
    return report


HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr", "roc_auc", "log_loss")


def chance_level(metric: str, labels: np.ndarray | None, num_classes: int) -> float:
    """What `metric` scores without looking at the input: AUC 0.5, balanced accuracy 1/K,
    accuracy the majority class's share (always answering it). A model must beat this. A
    cross-validated mean (`cv_accuracy_mean`) has the chance level of its metric."""
    metric = metric.removesuffix("_mean")
    if "auc" in metric:
        return 0.5
    if "balanced_accuracy" in metric:
        return 1.0 / num_classes
    if metric.endswith("accuracy") and labels is not None and len(labels):
        return float(np.bincount(np.asarray(labels)).max() / len(labels))
    return float("-inf")


def headline(report: dict) -> dict[str, float]:
    return {key: report[key] for key in HEADLINE_METRICS if key in report}


def to_markdown(report: dict, title: str) -> str:
    lines = [f"# {title}", "", f"{report['examples']} test examples.", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value:.4f} |" for key, value in headline(report).items()]
    lines += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
    for name, row in report["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    return "\n".join(lines) + "\n"


def write_report_text(report: dict, markdown: str, folder: Path) -> tuple[Path, Path]:
    """report.json (for machines and MLflow) and report.md (for people) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    json_path.write_text(json.dumps(report, indent=2, default=float))
    md_path = folder / "report.md"
    md_path.write_text(markdown)
    return json_path, md_path


def write_report(report: dict, folder: Path, title: str, markdown: str | None = None) -> list[Path]:
    """report.json, report.md (`markdown`, default the plain report's) and confusion_matrix.png
    in `folder`; returns the paths."""

    json_path, md_path = write_report_text(report, markdown or to_markdown(report, title), folder)
    png_path = plot_confusion_matrix(
        np.array(report["confusion_matrix"]), report["class_names"], folder / "confusion_matrix.png"
    )
    return [json_path, md_path, png_path]
