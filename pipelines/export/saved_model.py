"""Export a serving model as a TensorFlow SavedModel in `models/<usecase>/<version>/`.

The export is written to a hidden temporary folder, reloaded with `tf.saved_model.load`,
and its `serve` signature is checked against the in-memory model on real inputs. Only then
is it renamed into place, so a half-written or wrong export never gets a version number.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from pipelines.core import paths
from pipelines.core.errors import PipelineError
from pipelines.data.input_pipeline import as_model_inputs
from pipelines.data.table_schema import signature_name
from pipelines.training.fit import predict_probabilities

METADATA_FILE = "metadata.json"


def existing_versions(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def call_serving(loaded, inputs) -> np.ndarray:
    """Call a reloaded SavedModel's `serve` endpoint on arrays (or a dict of column arrays, by
    raw column name: the signature names them TensorFlow-safely, `signature_name`)."""
    import tensorflow as tf

    inputs = as_model_inputs(inputs)
    if isinstance(inputs, dict):
        signature = loaded.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        names = {name: name if name in specs else signature_name(name) for name in inputs}
        tensors = {names[name]: tf.constant(np.asarray(value), dtype=specs[names[name]].dtype) for name, value in inputs.items()}
        outputs = signature(**tensors)
        return next(iter(outputs.values())).numpy()
    return loaded.serve(tf.constant(inputs)).numpy()


def export_savedmodel(model, usecase: str, check_inputs, metadata: dict, tolerance: float = 1e-5, extra_files: dict | None = None) -> Path:
    """Export, verify and publish `model`; returns `models/<usecase>/<version>`."""
    import tensorflow as tf

    base = paths.usecase_models_dir(usecase)
    base.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(base)
    staging = base / f".export-{os.getpid()}-{int(time.time() * 1000)}"
    try:
        model.export(str(staging), format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(str(staging))  # keep a reference: see STACK.md
        exported = call_serving(loaded, check_inputs)
        expected = predict_probabilities(model, check_inputs)
        difference = float(np.max(np.abs(exported - expected)))
        if not np.isfinite(difference) or difference > tolerance:
            raise PipelineError(
                f"exported model disagrees with the trained model (max |difference| {difference:.2e} > {tolerance:.0e}); "
                "nothing was published"
            )
        for name, content in (extra_files or {}).items():
            (staging / name).write_text(content)
        return _publish(staging, base, {**metadata, "export_check_max_abs_difference": difference})
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_abandoned_staging(base: Path) -> None:
    """Staging folders of exports whose process died (kill -9 mid-export): never published, so
    nobody will; a live process's staging folder is left alone."""
    for folder in base.glob(".export-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _publish(staging: Path, base: Path, metadata: dict) -> Path:
    """Rename into the next free integer version; a concurrent export just takes the next one."""
    for _ in range(100):
        versions = existing_versions(base)
        version = (versions[-1] + 1) if versions else 1
        (staging / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}, indent=2))
        target = base / str(version)
        try:
            os.rename(staging, target)  # atomic on one file system; fails if target exists
            return target
        except OSError:
            if not target.exists():
                raise
    raise PipelineError(f"could not find a free version number in {base}")


def read_metadata(model_dir: Path) -> dict:
    path = Path(model_dir) / METADATA_FILE
    if not (Path(model_dir) / "saved_model.pb").is_file():
        raise PipelineError(f"{model_dir} is not an exported SavedModel (no saved_model.pb); pass a models/<usecase>/<version> folder")
    if not path.is_file():
        raise PipelineError(f"{model_dir} has no {METADATA_FILE}; it was not exported by this tool")
    return json.loads(path.read_text())
