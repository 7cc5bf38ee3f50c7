"""ONNX files for other stacks (C++, C#, Java services), converted from an exported SavedModel.

Keras' own `model.export(path, format="onnx")` does the conversion (tf2onnx under the
TensorFlow backend; `tf2onnx.convert.from_keras` itself is broken on Keras 3). It needs a Keras
model that has been called: the published SavedModel is wrapped as one, a `TFSMLayer` on its
`serve` endpoint behind a `keras.Input` of the same uint8 shape, so what is converted is what
was verified and published (test-time views included). The file takes uint8 images with a
dynamic batch dimension and answers float32 probabilities, like the SavedModel.

`ONNXModel` runs a file with `onnxruntime` alone: what verification, the benchmark and the
device-side predictor call.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.core.runtime import import_keras, quiet_stderr

FILE_NAME = "model.onnx"


def convert(saved_model_dir: Path, input_shape: tuple) -> bytes:
    """The ONNX model of `saved_model_dir`'s `serve` endpoint (uint8 `[batch, *input_shape]`)."""

    keras = import_keras()
    image = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    model = keras.Model(image, keras.layers.TFSMLayer(str(saved_model_dir), call_endpoint="serve")(image))
    model(np.zeros((1, *input_shape), np.uint8))  # Keras refuses to export a model never called
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / FILE_NAME
        try:
            with quiet_stderr(), warnings.catch_warnings():  # tf2onnx logs every rewrite pass
                warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)  # tf2onnx 1.17 on NumPy 2
                model.export(str(target), format="onnx", verbose=False)
        except Exception as exc:  # tf2onnx raises plain exceptions naming the op it lacks
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise PipelineError(f"ONNX refused: {type(exc).__name__}: {first[:300]}") from None
        return target.read_bytes()


class ONNXModel:
    """An `.onnx` file under onnxruntime (CPU): `predict(images)` -> probabilities."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise PipelineError("running an .onnx file needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise PipelineError(f"{path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.input_shape = tuple(self.input.shape[1:])
        self.input_dtype = np.dtype(np.uint8) if self.input.type == "tensor(uint8)" else np.dtype(np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != self.input_dtype or images.shape[1:] != self.input_shape:
            raise PipelineError(f"{self.path.name} takes {self.input_dtype} [batch, {', '.join(map(str, self.input_shape))}], "
                                f"got {images.dtype} {list(images.shape)}")
        parts = [self.session.run(None, {self.input.name: images[start : start + batch_size]})[0]
                 for start in range(0, len(images), batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)
