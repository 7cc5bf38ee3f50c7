"""Skin: one model, two operating points, beside the class-weighted alternative, in one run.

Trains the default skin spec (unweighted loss) and the same spec with `class_weights=0.5` (the
previous default) on full DermaMNIST (official split), and reports each model's `accuracy`
and `balanced` operating points (pipelines/evaluation/operating_points.py; tau chosen on the validation
split) on the official test split, beside the issue's targets and the MedMNIST v2 figures.
Writes the `skin` section of benchmarks/RESULTS.md and bench-results/skin.{md,json}.

Usage: python benchmarks/bench_skin.py [--data-dir DIR] [--epochs N] [--only default]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from results import record  # noqa: E402 - benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
SHARED = REPO.parent / "shared" / "data" / "skin"

MODELS = {
    "default": ("unweighted loss (the default)", {}),
    "weighted": ("class_weights=0.5 (the previous default)", {"train.class_weights": 0.5}),
}
# Issue 16, from one model: accuracy at `accuracy`; balanced accuracy and melanoma recall at `balanced`; AUC.
TARGETS = {("accuracy", "accuracy"): 0.77, ("balanced", "balanced_accuracy"): 0.63, ("balanced", "recall mel"): 0.60,
           ("any", "macro AUC"): 0.94}
REFERENCES = [("MedMNIST v2: ResNet-18 (28)", "accuracy 0.735, AUC 0.917"),
              ("MedMNIST v2: Google AutoML Vision", "accuracy 0.768, AUC 0.914")]


def rows_of(label: str, summary: dict, seconds: float) -> list[dict]:
    report = summary["report"]
    section = report["operating_points"]
    return [{"model": label, "point": point, "tau": row["tau"], "accuracy": row["accuracy"],
             "balanced_accuracy": row["balanced_accuracy"], "recall mel": row["recall"]["mel"],
             "macro AUC": report["macro_auc_ovr"], "seconds": seconds}
            for point, row in section["points"].items()]


def targets_met(rows: list[dict]) -> list[str]:
    lines = []
    for (point, metric), target in TARGETS.items():
        row = next(r for r in rows if point in ("any", r["point"]))
        value = row[metric]
        lines.append(f"- {metric} at `{row['point'] if point != 'any' else 'either'}`: {value:.4f} "
                     f"(target >= {target}: {'met' if value >= target else 'NOT met'})")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(SHARED) if SHARED.is_dir() else None)
    parser.add_argument("--epochs", type=int, help="override train.epochs (default: the spec's)")
    parser.add_argument("--only", choices=sorted(MODELS), help="train only this model")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("no DermaMNIST here: pass --data-dir DIR (dermamnist.npz or train/val/test.npz)")
    RESULTS.mkdir(exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{RESULTS / 'mlflow.db'}")
    os.environ.setdefault("PIPELINES_MODELS_ROOT", str(RESULTS / "models"))
    sys.path.insert(0, str(REPO))
    from pipelines.pipeline import run_train
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    rows, runs = [], {}
    for key, (label, overrides) in MODELS.items():
        if args.only and key != args.only:
            continue
        spec = apply_overrides(get_spec("skin"), {"data.data_dir": args.data_dir, **overrides,
                                                  **({"train.epochs": args.epochs} if args.epochs else {})})
        started = time.perf_counter()
        summary = run_train(spec, run_name=f"bench-skin {key}")
        rows += rows_of(label, summary, time.perf_counter() - started)
        runs[key] = summary["run_id"]

    lines = ["| model | operating point | tau | accuracy | balanced accuracy | melanoma recall | macro AUC | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | `{r['point']}` | {r['tau']:.2f} | {r['accuracy']:.4f} | {r['balanced_accuracy']:.4f} | "
              f"{r['recall mel']:.3f} | {r['macro AUC']:.4f} | {r['seconds']:.0f} s |" for r in rows]
    default_rows = [r for r in rows if r["model"] == MODELS["default"][0]]
    if default_rows:
        lines += ["", "Targets (issue 16), from the default model:"] + targets_met(default_rows)
    lines += ["", "Published, same test split (accuracy at argmax): " + "; ".join(f"{n}: {f}" for n, f in REFERENCES),
              "", "MLflow runs: " + ", ".join(f"{k} `{v}`" for k, v in runs.items()) + " (each logs "
              "`evaluation/operating_points.png`, the trade-off curve over tau 0-1 on validation and test)."]
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    (RESULTS / "skin.md").write_text(report)
    (RESULTS / "skin.json").write_text(json.dumps({"rows": rows, "runs": runs}, indent=2))
    record("skin", "Skin: one model, two operating points, beside class weights (full DermaMNIST)",
           "make bench-skin" + (f" (--epochs {args.epochs})" if args.epochs else ""), report, {"rows": rows, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
