"""LiteRT int8 / float16 and ONNX against the SavedModel, per image use case, on the full data.

For digits, clothing, skin and cucumber: the newest export under the models root (default: a
scratch root under bench-results/edge/; if it holds none, trained there once, on the full data
when it is there (a short budget: FULL_TRAINING), else on the bundled sample) is converted with
`python -m pipelines export <usecase> --format litert|onnx`, which verifies every file with
its own runtime on the test split of the full data (`--data-dir`, default
../shared/data/<usecase>) and refuses it past 1% disagreement or one point of accuracy. Then, each in a fresh process on this CPU:

- file size: the SavedModel's float32 variables vs each file;
- batch-1 latency, p50 / p99 over --calls calls after 50 warm-up calls, with 1 and 2 threads
  (the SavedModel: `serve` in-process, TensorFlow's default thread pools);
- throughput at batch 64 (images per second), 2 threads.

Prints a table and records it in benchmarks/RESULTS.md (section `edge`).

Usage: python benchmarks/bench_edge.py [--usecases digits] [--models-root DIR] [--data-dir DIR] [--calls 1000]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from results import record, shown_path  # noqa: E402 - benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SCRATCH = REPO / "bench-results" / "edge"
USECASES = ("digits", "clothing", "skin", "cucumber")
QUICK_TRAINING = {  # on the bundled sample: seconds, weak models (the int8 gate may refuse them)
    "digits": ["--set", "epochs=2"],
    "clothing": ["--set", "epochs=2"],
    "skin": ["--set", "epochs=3"],
    "cucumber": ["--set", "epochs=2", "--set", "fine_tune_epochs=0", "--set", "cv_folds=0"],
}
# On the full data, a few minutes each on 2 cores (the specs' full budgets take 10-36 min): models
# good enough that int8's agreement measures the conversion, not a model at chance. Cucumber's
# "full" data is the bundled 495 images: its own spec, one 80/20 split instead of CV.
FULL_TRAINING = {
    "digits": ["--set", "epochs=2"],
    "clothing": ["--set", "epochs=3"],
    "skin": ["--set", "epochs=6"],
    "cucumber": ["--set", "cv_folds=0"],
}
WARM_UP_CALLS = 50
LARGE_BATCH = 64
FILES = (("litert int8", "litert/model_int8.tflite"), ("litert float16", "litert/model_float16.tflite"), ("onnx", "onnx/model.onnx"))


def environment(models_root: Path) -> dict:
    return {**os.environ, "PIPELINES_MODELS_ROOT": str(models_root), "MLFLOW_TRACKING_URI": f"sqlite:///{models_root.parent / 'mlflow.db'}",
            "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_DISABLE_TELEMETRY": "true"}


def newest_export(models_root: Path, usecase: str) -> Path | None:
    folder = models_root / usecase
    versions = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    return folder / str(versions[-1]) if versions else None


def ensure_export(models_root: Path, usecase: str, data_dir: str | None) -> Path:
    found = newest_export(models_root, usecase)
    if found:
        return found
    data = ["--data-dir", data_dir, *FULL_TRAINING[usecase]] if data_dir else ["--data", "sample", *QUICK_TRAINING[usecase]]
    print(f"[{usecase}] no export under {shown_path(models_root)}: training once on "
          f"{shown_path(data_dir) if data_dir else 'the bundled sample'} ({' '.join(data[2:])}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "pipelines", "train", usecase, *data, "--run-name", "bench-edge"],
                   cwd=REPO, env=environment(models_root), check=True, stdout=subprocess.DEVNULL)
    return newest_export(models_root, usecase)


def convert(models_root: Path, usecase: str, model_dir: Path, data_dir: str | None) -> dict:
    """Both formats through the CLI (its verification on the full test split); a refusal is a row too."""
    outcome = {}
    for fmt in ("litert", "onnx"):
        command = [sys.executable, "-m", "pipelines", "export", usecase, "--format", fmt, "--model", str(model_dir)]
        if data_dir:
            command += ["--data-dir", data_dir]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=environment(models_root), capture_output=True, text=True)
        outcome[fmt] = {"seconds": time.perf_counter() - started, "returncode": done.returncode,
                        "error": done.stderr.strip().splitlines()[-1] if done.returncode else None}
        print(f"[{usecase}] {fmt}: "
              + (f"refused: {outcome[fmt]['error']}" if done.returncode else f"exported ({outcome[fmt]['seconds']:.0f} s)"),
              flush=True)
    return outcome


# --- in the fresh process -------------------------------------------------------------------

def test_images(usecase: str, model_dir: str, count: int):
    import numpy as np

    """`count` real test images of the bundled sample (cycled): what is timed is the model, not loading."""
    metadata = json.loads((Path(model_dir) / "metadata.json").read_text())
    from pipelines.data.loaders import load_dataset
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    test = load_dataset(apply_overrides(get_spec(usecase), {"data.source": "sample"})).test
    take = np.arange(count) % len(test)
    images = test.x[take]
    assert list(images.shape[1:]) == metadata["input_shape"], (images.shape, metadata["input_shape"])
    return images


def timed(call, calls: int) -> dict:
    import numpy as np

    for _ in range(WARM_UP_CALLS):
        call()
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
    return {"p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3)}


def throughput(call, rounds: int = 20) -> float:
    for _ in range(3):
        call()
    started = time.perf_counter()
    for _ in range(rounds):
        call()
    return LARGE_BATCH * rounds / (time.perf_counter() - started)


def measure_file(path: str, usecase: str, model_dir: str, calls: int) -> dict:
    from pipelines.serving.device_predict import load_model  # the runtimes alone, no TensorFlow

    one, many = test_images(usecase, model_dir, 1), test_images(usecase, model_dir, LARGE_BATCH)
    row = {}
    for threads in (1, 2):
        predict = load_model(Path(path), threads).predict
        row[f"threads_{threads}"] = timed(functools.partial(predict, one), calls)
        if threads == 2:
            row["batch_64_per_second"] = throughput(functools.partial(predict, many, batch_size=LARGE_BATCH))
    row["tensorflow_imported"] = "tensorflow" in sys.modules
    return row


def measure_savedmodel(usecase: str, model_dir: str, calls: int) -> dict:
    import tensorflow as tf

    one, many = test_images(usecase, model_dir, 1), test_images(usecase, model_dir, LARGE_BATCH)
    loaded = tf.saved_model.load(model_dir)
    tensor_one, tensor_many = tf.constant(one), tf.constant(many)
    return {"threads_default": timed(lambda: loaded.serve(tensor_one), calls),
            "batch_64_per_second": throughput(lambda: loaded.serve(tensor_many))}


def child(arguments) -> int:
    sys.path.insert(0, str(REPO))
    if arguments.file:
        result = measure_file(arguments.file, arguments.usecase, arguments.model_dir, arguments.calls)
    else:
        from pipelines.core.runtime import import_keras

        import_keras()
        result = measure_savedmodel(arguments.usecase, arguments.model_dir, arguments.calls)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --- the driver -------------------------------------------------------------------------------

def in_fresh_process(models_root: Path, *arguments: str) -> dict:
    process = subprocess.run([sys.executable, __file__, "--child", *arguments], cwd=REPO, stdout=subprocess.PIPE, text=True, check=True,
                             env=environment(models_root))
    return json.loads(next(line for line in process.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usecases", nargs="+", default=list(USECASES), choices=USECASES)
    parser.add_argument("--models-root", type=Path, default=SCRATCH / "models",
                        help="where the exports are (default: bench-results/edge/models, trained on the samples if empty)")
    parser.add_argument("--data-dir", help="the full data of the one use case given (default: ../shared/data/<usecase>)")
    parser.add_argument("--calls", type=int, default=1000, help="timed batch-1 calls per file and thread count (default 1000)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--usecase", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        return child(arguments)
    if arguments.data_dir and len(arguments.usecases) != 1:
        parser.error("--data-dir names the data of one use case: give --usecases with one name")
    models_root = arguments.models_root.resolve()
    sys.path.insert(0, str(REPO))
    from pipelines.export.edge import view_transforms

    rows = []
    for usecase in arguments.usecases:
        data_dir = arguments.data_dir or (str(SHARED / usecase) if (SHARED / usecase).is_dir() else None)
        model_dir = ensure_export(models_root, usecase, data_dir)
        conversions = convert(models_root, usecase, model_dir, data_dir)
        metadata = json.loads((model_dir / "metadata.json").read_text())
        variables = sum(p.stat().st_size for p in (model_dir / "variables").iterdir())
        common = ["--usecase", usecase, "--model-dir", str(model_dir), "--calls", str(arguments.calls)]
        saved = in_fresh_process(models_root, *common)
        data = shown_path(data_dir) if data_dir else "sample"
        rows.append({"usecase": usecase, "file": "SavedModel (variables)", "bytes": variables, "data": data,
                     "views": 2 ** len(view_transforms(metadata)), "epochs_run": metadata.get("epochs_run"), **saved})
        for label, relative in FILES:
            fmt = relative.split("/")[0]
            if conversions[fmt]["returncode"]:
                rows.append({"usecase": usecase, "file": label, "refused": conversions[fmt]["error"]})
                continue
            entry, name = metadata["exports"][fmt], relative.split("/")[1]
            if name in entry.get("refused", {}):  # converted and verified, left out by its gate
                rows.append({"usecase": usecase, "file": label, "refused": "not published (past the gate)",
                             **entry["refused"][name]["verification"]})
                continue
            info = entry["files"][name]
            measured = in_fresh_process(models_root, *common, "--file", str(model_dir / relative))
            rows.append({"usecase": usecase, "file": label, "bytes": info["bytes"], **info["verification"], **measured})
        print(f"[{usecase}] measured", flush=True)

    trained = "; ".join(f"{row['usecase']} {row['epochs_run']} epochs" for row in rows if "epochs_run" in row)
    models = (f"The models: the newest version under {shown_path(models_root)}, trained on the data it is verified on "
              f"({trained}; the benchmark's own short budgets, FULL_TRAINING in benchmarks/bench_edge.py, when it trains them).")
    load = (f"Load average (1 min) at the end of the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, this benchmark "
            "included (it times with 1 or 2 threads): more than that is other jobs, which shows in the p99 figures first.")
    markdown = f"{to_markdown(rows)}\n\n{models}\n\n{load}"
    print(markdown)
    command = "make bench-edge" + ("" if list(arguments.usecases) == list(USECASES)
                                   else f" EDGE_USECASES=\"{' '.join(arguments.usecases)}\"")
    record("edge", "Devices and other stacks: LiteRT int8 / float16 and ONNX vs the SavedModel", command, markdown, rows)
    return 0


def to_markdown(rows: list[dict]) -> str:
    lines = ["Sizes, batch-1 latency on this CPU (p50 / p99 ms, 1 and 2 threads; the SavedModel with TensorFlow's own pools), "
             "batch-64 throughput (2 threads), and each file's verification by its own runtime on the whole test split "
             "(argmax agreement with the SavedModel; accuracy beside the SavedModel's).", "",
             "| use case | file | size | p50 / p99, 1 thread | p50 / p99, 2 threads | batch 64 (per s) | test images | agreement "
             "| accuracy (SavedModel) | macro AUC (SavedModel) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        auc = next((k for k in ("macro_auc_ovr", "roc_auc") if k in row), None)
        auc_text = f"{row[auc]:.4f} ({row['savedmodel_' + auc]:.4f})" if auc else "-"
        if "refused" in row and "argmax_agreement" in row:
            lines.append(f"| {row['usecase']} | {row['file']} | {row['refused']} | | | | {row['examples']:,} | "
                         f"**{row['argmax_agreement']:.2%}** | {row['accuracy']:.4f} ({row['savedmodel_accuracy']:.4f}) | {auc_text} |")
            continue
        if "refused" in row:
            lines.append(f"| {row['usecase']} | {row['file']} | refused: {row['refused']} | | | | | | | |")
            continue
        size = f"{row['bytes'] / 1e3:,.0f} kB"
        if "threads_default" in row:
            latency = f"{row['threads_default']['p50_ms']:.3f} / {row['threads_default']['p99_ms']:.3f}"
            lines.append(f"| {row['usecase']} ({row['views']} view{'s' if row['views'] > 1 else ''}) | {row['file']} | {size} | "
                         f"{latency} (default pools) | | {row['batch_64_per_second']:,.0f} | | | | |")
            continue
        one, two = row["threads_1"], row["threads_2"]
        lines.append(f"| {row['usecase']} | {row['file']} | {size} | {one['p50_ms']:.3f} / {one['p99_ms']:.3f} | "
                     f"{two['p50_ms']:.3f} / {two['p99_ms']:.3f} | {row['batch_64_per_second']:,.0f} | {row['examples']:,} | "
                     f"{row['argmax_agreement']:.2%} | {row['accuracy']:.4f} ({row['savedmodel_accuracy']:.4f}) | {auc_text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
