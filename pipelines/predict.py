"""Batch prediction from image files with an exported SavedModel.

Images of any size, colour or grey, are converted the way the model was trained: to grey
(luma, ITU-R 601) for grey models or RGB for colour ones, then resized to the model's input
size with Lanczos resampling. No other change is made: MNIST digits are light strokes on a
dark background, so a scan of dark ink on white paper needs inverting first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.errors import PipelineError


@dataclass
class Prediction:
    path: str
    label: str | None = None
    probability: float | None = None
    top: list[tuple[str, float]] | None = None
    error: str | None = None


def read_image(path: Path, input_shape: tuple) -> np.ndarray:
    """A uint8 array of `input_shape`; raises PipelineError naming the file if it is not an image."""
    from PIL import Image, UnidentifiedImageError

    height, width = input_shape[:2]
    mode = "L" if len(input_shape) == 2 else "RGB"
    try:
        with Image.open(path) as image:
            image.load()
            converted = image.convert(mode).resize((width, height), Image.Resampling.LANCZOS)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PipelineError(f"{path}: not a readable image ({type(exc).__name__}); use PNG or JPEG") from None
    return np.asarray(converted, dtype=np.uint8).reshape(input_shape)


def predict_files(model_dir: Path, files: list[str], top_k: int = 3) -> list[Prediction]:
    from pipelines.export import call_serving, read_metadata
    from pipelines.runtime import import_keras

    metadata = read_metadata(model_dir)
    shape = tuple(metadata["input_shape"])
    classes = metadata["class_names"]
    predictions, images, readable = [], [], []
    for name in files:
        try:
            images.append(read_image(Path(name), shape))
            readable.append(len(predictions))
            predictions.append(Prediction(name))
        except PipelineError as exc:
            predictions.append(Prediction(name, error=str(exc)))
    if images:
        import_keras()
        import tensorflow as tf

        loaded = tf.saved_model.load(str(model_dir))
        probabilities = call_serving(loaded, np.stack(images))
        for index, row in zip(readable, probabilities):
            order = np.argsort(row)[::-1][:top_k]
            predictions[index].label = classes[order[0]]
            predictions[index].probability = float(row[order[0]])
            predictions[index].top = [(classes[i], float(row[i])) for i in order]
    return predictions


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
                              "model": str(model_dir)}))
        else:
            others = ", ".join(f"{label} {p:.3f}" for label, p in item.top[1:])
            print(f"{item.path}: {item.label} ({item.probability:.3f})" + (f"  [then {others}]" if others else ""))
    return failed
