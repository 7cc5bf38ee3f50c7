"""Full MNIST on this machine: the digits pipeline (default spec) against the keras-io
"Simple MNIST convnet" as published (batch 128, 15 epochs, validation_split 0.1), in one run.

Each side runs in its own process (TensorFlow's op-determinism switch is process-wide and
the reference runs without it, as published). Prints a side-by-side table and writes
bench-results/digits.{json,md}. Usage: python benchmarks/bench_digits.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from results import record  # noqa: E402 - benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "digits"


def reference(data_dir: str | None) -> dict:
    """https://keras.io/examples/vision/mnist_convnet/, unchanged but for the data source."""
    sys.path.insert(0, str(REPO))
    from pipelines.core.runtime import import_keras

    keras = import_keras()
    import numpy as np

    from pipelines.data.loaders import get_loader
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    spec = apply_overrides(get_spec("digits"), {"data.data_dir": data_dir} if data_dir else {})
    data = get_loader("mnist_format")(spec)  # the official 60k/10k split, no val carved
    keras.utils.set_random_seed(0)
    x_train = np.expand_dims(data.train.x.astype("float32") / 255, -1)
    x_test = np.expand_dims(data.test.x.astype("float32") / 255, -1)
    y_train = keras.utils.to_categorical(data.train.y, 10)
    y_test = keras.utils.to_categorical(data.test.y, 10)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=128, epochs=15, validation_split=0.1, verbose=2)
    seconds = time.perf_counter() - started
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return {"name": "keras-io simple MNIST convnet", "epochs": 15, "fit_seconds": seconds,
            "images_per_second": 54000 * 15 / seconds, "test_accuracy": float(accuracy), "params": model.count_params()}


def ours(data_dir: str | None) -> dict:
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{RESULTS / 'mlflow.db'}")
    os.environ.setdefault("PIPELINES_MODELS_ROOT", str(RESULTS / "models"))
    sys.path.insert(0, str(REPO))
    from pipelines.pipeline import run_train
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    spec = apply_overrides(get_spec("digits"), {"data.data_dir": data_dir} if data_dir else {})
    started = time.perf_counter()
    summary = run_train(spec, run_name="bench")
    total = time.perf_counter() - started
    return {"name": "pipelines digits (default spec)", "epochs": spec.train.epochs, "fit_seconds": summary["fit_seconds"],
            "images_per_second": summary["train_examples"] * summary["epochs_run"] / summary["fit_seconds"],
            "test_accuracy": summary["test"]["accuracy"], "pipeline_seconds": total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None)
    parser.add_argument("--only", choices=("reference", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        result = (reference if args.only == "reference" else ours)(args.data_dir)
        print("RESULT " + json.dumps(result))
        return 0
    RESULTS.mkdir(exist_ok=True)
    rows = []
    for side in ("reference", "ours"):
        print(f"--- {side} ---", flush=True)
        command = [sys.executable, __file__, "--only", side] + (["--data-dir", args.data_dir] if args.data_dir else [])
        process = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        sys.stdout.write("".join(line + "\n" for line in process.stdout.splitlines() if not line.startswith("RESULT ")))
        if process.returncode:
            return process.returncode
        rows.append(json.loads(next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))[7:]))
    table = ["| model | epochs | fit wall time (s) | train images/s | test accuracy |", "|---|---|---|---|---|"]
    table += [f"| {r['name']} | {r['epochs']} | {r['fit_seconds']:.1f} | {r['images_per_second']:.0f} | {r['test_accuracy']:.4f} |"
              for r in rows]
    verdict = (
        f"ours: {rows[1]['test_accuracy']:.4f} accuracy in {rows[1]['fit_seconds']:.0f} s; "
        f"reference: {rows[0]['test_accuracy']:.4f} in {rows[0]['fit_seconds']:.0f} s "
        f"({rows[0]['fit_seconds'] / rows[1]['fit_seconds']:.2f}x the wall time)"
    )
    report = "\n".join(table) + "\n\n" + verdict + "\n"
    print("\n" + report)
    (RESULTS / "digits.md").write_text(f"# digits benchmark, {time.strftime('%Y-%m-%d %H:%M')}\n\n" + report)
    (RESULTS / "digits.json").write_text(json.dumps(rows, indent=2))
    record("digits", "digits: full MNIST, this pipeline vs the keras-io convnet", "make bench-digits", report, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
