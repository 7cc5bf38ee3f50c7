"""Inference cost of each use case's exported SavedModel, called in-process (no HTTP, no JSON).

For each built-in use case (`pipelines.usecases.USECASES`): the newest export under the models root
(default: a scratch root under bench-results/inference/, trained once on the bundled samples,
1 epoch each, if it holds none), measured each in a fresh process:

- cold start: `tf.saved_model.load` plus the first call (TensorFlow already imported; its
  import time is shown apart),
- p50 / p99 latency of `serve` at batch 1, after 50 warm-up calls, over --calls calls,
- throughput at batch 256 (images or rows per second),
- for models with test-time views (clothing 2, skin 8): the same weights exported with one
  view, measured alike, and the ratio of the two.

Prints a table and writes bench-results/inference.{md,json}.

Usage: python benchmarks/bench_inference.py [--models-root DIR] [--calls 1000] [--usecases digits heart]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import record  # noqa: E402 - benchmarks/results.py, beside this script

from pipelines.usecases import USECASES

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
SCRATCH = RESULTS / "inference"
# The quickest training that yields an export: enough to measure serving, not to use.
QUICK_TRAINING = {
    "heart": ["--set", "cv_repeats=1", "--set", "cv_folds=2", "--set", "external_validation=false"],
    "cucumber": ["--set", "epochs=1", "--set", "fine_tune_epochs=0", "--set", "cv_folds=0"],
}
WARM_UP_CALLS = 50
LARGE_BATCH = 256


def newest_export(models_root: Path, usecase: str) -> Path | None:
    folder = models_root / usecase
    versions = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    return folder / str(versions[-1]) if versions else None


def ensure_export(models_root: Path, usecase: str) -> Path:
    found = newest_export(models_root, usecase)
    if found:
        return found
    print(f"[{usecase}] no export under {models_root}: training the bundled sample quickly (once) ...", flush=True)
    environment = {**os.environ, "PIPELINES_MODELS_ROOT": str(models_root),
                   "MLFLOW_TRACKING_URI": f"sqlite:///{models_root.parent / 'mlflow.db'}"}
    arguments = QUICK_TRAINING.get(usecase, ["--set", "epochs=1"])
    subprocess.run([sys.executable, "-m", "pipelines", "train", usecase, "--data", "sample", "--run-name", "bench-inference", *arguments],
                   cwd=REPO, env=environment, check=True, stdout=subprocess.DEVNULL)
    return newest_export(models_root, usecase)


# --- in the fresh process -------------------------------------------------------------------

def sample_inputs(usecase: str, count: int):
    """`count` real test inputs from the bundled sample (cycled if it has fewer)."""
    import numpy as np

    from pipelines.data.input_pipeline import as_model_inputs
    from pipelines.data.loaders import load_dataset
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    test = load_dataset(apply_overrides(get_spec(usecase), {"data.source": "sample"})).test
    inputs = as_model_inputs(test.x)
    take = np.arange(count) % len(test)
    if isinstance(inputs, dict):
        return {name: np.asarray(column)[take] for name, column in inputs.items()}
    return np.asarray(inputs)[take]


def serving_call(loaded, inputs):
    """A zero-argument function calling the model's serving endpoint on `inputs`, converted to
    tensors once beforehand (what is timed is the model, not NumPy -> tensor conversion)."""
    import numpy as np
    import tensorflow as tf

    if isinstance(inputs, dict):
        signature = loaded.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        tensors = {name: tf.constant(np.asarray(value), dtype=specs[name].dtype) for name, value in inputs.items()}
        return lambda: signature(**tensors)
    tensor = tf.constant(inputs)
    return lambda: loaded.serve(tensor)


def measure(model_dir: str, usecase: str, calls: int) -> dict:
    import numpy as np

    started = time.perf_counter()
    import tensorflow as tf

    import_seconds = time.perf_counter() - started
    one, many = sample_inputs(usecase, 1), sample_inputs(usecase, LARGE_BATCH)
    started = time.perf_counter()
    loaded = tf.saved_model.load(model_dir)
    call_one = serving_call(loaded, one)
    call_one()
    cold = time.perf_counter() - started
    for _ in range(WARM_UP_CALLS):
        call_one()
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        call_one()
        latencies.append(time.perf_counter() - started)
    call_many = serving_call(loaded, many)
    for _ in range(3):
        call_many()
    rounds = 10
    started = time.perf_counter()
    for _ in range(rounds):
        call_many()
    batch_seconds = (time.perf_counter() - started) / rounds
    return {"import_tensorflow_seconds": import_seconds, "cold_start_seconds": cold,
            "p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3),
            "batch_256_per_second": LARGE_BATCH / batch_seconds, "calls": calls}


def export_single_view(model_dir: str, usecase: str, target: str) -> None:
    """The same trained weights without test-time views, exported to `target`."""
    from pipelines.core.runtime import import_keras
    from pipelines.modeling.models import build_models, register_custom_layers
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    keras = import_keras()
    register_custom_layers()
    checkpoint = Path(model_dir).parent / "checkpoints" / "latest.keras"
    trained = keras.models.load_model(str(checkpoint))
    spec = apply_overrides(get_spec(usecase), {"model.test_time_augmentation": ""})
    single = build_models(spec).serving
    single.set_weights(trained.get_weights())  # the views add no weights: same list, same order
    single.export(target, format="tf_saved_model", verbose=False)


def child(arguments) -> int:
    sys.path.insert(0, str(REPO))
    from pipelines.core.runtime import import_keras

    if arguments.single_view_of:
        import_keras()
        export_single_view(arguments.single_view_of, arguments.usecase, arguments.model_dir)
        return 0
    result = measure(arguments.model_dir, arguments.usecase, arguments.calls)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --- the driver -------------------------------------------------------------------------------

def in_fresh_process(*arguments: str) -> dict:
    process = subprocess.run([sys.executable, __file__, "--child", *arguments], cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))[7:])


def views_of(model_dir: Path) -> int:
    """How many views the export averages over (2 ** the number of test-time transforms)."""
    metadata = json.loads((model_dir / "metadata.json").read_text())
    transforms = metadata.get("test_time_augmentation")
    if transforms is None:
        from pipelines.usecases import get_spec

        transforms = get_spec(metadata["usecase"]).model.test_time_augmentation
    return 2 ** len(transforms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-root", type=Path, default=SCRATCH / "models",
                        help="where the exports are (default: bench-results/inference/models, trained on the samples if empty)")
    parser.add_argument("--calls", type=int, default=1000, help="timed batch-1 calls per model (default 1000)")
    parser.add_argument("--usecases", nargs="+", default=list(USECASES), choices=USECASES)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--usecase", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--single-view-of", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        return child(arguments)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    rows = []
    for usecase in arguments.usecases:
        model_dir = ensure_export(arguments.models_root.resolve(), usecase)
        row = {"usecase": usecase, "model": str(model_dir), "views": views_of(model_dir),
               **in_fresh_process("--usecase", usecase, "--model-dir", str(model_dir), "--calls", str(arguments.calls))}
        if row["views"] > 1:
            with tempfile.TemporaryDirectory() as scratch:
                single = str(Path(scratch) / "single_view")
                subprocess.run([sys.executable, __file__, "--child", "--usecase", usecase, "--model-dir", single,
                                "--single-view-of", str(model_dir)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
                row["single_view"] = in_fresh_process("--usecase", usecase, "--model-dir", single, "--calls", str(arguments.calls))
        rows.append(row)
        print(f"{usecase:9} p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  batch 256: {row['batch_256_per_second']:.0f}/s  "
              f"cold start {row['cold_start_seconds']:.2f} s", flush=True)

    table = [f"# SavedModel `serve` in-process, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores\n",
             f"batch 1: {arguments.calls} timed calls after {WARM_UP_CALLS} warm-up calls; cold start = `tf.saved_model.load` + first "
             "call in a fresh process (TensorFlow already imported)\n",
             "| use case | views | p50 batch 1 (ms) | p99 batch 1 (ms) | batch 256 (per s) | cold start (s) "
             "| views' cost: p50 / batch-256 time vs one view |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        cost = "-"
        if "single_view" in row:
            single = row["single_view"]
            cost = (f"{row['p50_ms'] / single['p50_ms']:.2f}x / {single['batch_256_per_second'] / row['batch_256_per_second']:.2f}x "
                    f"(one view: p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms, {single['batch_256_per_second']:.0f}/s)")
        table.append(f"| {row['usecase']} | {row['views']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row['batch_256_per_second']:,.0f} | {row['cold_start_seconds']:.2f} | {cost} |")
    imports = [row["import_tensorflow_seconds"] for row in rows]
    table.append(f"\n`import tensorflow` before that: {min(imports):.1f}-{max(imports):.1f} s.")
    report = "\n".join(table) + "\n"
    print("\n" + report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference.md").write_text(report)
    (RESULTS / "inference.json").write_text(json.dumps(rows, indent=2))
    record("inference", "inference: the SavedModels in-process", "make bench-serve-local", report, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
