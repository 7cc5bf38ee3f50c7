"""Classify image files with a LiteRT or ONNX file: NumPy, Pillow and the runtime alone.

What a small computer on a grading line (a Raspberry Pi, a phone-class board) runs: no
TensorFlow, no MLflow, no server. Copy the format folder of a version
(`models/<usecase>/<version>/litert/` or `.../onnx/`, which holds its own `metadata.json`) and
this package (`pip install --no-deps`, plus `numpy pillow ai-edge-litert` or `onnxruntime`), then:

    python -m pipelines.serving.device_predict litert/model_int8.tflite photo.jpg [more.png ...]

or, on a machine with the whole project, `python -m pipelines predict <usecase> --model
FILE.tflite|FILE.onnx photo.jpg`. Files are decoded exactly as for training and for the
SavedModel (`pipelines.data.images.read_image`: upright, transparency on black, grey or RGB,
resized with Lanczos), and the label is decided at the model's operating point, so the answer
is the SavedModel's up to the quantization the export was verified for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.data.images import read_image
from pipelines.evaluation.operating_points import OperatingPoints, check_point
from pipelines.export.litert import LiteRTModel
from pipelines.export.onnx import ONNXModel
from pipelines.serving.predict import Prediction, answer, print_predictions

METADATA_FILE = "metadata.json"


def device_metadata(model_file: Path) -> dict:
    """The metadata beside the file (its format folder's), else the version folder's above it."""
    model_file = Path(model_file)
    for folder in (model_file.parent, model_file.parent.parent):
        if (folder / METADATA_FILE).is_file():
            return json.loads((folder / METADATA_FILE).read_text())
    raise PipelineError(f"no {METADATA_FILE} beside {model_file}: copy the whole litert/ or onnx/ folder of the version")


def load_model(model_file: Path, threads: int | None = None):
    """The runtime for the file's suffix: ai-edge-litert for .tflite, onnxruntime for .onnx."""
    model_file = Path(model_file)
    if model_file.suffix == ".tflite":
        return LiteRTModel(model_file, threads)
    if model_file.suffix == ".onnx":
        return ONNXModel(model_file, threads)
    raise PipelineError(f"{model_file}: expected a .tflite or .onnx file")


def classify_files(model_file, files: list[str], operating_point: str | None = None, usecase: str | None = None,
                   threads: int | None = None, top_k: int = 3) -> list[Prediction]:
    """One Prediction per file (an unreadable file gets its error, the others are answered)."""
    model_file = Path(model_file)
    metadata = device_metadata(model_file)
    if usecase and metadata.get("usecase") != usecase:
        raise PipelineError(f"{model_file} is a '{metadata.get('usecase')}' model, not '{usecase}'")
    check_point(operating_point, metadata, str(model_file))
    points = OperatingPoints.from_metadata(metadata)
    point = (operating_point or points.default) if points else None
    shape = tuple(metadata["input_shape"])
    classes = metadata["class_names"]
    if len(shape) == 3 and shape[-1] not in (1, 3):
        raise PipelineError(f"{model_file} takes {shape[-1] // 3} photos of each object at once ({shape[-1]} channels); this reads one "
                            "photo a file")
    model = load_model(model_file, threads)
    predictions, images, readable = [], [], []
    for name in files:
        try:
            images.append(read_image(Path(name), shape))
            readable.append(len(predictions))
            predictions.append(Prediction(name))
        except PipelineError as exc:
            predictions.append(Prediction(name, error=str(exc)))
    if images:
        probabilities = model.predict(np.stack(images))
        answer(predictions, readable, probabilities, classes, points, point, top_k)
    return predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.serving.device_predict", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a .tflite or .onnx file, with the metadata.json of its folder beside it")
    parser.add_argument("files", nargs="+", metavar="FILE", help="images (PNG/JPEG, any size)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the runtime's own)")
    parser.add_argument("--operating-point", choices=("accuracy", "balanced"), help="default: the model's own")
    args = parser.parse_args(argv)
    try:
        predictions = classify_files(args.model, args.files, operating_point=args.operating_point, threads=args.threads)
    except PipelineError as exc:
        print("error: " + str(exc).replace("\n", "\\n"), file=sys.stderr)
        return exc.exit_code
    return 1 if print_predictions(predictions, as_json=args.json, model_dir=args.model) else 0


if __name__ == "__main__":
    sys.exit(main())
