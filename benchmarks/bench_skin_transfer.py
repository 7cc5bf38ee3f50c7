"""DermaMNIST, official split: the skin spec's `residual_cnn` against ImageNet transfer learning
(MobileNet alpha 0.25 from models/pretrained/, the 28x28 images upsampled to 128 px inside the
model), in one command, on the same data with the same loss, augmentation and test-time views.
Prints, for both operating points of each model (pipelines/evaluation/operating_points.py), test accuracy,
balanced accuracy and melanoma recall, with macro AUC and wall time, side by side; records them
in benchmarks/RESULTS.md and bench-results/skin-transfer.{json,md}.

Usage: python benchmarks/bench_skin_transfer.py [--data-dir DIR] [--epochs N]
(--epochs shortens the residual_cnn side, default the spec's own; the transfer side is fixed below.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench_skin import rows_of  # both operating points of a run, as bench-skin reports them
from bench_usecase import RESULTS, full_data_spec
from results import record  # noqa: E402 - benchmarks/results.py, beside this script

# The transfer side: the skin spec with the pretrained backbone swapped in. `model.builder`
# comes first: it resets the model parameters to the builder's defaults (MobileNet alpha 0.25,
# 128 px backbone input, ImageNet weights, dropout 0.2). A few epochs train the new head on the
# frozen backbone, then the whole backbone but its BatchNorm is fine-tuned at a lower rate.
TRANSFER = {
    "model.builder": "transfer",
    "train.epochs": 5,
    "train.fine_tune_epochs": 25,
    "train.fine_tune_layers": 0,
    "train.fine_tune_learning_rate": 5e-4,
}


def describe(spec) -> str:
    epochs = f"{spec.train.epochs} epochs"
    if spec.train.fine_tune_epochs:
        layers = spec.train.fine_tune_layers or "all"
        epochs = (f"{spec.train.epochs} epochs frozen + {spec.train.fine_tune_epochs} fine-tuning {layers} layers "
                  f"at {spec.train.fine_tune_learning_rate:g}")
    if spec.model.builder == "transfer":
        params = spec.model.params
        return f"transfer ({params['backbone']} alpha {params['alpha']}, {params['image_size']} px, {params['weights']}), {epochs}"
    return f"{spec.model.builder} (the default spec), {epochs}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a folder with DermaMNIST (default: ../shared/data/skin)")
    parser.add_argument("--epochs", type=int, help="residual_cnn epochs (default: the spec's)")
    args = parser.parse_args()
    base = full_data_spec("skin", args.data_dir)
    from pipelines.pipeline import run_train
    from pipelines.tracking.tracker import mlflow_client
    from pipelines.usecases.settings import apply_overrides

    sides = [apply_overrides(base, {"train.epochs": args.epochs} if args.epochs else {}), apply_overrides(base, TRANSFER)]
    rows, runs = [], {}
    for spec in sides:
        started = time.perf_counter()
        summary = run_train(spec, run_name=f"bench-transfer-{spec.model.builder}")
        seconds = time.perf_counter() - started
        precision = mlflow_client().get_run(summary["run_id"]).data.tags.get("precision")
        rows += [{**row, "fit_seconds": summary["fit_seconds"], "precision": precision}
                 for row in rows_of(describe(spec), summary, seconds)]
        runs[spec.model.builder] = summary["run_id"]

    lines = [f"DermaMNIST official split, both sides with the skin spec's loss (class weights {base.train.class_weights}), "
             f"augmentation ({', '.join(base.model.augmentation)}), {2 ** len(base.model.test_time_augmentation)} test-time "
             f"views and seed {base.train.seed}; tau of the `balanced` point chosen on validation. Wall time is the whole "
             "`train` (fit, evaluation, Grad-CAM, export), one model after the other in one process.", "",
             "| model | operating point | tau | accuracy | balanced accuracy | melanoma recall | macro AUC | wall time | fit | precision |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | `{r['point']}` | {r['tau']:.2f} | {r['accuracy']:.4f} | {r['balanced_accuracy']:.4f} | "
              f"{r['recall mel']:.3f} | {r['macro AUC']:.4f} | {r['seconds']:.0f} s | {r['fit_seconds']:.0f} s | {r['precision']} |"
              for r in rows]
    lines += ["", "MLflow runs: " + ", ".join(f"{k} `{v}`" for k, v in runs.items()) + "."]
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "skin-transfer.md").write_text(report)
    (RESULTS / "skin-transfer.json").write_text(json.dumps({"rows": rows, "runs": runs}, indent=2, default=str))
    record("skin-transfer", "Skin: ImageNet transfer vs residual_cnn on DermaMNIST, one run",
           "make bench-skin-transfer" + (f" EPOCHS={args.epochs}" if args.epochs else ""), report, {"rows": rows, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
