"""Training throughput of our `train` against a bare Keras `fit` of the same model, on the
same device, in the same process: does our input pipeline and callback stack cost anything?

For digits (`small_cnn`), clothing (`residual_cnn`) and cucumber (`transfer`), on the data
bundled in data/samples/ (or the full data with --full):

- **ours**: `pipelines.training.fit.train` (the `train` verb's fit: tf.data or NumPy input,
  seeded shuffle stream, schedule, callbacks), with an epoch timer added;
- **bare**: the very same model (same builder, augmentation, precision, optimizer and
  schedule) fitted with `model.fit(x, y, batch_size=..., validation_data=...)` on in-memory
  NumPy arrays.

Reports images/s after warm-up (the first epoch, which compiles, is left out), time per epoch
and test accuracy, with the backend, precision and device. On a GPU this is the real
measurement (run it with KERAS_BACKEND=jax where TensorFlow is absent); on a CPU it says it
found no GPU and measures the CPU. Writes bench-results/gpu.{md,json}.

Usage: python benchmarks/bench_gpu.py [--epochs 3] [--usecases digits clothing cucumber] [--full]
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
USECASES = ("digits", "clothing", "cucumber")


def epoch_timer():
    """A callback keeping each epoch's wall time (ends on the host, after the epoch's last step)."""
    from pipelines.core.runtime import import_keras

    keras = import_keras()

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._started)

    return EpochTimer()


def device_description() -> tuple[str, bool]:
    """(what trains, whether it is a GPU), from the backend in use."""
    from pipelines.core.runtime import import_keras

    keras = import_keras()
    if keras.backend.backend() == "jax":
        import jax

        devices = jax.devices()
        gpus = [d for d in devices if d.platform == "gpu"]
        return (f"{len(gpus)} x {gpus[0].device_kind}" if gpus else f"CPU ({len(devices)} JAX device)"), bool(gpus)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        return f"{len(gpus)} x {name}", True
    return f"CPU ({os.cpu_count()} cores)", False


def bench_spec(usecase: str, epochs: int, full: bool):
    """The default spec, shortened: `epochs` epochs, no fine-tuning phase, no early stop (so
    both sides run the same number of identical epochs)."""
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    overrides = {"train.epochs": epochs, "train.fine_tune_epochs": 0, "train.early_stopping_patience": 0,
                 "train.warmup_epochs": 0}
    if not full:
        overrides["data.source"] = "sample"
    return apply_overrides(get_spec(usecase), overrides)


def throughput(examples_per_epoch: int, seconds: list[float]) -> float:
    after_warm_up = seconds[1:] or seconds
    return examples_per_epoch * len(after_warm_up) / sum(after_warm_up)


def test_accuracy(model, dataset) -> float:
    import numpy as np

    from pipelines.training.fit import predict_probabilities

    return float(np.mean(np.argmax(predict_probabilities(model, dataset.test.x), axis=1) == dataset.test.y))


def run_ours(spec, dataset) -> dict:
    from pipelines.training import fit

    timer = epoch_timer()
    result = fit.train(spec, dataset, callbacks=(timer,))
    examples = result.batching["process_examples_per_epoch"] if result.distribution.cluster else len(dataset.train)
    return {"side": "ours (train)", "epoch_seconds": timer.seconds, "images_per_second": throughput(examples, timer.seconds),
            "test_accuracy": test_accuracy(result.models.serving, dataset), "precision": result.distribution.precision,
            "batch": result.batching["global_batch"]}


def run_bare(spec, dataset, precision: str, batch: int) -> dict:
    """The same model and optimizer, `fit` on arrays: Keras' own batching, nothing of ours."""
    import math

    from pipelines.core.runtime import import_keras, seed_everything
    from pipelines.data.input_pipeline import as_model_inputs
    from pipelines.modeling.models import build_models
    from pipelines.training.fit import compile_for_training

    keras = import_keras()
    seed_everything(spec.train.seed, deterministic=False)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        models = build_models(spec, dataset)
        compile_for_training(models, spec, math.ceil(len(dataset.train) / batch))
        timer = epoch_timer()
        # Validated every epoch like ours, so both epoch times hold the same work.
        validation = (as_model_inputs(dataset.val.x), dataset.val.y) if len(dataset.val) else None
        models.training.fit(as_model_inputs(dataset.train.x), dataset.train.y, batch_size=batch, epochs=spec.train.epochs,
                            shuffle=True, validation_data=validation, callbacks=[timer], verbose=0)
        accuracy = test_accuracy(models.serving, dataset)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return {"side": "bare fit on arrays", "epoch_seconds": timer.seconds,
            "images_per_second": throughput(len(dataset.train), timer.seconds), "test_accuracy": accuracy,
            "precision": precision, "batch": batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per side; the first is warm-up (default 3)")
    parser.add_argument("--usecases", nargs="+", default=list(USECASES), choices=USECASES)
    parser.add_argument("--full", action="store_true", help="full data sets instead of the bundled samples")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is warm-up)")

    sys.path.insert(0, str(REPO))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{RESULTS / 'gpu' / 'mlflow.db'}")
    os.environ.setdefault("PIPELINES_MODELS_ROOT", str(RESULTS / "gpu" / "models"))
    from pipelines.core.runtime import import_keras
    from pipelines.data.loaders import load_dataset

    keras = import_keras()
    device, on_gpu = device_description()
    backend = keras.backend.backend()
    print(f"backend {backend}, device {device}" + ("" if on_gpu else ": no GPU found, measuring the CPU"), flush=True)

    rows = []
    for usecase in args.usecases:
        spec = bench_spec(usecase, args.epochs, args.full)
        dataset = load_dataset(spec)
        print(f"--- {usecase} ({spec.model.builder}): {len(dataset.train)} training images, {args.epochs} epochs per side", flush=True)
        ours = run_ours(spec, dataset)
        bare = run_bare(spec, dataset, ours["precision"], ours["batch"])
        for row in (ours, bare):
            rows.append({"usecase": usecase, "builder": spec.model.builder, "train_images": len(dataset.train), **row})
            print(f"{usecase:9} {row['side']:19} {row['images_per_second']:8.0f} images/s  "
                  f"epochs {', '.join(f'{s:.1f}' for s in row['epoch_seconds'])} s  accuracy {row['test_accuracy']:.4f}", flush=True)

    header = (f"# Training throughput, ours vs bare `fit`, {time.strftime('%Y-%m-%d %H:%M')}\n\n"
              f"backend {backend}, device {device}{'' if on_gpu else ' (no GPU found)'}, "
              f"{'full data' if args.full else 'bundled samples'}, {args.epochs} epochs per side (first = warm-up)\n\n")
    table = ["| use case | model | side | precision | batch | images/s after warm-up | s/epoch after warm-up | test accuracy "
             "| ours / bare |",
             "|---|---|---|---|---|---|---|---|---|"]
    for index, row in enumerate(rows):
        warm = row["epoch_seconds"][1:]
        ratio = row["images_per_second"] / rows[index + 1]["images_per_second"] if index % 2 == 0 else 1.0
        table.append(f"| {row['usecase']} | {row['builder']} | {row['side']} | {row['precision']} | {row['batch']} | "
                     f"{row['images_per_second']:.0f} | {sum(warm) / len(warm):.2f} | {row['test_accuracy']:.4f} | "
                     f"{ratio:.2f} |")
    report = header + "\n".join(table) + "\n"
    print("\n" + report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu.md").write_text(report)
    (RESULTS / "gpu.json").write_text(json.dumps({"backend": backend, "device": device, "gpu": on_gpu, "rows": rows}, indent=2))
    record("gpu" if on_gpu else "train-throughput-cpu", f"training throughput, our train vs a bare fit ({device})", "make bench-gpu",
           report, {"backend": backend, "device": device, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
