"""Batch prediction from image files with an exported SavedModel.

Files are decoded as `pipelines.data.images.read_image` decodes them for training (upright,
transparency on black, grey or RGB, resized with Lanczos); the served decision is the model's
operating point.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.core.runtime import import_keras
from pipelines.data.images import read_image
from pipelines.evaluation.operating_points import OperatingPoints, check_point
from pipelines.export.saved_model import call_serving, read_metadata


@dataclass
class Prediction:
    path: str
    label: str | None = None
    probability: float | None = None
    top: list[tuple[str, float]] | None = None
    error: str | None = None
    operating_point: str | None = None  # the rule that chose `label`; None: argmax


def predict_files(model_dir: Path, files: list[str], top_k: int = 3, operating_point: str | None = None) -> list[Prediction]:
    """`label` is decided at `operating_point` (default: the model's own default, see
    pipelines.evaluation.operating_points); `top` lists the most probable classes whatever the rule."""

    metadata = read_metadata(model_dir)
    check_point(operating_point, metadata, str(model_dir))
    points = OperatingPoints.from_metadata(metadata)
    point = (operating_point or points.default) if points else None
    shape = tuple(metadata["input_shape"])
    classes = metadata["class_names"]
    if len(shape) == 3 and shape[-1] not in (1, 3):
        raise PipelineError(f"{model_dir} takes {shape[-1] // 3} photos of each object at once ({shape[-1]} channels); predict reads "
                            f"one photo a file: send the stacked uint8 array [batch, {', '.join(map(str, shape))}] to `serve` instead")
    predictions, images, readable = [], [], []
    for name in files:
        try:
            images.append(read_image(Path(name), shape, metadata.get("image_fit", "resize")))  # as the loader fitted them
            readable.append(len(predictions))
            predictions.append(Prediction(name))
        except PipelineError as exc:
            predictions.append(Prediction(name, error=str(exc)))
    if images:
        import_keras()
        import tensorflow as tf

        loaded = tf.saved_model.load(str(model_dir))
        probabilities = call_serving(loaded, np.stack(images))
        answer(predictions, readable, probabilities, classes, points, point, top_k)
    return predictions


def answer(predictions: list[Prediction], readable: list[int], probabilities: np.ndarray, classes, points, point, top_k: int):
    """Fill in the readable files' predictions from their probabilities, the label decided at
    `point` (argmax without operating points): the one rule for every runtime (SavedModel, LiteRT, ONNX)."""
    decided = points.decide(probabilities, point) if points else probabilities.argmax(axis=1)
    for index, row, choice in zip(readable, probabilities, decided):
        order = np.argsort(row)[::-1][:top_k]
        predictions[index].label = classes[choice]
        predictions[index].probability = float(row[choice])
        predictions[index].top = [(classes[i], float(row[i])) for i in order]
        predictions[index].operating_point = point


def print_predictions(predictions: list[Prediction], as_json: bool = False, model_dir: Path | None = None) -> int:
    """Print one line per file (or JSON lines, naming the model); return how many files failed."""
    import json

    failed = 0
    for item in predictions:
        if item.error:
            failed += 1
            print(f"error: {item.error}", file=sys.stderr)
            continue
        if as_json:
            print(json.dumps({"file": item.path, "label": item.label, "probability": item.probability, "top": item.top,
                              "operating_point": item.operating_point, "model": str(model_dir)}))
        else:
            others = ", ".join(f"{label} {p:.3f}" for label, p in item.top if label != item.label)
            point = f", {item.operating_point} point" if item.operating_point == "balanced" else ""
            print(f"{item.path}: {item.label} ({item.probability:.3f}{point})" + (f"  [then {others}]" if others else ""))
    return failed
