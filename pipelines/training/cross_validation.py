"""Repeated stratified k-fold cross-validation: one protocol for every task that judges a
model this way (the tabular task always, an image task with `--set cv_folds=5`).

- `splits`: the folds, scikit-learn's `RepeatedStratifiedKFold` seeded by `train.seed`, so
  every model trained with the same seed on the same labels sees the same folds;
- `run`: fits and scores each fold through the task's callback, logs each fold's metrics on
  the MLflow run with the fold index as the step, and pools the out-of-fold predictions;
  with a `cache` folder a fold already done (a run killed and started again) is read back,
  not fitted again;
- `summarise`: mean and sd over the folds.

MLflow names: `fold_[<model>_]<metric>` per fold (step = fold index) and
`cv_[<model>_]<metric>_<mean|sd>` on the run; `<model>` is left out where one model is
validated (an image run), and names the model where several share the folds (the tabular
task's `keras` and `baseline`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.core.console import say

STATISTICS = ("mean", "sd")


def splits(y: np.ndarray, folds: int, repeats: int, seed: int, groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training indices, held-out indices) of every fold, repeat after repeat. With `groups`
    (a label per example) holding at least `folds` groups, the folds are grouped: the examples
    of one group (a site, a patient) are all held out together, never on both sides."""
    from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedGroupKFold

    if is_grouped(groups, folds):
        # scikit-learn has no repeated grouped splitter: each repeat reshuffles with its own seed.
        return [fold for repeat in range(repeats)
                for fold in StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + repeat).split(
                    np.zeros(len(y)), y, groups)]
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def is_grouped(groups: np.ndarray | None, folds: int) -> bool:
    return groups is not None and len(set(groups.tolist())) >= folds


def describe(validation, examples: int, grouped: bool = False) -> str:
    """One line naming the protocol, for reports, metadata and the console."""
    repeats = f" x {validation.cv_repeats} repeats" if validation.cv_repeats > 1 else ""
    kind = "grouped stratified" if grouped else "repeated stratified"
    return f"{kind} {validation.cv_folds}-fold cross-validation{repeats} over {examples} examples"


def summarise(folds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """metric -> {"mean", "sd"} over the folds; a metric a fold could not measure (AUC with a
    class missing from its held-out part) is left out of that fold's figures, not counted as 0."""
    names = list(dict.fromkeys(name for fold in folds for name in fold))
    summary = {}
    for name in names:
        values = np.array([fold.get(name, np.nan) for fold in folds], dtype=float)
        measured = values[np.isfinite(values)]
        summary[name] = {
            "mean": float(measured.mean()) if len(measured) else float("nan"),
            "sd": float(measured.std(ddof=1)) if len(measured) > 1 else float("nan"),
        }
    return summary


def metric_name(model: str, metric: str, statistic: str | None = None) -> str:
    """`cv_accuracy_mean`, `cv_keras_roc_auc_sd`; without a statistic the per-fold name, `fold_accuracy`."""
    stem = f"{model}_{metric}" if model else metric
    return f"fold_{stem}" if statistic is None else f"cv_{stem}_{statistic}"


def run_metrics(summaries: dict[str, dict]) -> dict[str, float]:
    """The run-level MLflow metrics of `{model: summary}`; non-finite values are not logged."""
    return {metric_name(model, metric, statistic): values[statistic]
            for model, summary in summaries.items() for metric, values in summary.items()
            for statistic in STATISTICS if np.isfinite(values[statistic])}


def ranking_metric(held_out_metric: str) -> str:
    """What ranks a cross-validated run where a held-out one is ranked by `held_out_metric`:
    the CV mean of the same metric (`test_accuracy` -> `cv_accuracy_mean`)."""
    if not held_out_metric.startswith("test_"):
        return held_out_metric  # already a CV metric (heart's `cv_keras_roc_auc_mean`)
    return metric_name("", held_out_metric[len("test_"):], "mean")


# fit_fold(index, training indices, held-out indices) -> {model: (metrics, held-out predictions)}
FoldFitter = Callable[[int, np.ndarray, np.ndarray], dict]


def run(validation, seed: int, y: np.ndarray, fit_fold: FoldFitter, tracker=None, shown: tuple = ("accuracy",),
        cache: Path | None = None, groups: np.ndarray | None = None) -> dict:
    """Cross-validate: `fit_fold` fits every model on a fold's training part and scores it on
    the held-out part (grouped folds with `groups`, see `splits`). Returns {"folds": {model: [metrics per fold]}, "summary": {model:
    summary}, "out_of_fold": {model: pooled predictions, "y": labels, "index": row indices},
    "seconds": [per fold], "splits": the folds}."""
    folds = splits(y, validation.cv_folds, validation.cv_repeats, seed, groups)
    per_model: dict[str, list] = {}
    pooled: dict[str, list] = {"y": [], "index": []}
    seconds = []
    for index, (train, held) in enumerate(folds):
        done = _read_fold(cache, index)
        if done is None:
            started = time.perf_counter()
            results = fit_fold(index, train, held)
            seconds.append(time.perf_counter() - started)
            _write_fold(cache, index, results, seconds[-1])
            if tracker is not None:  # a fold read back was logged by the run that fitted it
                values = {metric_name(model, k): v for model, (scores, _) in results.items() for k, v in scores.items()}
                tracker.log_metrics({**{k: v for k, v in values.items() if np.isfinite(v)}, "fold_seconds": seconds[-1]}, step=index)
        else:
            results, fold_seconds = done
            seconds.append(fold_seconds)
        for model, (scores, predictions) in results.items():
            per_model.setdefault(model, []).append(scores)
            pooled.setdefault(model, []).append(predictions)
        pooled["y"].append(y[held])
        pooled["index"].append(held)
        figures = "; ".join(f"{model + ' ' if model else ''}" + "/".join(f"{scores.get(k, float('nan')):.3f}" for k in shown)
                            for model, (scores, _) in results.items())
        say(f"  fold {index + 1}/{len(folds)}{' (read back: done before)' if done else ''}: {'/'.join(shown)} {figures}, "
            f"{seconds[-1]:.0f} s")
    return {"folds": per_model, "summary": {model: summarise(scores) for model, scores in per_model.items()},
            "out_of_fold": {k: np.concatenate(v) for k, v in pooled.items()}, "seconds": seconds, "splits": folds}


def _fold_file(cache: Path, index: int) -> Path:
    return cache / f"fold-{index}.npz"


def _write_fold(cache: Path | None, index: int, results: dict, seconds: float) -> None:
    if cache is None:
        return
    cache.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"scores": {model: scores for model, (scores, _) in results.items()}, "seconds": seconds})
    arrays = {f"p_{model}": np.asarray(predictions) for model, (_, predictions) in results.items()}
    staging = cache / f".fold-{index}.npz"
    with open(staging, "wb") as handle:  # np.savez on a path would add ".npz" to the staging name
        np.savez(handle, record=np.array(record), **arrays)
    staging.replace(_fold_file(cache, index))  # atomic: a fold is on disk whole or not at all


def _read_fold(cache: Path | None, index: int) -> tuple[dict, float] | None:
    if cache is None or not _fold_file(cache, index).is_file():
        return None
    with np.load(_fold_file(cache, index)) as saved:
        record = json.loads(str(saved["record"]))
        results = {model: (scores, saved[f"p_{model}"]) for model, scores in record["scores"].items()}
    return results, record["seconds"]


def summary_table(rows: dict[str, dict], metrics: list[str], extra: dict[str, dict] | None = None) -> list[str]:
    """A Markdown table, one row per model: `mean +- sd` of each metric, then `extra` columns
    ({column: {row: text}})."""
    extra = extra or {}
    lines = ["| model | " + " | ".join([*metrics, *extra]) + " |", "|---" * (len(metrics) + len(extra) + 1) + "|"]
    for name, summary in rows.items():
        cells = [f"{summary[k]['mean']:.3f} +- {summary[k]['sd']:.3f}" if k in summary else "-" for k in metrics]
        cells += [str(column.get(name, "")) for column in extra.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
