"""LiteRT and ONNX files beside a published SavedModel, each verified by its own runtime.

`export_format` converts a version folder `models/<usecase>/<version>/` into
`<version>/litert/` (`model_int8.tflite`, `model_float16.tflite`) or `<version>/onnx/`
(`model.onnx`). As for the SavedModel, the files are written to a hidden staging folder and
checked before they are published:

- run by the runtime that will run them on a device or in another stack (`ai-edge-litert`,
  `onnxruntime`; never TensorFlow), on every image of the test split given;
- against the SavedModel's own probabilities on the same images: argmax agreement, accuracy
  and macro AUC beside the SavedModel's, the largest probability difference;
- published only if at most `MAX_DISAGREEMENT` of the images change their argmax and accuracy
  drops by at most `MAX_ACCURACY_LOSS`; otherwise the figures are reported in the error and
  the staging folder is removed.

A published folder carries its own `metadata.json` (class names, input contract, operating
points, the verification figures), so it can be copied to a device alone and read by
`pipelines.serving.device_predict` without the SavedModel. The version's `metadata.json` and
`MODEL_CARD.md` describe every format it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.evaluation.report import classification_report
from pipelines.export import litert, onnx
from pipelines.export.saved_model import METADATA_FILE, read_metadata
from pipelines.usecases import get_spec

FORMATS = ("litert", "onnx")
MAX_DISAGREEMENT = 0.01  # share of test images whose argmax may differ from the SavedModel's
MAX_ACCURACY_LOSS = 0.01  # one point of accuracy
CARD_FILE = "MODEL_CARD.md"
CARD_SECTION = "## Exported formats"
# What a device needs from the version's metadata to answer as the SavedModel does.
DEVICE_KEYS = ("usecase", "title", "class_names", "input_shape", "input_dtype", "views", "test_time_augmentation", "output",
               "operating_points",
               "threshold", "mlflow_run_id", "data_sha256")


def files_of(fmt: str) -> tuple[str, ...]:
    return tuple(litert.file_name(v) for v in litert.VARIANTS) if fmt == "litert" else (onnx.FILE_NAME,)


def check_exportable(metadata: dict, fmt: str, model_dir: Path) -> None:
    """Refuse before any conversion what a format cannot hold, in one line that says why."""
    if fmt not in FORMATS:
        raise PipelineError(f"unknown export format '{fmt}'; choose {', '.join(FORMATS)}")
    if "columns" in metadata and fmt == "litert":
        # Measured on heart (TF 2.21): its IntegerLookup layers are TensorFlow hash tables, and the
        # converter refuses them even as float ("'tf.HashTableV2' op is neither a custom op nor a flex
        # op": HashTableV2, LookupTableFindV2, LookupTableImportV2 need SELECT_TF_OPS).
        raise PipelineError(f"{model_dir} is a table model: its category lookups (IntegerLookup) are TensorFlow hash tables "
                            "(HashTableV2, LookupTableFindV2), which LiteRT's built-in ops cannot hold without embedding "
                            f"TensorFlow (SELECT_TF_OPS); serve the SavedModel instead (make serve-{metadata.get('usecase')})")
    if "columns" in metadata:
        # Measured on heart (tf2onnx 1.17, `python -m tf2onnx.convert --saved-model`): every
        # LookupTableFindV2 fails with "Only lookup tables of type string<->int64 are currently
        # supported" (ONNX-ML's CategoryMapper); IntegerLookup's tables are int64 -> int64.
        raise PipelineError(f"{model_dir} is a table model: its category lookups (IntegerLookup) are int64 -> int64 hash tables, "
                            "and tf2onnx converts only string <-> int64 ones (ONNX-ML CategoryMapper); "
                            f"serve the SavedModel instead (make serve-{metadata.get('usecase')})")


def export_format(model_dir: Path, fmt: str, reference: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                  calibration: np.ndarray | None = None, data_note: str = "") -> dict:
    """Convert, verify and publish `fmt` (litert: both variants) into `model_dir/<fmt>/`;
    returns the entry written under `exports.<fmt>` of the version's metadata. `reference` is
    the SavedModel's probabilities on `test_x`; `calibration` real training images (int8)."""
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    check_exportable(metadata, fmt, model_dir)
    class_names = tuple(metadata["class_names"])
    shape = tuple(metadata["input_shape"])
    staging = model_dir / f".{fmt}-{os.getpid()}-{int(time.time() * 1000)}"
    staging.mkdir()
    try:
        files, refused = {}, {}
        for name in files_of(fmt):
            started = time.perf_counter()
            if fmt == "litert":
                variant = name.removeprefix("model_").removesuffix(".tflite")
                content = litert.convert(model_dir, variant, calibration)
            else:
                content = onnx.convert(model_dir, shape)
            seconds = time.perf_counter() - started
            path = staging / name
            path.write_bytes(content)
            probabilities = run_file(path, test_x)
            figures = verify(probabilities, reference, test_y, class_names)
            try:
                judge(f"{fmt} {name}", figures, data_note)
            except PipelineError as refusal:
                # One variant failing its gate (int8 on a model whose answers sit close together) does
                # not take the other (float16) down with it: it is left out, with its figures.
                path.unlink()
                refused[name] = {"reason": str(refusal), "verification": figures}
                continue
            files[name] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                           "convert_seconds": round(seconds, 2), "verification": figures}
        if not files:  # the first refusal in full, the others by their figures
            first = next(iter(refused.values()))
            also = "".join(f"; {name} too: agreement {info['verification']['argmax_agreement']:.2%}, accuracy "
                           f"{info['verification']['accuracy']:.4f}" for name, info in list(refused.items())[1:])
            raise PipelineError(first["reason"] + also)
        entry = {"folder": fmt, "files": files, "verified_on": data_note or "the test split",
                 "runtime": "ai-edge-litert Interpreter" if fmt == "litert" else "onnxruntime (CPU)",
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if fmt == "litert":
            entry["calibration_images"] = int(len(calibration))
        if refused:
            entry["refused"] = refused
        device = {key: metadata[key] for key in DEVICE_KEYS if key in metadata}
        device.update(version=metadata.get("version"), format=fmt, **entry)
        (staging / METADATA_FILE).write_text(json.dumps(device, indent=2))
        _publish(staging, model_dir / fmt)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _describe(model_dir, fmt, entry)
    return entry


def run_file(path: Path, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Probabilities from a `.tflite` or `.onnx` file, by its own runtime."""
    path = Path(path)
    model = litert.LiteRTModel(path, threads) if path.suffix == ".tflite" else onnx.ONNXModel(path, threads)
    return model.predict(images)


def verify(probabilities: np.ndarray, reference: np.ndarray, labels: np.ndarray, class_names: tuple) -> dict:
    """The exported file's figures beside the SavedModel's, on the same images. An int8
    softmax comes out in steps of 1/256, its rows summing to 0.99-1.01: they are renormalised
    for AUC (which scikit-learn refuses otherwise), never for agreement or the difference."""
    ours = classification_report(labels, probabilities / probabilities.sum(axis=1, keepdims=True), class_names)
    theirs = classification_report(labels, reference, class_names)
    auc = "roc_auc" if len(class_names) == 2 else "macro_auc_ovr"
    figures = {"examples": int(len(labels)),
               "argmax_agreement": float(np.mean(probabilities.argmax(axis=1) == reference.argmax(axis=1))),
               "accuracy": ours["accuracy"], "savedmodel_accuracy": theirs["accuracy"],
               "max_abs_probability_difference": float(np.max(np.abs(probabilities - reference)))}
    if auc in ours and auc in theirs:  # every class must be present in the images
        figures.update({auc: ours[auc], f"savedmodel_{auc}": theirs[auc]})
    return figures


def judge(what: str, figures: dict, data_note: str = "") -> None:
    disagreement = 1 - figures["argmax_agreement"]
    loss = figures["savedmodel_accuracy"] - figures["accuracy"]
    if not np.isfinite(figures["max_abs_probability_difference"]) or disagreement > MAX_DISAGREEMENT or loss > MAX_ACCURACY_LOSS:
        on = f" on {figures['examples']} images{f' ({data_note})' if data_note else ''}"
        raise PipelineError(f"{what} not published: argmax agrees with the SavedModel on {figures['argmax_agreement']:.2%}{on} "
                            f"(at least {1 - MAX_DISAGREEMENT:.0%} needed), accuracy {figures['accuracy']:.4f} vs the SavedModel's "
                            f"{figures['savedmodel_accuracy']:.4f} (at most {MAX_ACCURACY_LOSS * 100:.0f} point lower), largest "
                            f"probability difference {figures['max_abs_probability_difference']:.3f}")


def _publish(staging: Path, target: Path) -> None:
    """Replace `target` by `staging`: an earlier export of the same format is moved aside
    first, so a reader sees the old folder or the new one, never a half-written one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-replaced-{os.getpid()}")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_atomically(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}-{os.getpid()}")
    staging.write_text(text)
    staging.replace(path)


def _describe(model_dir: Path, fmt: str, entry: dict) -> None:
    """`exports.<fmt>` in the version's metadata.json, and the model card's format table."""
    path = model_dir / METADATA_FILE
    metadata = json.loads(path.read_text())
    metadata.setdefault("exports", {})[fmt] = entry
    _write_atomically(path, json.dumps(metadata, indent=2))
    card = model_dir / CARD_FILE
    if card.is_file():
        text = card.read_text()
        text = text.split("\n" + CARD_SECTION)[0].rstrip() + "\n\n" + card_section(metadata) + "\n"
        _write_atomically(card, text)


def view_transforms(metadata: dict) -> list:
    """The test-time views inside the exported graph: recorded by the run, else (a version
    exported before they were recorded) the use case's own."""
    if "test_time_augmentation" in metadata:
        return list(metadata["test_time_augmentation"])

    try:
        return list(get_spec(metadata.get("usecase")).model.test_time_augmentation)
    except PipelineError:
        return []


def card_section(metadata: dict) -> str:
    """The model card's table of what this version ships as, each file with its verification."""
    transforms = view_transforms(metadata)
    views = f"the mean over {2 ** len(transforms)} test-time views ({', '.join(transforms)})" if transforms else "one network pass"
    lines = [CARD_SECTION, "", f"Each file takes the same uint8 `[batch, {', '.join(map(str, metadata['input_shape']))}]` input and "
             f"answers the same probabilities as the SavedModel, {views} inside the graph as in the SavedModel "
             "(docs/export-formats.md). Checked by its own runtime before it was published:", "",
             "| file | size | runtime | images | argmax agreement | accuracy (SavedModel) | largest probability difference |",
             "|---|---|---|---|---|---|---|"]
    for fmt, entry in sorted(metadata.get("exports", {}).items()):
        for name, info in entry["files"].items():
            figures = info["verification"]
            lines.append(f"| `{fmt}/{name}` | {info['bytes'] / 1e3:,.0f} kB | {entry['runtime']} | {figures['examples']:,} | "
                         f"{figures['argmax_agreement']:.2%} | {figures['accuracy']:.4f} ({figures['savedmodel_accuracy']:.4f}) | "
                         f"{figures['max_abs_probability_difference']:.4f} |")
        for name, info in entry.get("refused", {}).items():
            figures = info["verification"]
            lines.append(f"| `{fmt}/{name}`: not published, past the gate | | {entry['runtime']} | {figures['examples']:,} | "
                         f"{figures['argmax_agreement']:.2%} | {figures['accuracy']:.4f} ({figures['savedmodel_accuracy']:.4f}) | "
                         f"{figures['max_abs_probability_difference']:.4f} |")
    return "\n".join(lines)
