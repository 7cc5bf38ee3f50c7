"""Operating points: the decision rule over one model's probabilities, chosen after training.

A classifier trained on imbalanced data (DermaMNIST: 67% nevi) gives probabilities for the
population it saw. Taking their argmax is the most accurate rule on that population, and it
rarely answers the rare classes. Re-weighting the loss (`class_weights`) moves that boundary
at training time, and trades one metric for the other once and for all. Here the trade is
made afterwards, on the same exported model, in two documented ways:

- `accuracy`: argmax of p(y|x), the model's own posterior;
- `balanced`: post-hoc logit adjustment, argmax of p(y|x) / prior(y)**tau (Menon et al.,
  "Long-tail learning via logit adjustment", ICLR 2021). tau = 1 is the Bayes rule for a
  uniform class prior, i.e. for balanced accuracy; tau is chosen on validation data (never
  on test) from `TAUS`, maximising balanced accuracy.

The priors (training label frequencies) and tau travel in the exported `metadata.json`, so
`predict`, `evaluate` and the scoring server apply the same rule. `pipelines/export/mlflow_model.py`
repeats `adjusted_log_scores` in three lines, because it may import nothing from this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.core.errors import UsageError
from pipelines.evaluation.plots import _pyplot

POINTS = ("accuracy", "balanced")
TAUS = tuple(round(t, 2) for t in np.linspace(0.0, 1.0, 21))  # the trade-off curve, 0.05 apart


@dataclass(frozen=True)
class OperatingPoints:
    priors: tuple[float, ...]  # training label frequencies, Laplace-smoothed
    tau: float  # the `balanced` point's exponent
    tau_source: str  # how tau was chosen: on validation data, or the default without any
    default: str  # what predict/serve answer unless told otherwise

    def as_metadata(self) -> dict:
        return {"priors": list(self.priors), "tau": self.tau, "tau_source": self.tau_source, "default": self.default}

    @classmethod
    def from_metadata(cls, metadata: dict) -> OperatingPoints | None:
        points = metadata.get("operating_points")
        if not points:
            return None
        return cls(tuple(points["priors"]), float(points["tau"]), points.get("tau_source", ""), points.get("default", "accuracy"))

    def decide(self, probabilities: np.ndarray, point: str | None = None) -> np.ndarray:
        """Class indices at `point` (default: `self.default`)."""
        point = point or self.default
        if point == "accuracy":
            return np.asarray(probabilities).argmax(axis=1)
        return adjusted_log_scores(probabilities, self.priors, self.tau).argmax(axis=1)


def class_priors(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Label frequencies with one pseudo-count per class: a class absent from training data
    gets a small prior, never zero (its logit would be divided by zero)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    return (counts + 1) / (counts.sum() + num_classes)


def adjusted_log_scores(probabilities: np.ndarray, priors, tau: float) -> np.ndarray:
    """log p(y|x) - tau * log prior(y): argmax is the `balanced` decision."""
    return np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)) - tau * np.log(np.asarray(priors))


def adjusted_probabilities(probabilities: np.ndarray, priors, tau: float) -> np.ndarray:
    """The adjusted scores as probabilities (the posterior under the prior prior**(1 - tau))."""
    scores = adjusted_log_scores(probabilities, priors, tau)
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return scores / scores.sum(axis=1, keepdims=True)


def tradeoff_curve(labels: np.ndarray, probabilities: np.ndarray, priors, taus=TAUS) -> list[dict]:
    """Accuracy, balanced accuracy and per-class recall of the adjusted decision at each tau."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

    num_classes = probabilities.shape[1]
    rows = []
    for tau in taus:
        predicted = adjusted_log_scores(probabilities, priors, tau).argmax(axis=1)
        recall = recall_score(labels, predicted, labels=np.arange(num_classes), average=None, zero_division=0)
        rows.append({"tau": float(tau), "accuracy": float(accuracy_score(labels, predicted)),
                     "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
                     "recall": [float(r) for r in recall]})
    return rows


def choose_tau(curve: list[dict]) -> float:
    """The tau of the best validation balanced accuracy; on a tie the smallest (the least
    change to the model's own posterior)."""
    best = max(row["balanced_accuracy"] for row in curve)
    return min(row["tau"] for row in curve if row["balanced_accuracy"] >= best - 1e-12)


def check_point(point: str | None, metadata: dict, where: str) -> str | None:
    """`point` if the model at `where` has operating points (or no point was asked for)."""
    if point is None:
        return None
    if point not in POINTS:
        raise UsageError(f"unknown operating point '{point}'; choose one of {', '.join(POINTS)}")
    if OperatingPoints.from_metadata(metadata) is None:
        raise UsageError(f"{where} has no operating points in its metadata.json (a tabular model, or exported "
                         f"before they existed); drop --operating-point or retrain it")
    return point


def choose(class_names: tuple, train_labels, validation, default: str) -> tuple[OperatingPoints, list | None]:
    """The points of a newly trained model, and the validation curve tau was chosen on.
    `validation` is (labels, probabilities), or None: then tau = 1 (Menon et al.'s default)."""
    priors = class_priors(train_labels, len(class_names))
    if validation is not None and len(validation[0]):
        curve = tradeoff_curve(validation[0], validation[1], priors)
        tau, source = choose_tau(curve), f"best validation balanced accuracy ({len(validation[0])} examples)"
    else:
        curve, tau, source = None, 1.0, "1.0, the uniform-prior rule: no validation data to choose it on"
    return OperatingPoints(tuple(float(p) for p in priors), tau, source, default), curve


def report_section(points: OperatingPoints, class_names: tuple, labels, probabilities, priority: tuple = (),
                   validation_curve: list | None = None) -> dict:
    """Both points measured on (labels, probabilities), with the trade-off curve over TAUS."""
    from sklearn.metrics import confusion_matrix, f1_score

    section = {**points.as_metadata(), "priority_classes": [c for c in priority if c in class_names], "points": {}}
    every = np.arange(len(class_names))
    for point in POINTS:
        tau = 0.0 if point == "accuracy" else points.tau
        row = tradeoff_curve(labels, probabilities, points.priors, (tau,))[0]
        predicted = points.decide(probabilities, point)
        section["points"][point] = {
            "tau": tau,
            "accuracy": row["accuracy"],
            "balanced_accuracy": row["balanced_accuracy"],
            "macro_f1": float(f1_score(labels, predicted, labels=every, average="macro", zero_division=0)),
            "recall": dict(zip(class_names, row["recall"])),
            "confusion_matrix": confusion_matrix(labels, predicted, labels=every).tolist(),
        }
    section["curve"] = {"test": tradeoff_curve(labels, probabilities, points.priors), "validation": validation_curve}
    return section


def metrics(section: dict) -> dict:
    """MLflow metrics of the `balanced` point (the `accuracy` point's are the plain test_*),
    and both points' recall of the priority classes."""
    balanced = section["points"]["balanced"]
    logged = {"operating_point_tau": section["tau"]}
    logged.update({f"test_balanced_point_{key}": balanced[key] for key in ("accuracy", "balanced_accuracy", "macro_f1")})
    for name in section["priority_classes"]:
        logged[f"test_recall_{name}"] = section["points"]["accuracy"]["recall"][name]
        logged[f"test_balanced_point_recall_{name}"] = balanced["recall"][name]
    return logged


def to_markdown(section: dict) -> str:
    """Both points side by side, per-class recall with the priority classes first."""
    names = list(section["points"]["accuracy"]["recall"])
    order = section["priority_classes"] + [n for n in names if n not in section["priority_classes"]]
    lines = ["## Operating points (one model, two decision rules)", "",
             f"`balanced`: argmax of p(y|x) / prior(y)^tau with tau = {section['tau']:.2f} ({section['tau_source']}); "
             f"`accuracy`: argmax of p(y|x). Default of predict and serve: `{section['default']}`.", "",
             "| point | tau | accuracy | balanced accuracy | macro F1 | " + " | ".join(f"recall {n}" for n in order) + " |",
             "|---" * (5 + len(order)) + "|"]
    for point, row in section["points"].items():
        recalls = " | ".join(f"{row['recall'][n]:.3f}" for n in order)
        lines.append(f"| {point} | {row['tau']:.2f} | {row['accuracy']:.4f} | {row['balanced_accuracy']:.4f} | "
                     f"{row['macro_f1']:.4f} | {recalls} |")
    return "\n".join(lines) + "\n"


def plot_curve(section: dict, path):
    """Accuracy, balanced accuracy and priority-class recall against tau, test (solid) and
    validation (dashed, what tau was chosen on), the chosen tau marked."""

    plt = _pyplot()
    names = list(section["points"]["accuracy"]["recall"])
    figure, axis = plt.subplots(figsize=(7, 4.2))
    for split, style in (("test", "-"), ("validation", "--")):
        curve = section["curve"][split]
        if not curve:
            continue
        taus = [row["tau"] for row in curve]
        axis.plot(taus, [row["accuracy"] for row in curve], style, color="C0", label=f"accuracy ({split})")
        axis.plot(taus, [row["balanced_accuracy"] for row in curve], style, color="C1", label=f"balanced accuracy ({split})")
        for offset, name in enumerate(section["priority_classes"]):
            axis.plot(taus, [row["recall"][names.index(name)] for row in curve], style, color=f"C{2 + offset}",
                      label=f"recall {name} ({split})")
    axis.axvline(section["tau"], color="grey", linewidth=1)
    axis.set_xlabel("tau (0: the accuracy point)")
    axis.set_title(f"Logit adjustment trade-off; chosen tau = {section['tau']:.2f}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
