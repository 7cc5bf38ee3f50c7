"""LiteRT (TensorFlow Lite) files for devices, converted from an exported SavedModel.

Two variants of the same `serving_default` signature (uint8 images in, probabilities out):

- `int8`: full-integer quantization. Weights and activations are int8, calibrated on real
  training images (`representative_dataset`); the input stays the raw uint8 pixels the
  SavedModel takes (its Rescaling becomes the first quantized op) and the output is float32
  probabilities (one DEQUANTIZE at the end), so a client is the same as for the SavedModel.
  `supported_ops` is `TFLITE_BUILTINS_INT8` alone: Keras' own `export(format="litert")` adds
  `SELECT_TF_OPS`, which silently embeds TensorFlow kernels a device runtime lacks, and would
  leave float ops in the graph. A model that needs either is refused, naming the op and layer.
- `float16`: weights stored as float16 (half the size), computed in float32 on a CPU or in
  float16 by a GPU delegate; `TFLITE_BUILTINS` only, for the same reason.

Converting from the SavedModel (not from the Keras model) means the file holds exactly what
was verified and published, test-time views included, whichever way the version was made.

Running a file needs only `ai-edge-litert` (`Interpreter`) and NumPy: `LiteRTModel` below is
what verification, the benchmark and the device-side predictor all call, never TensorFlow's
deprecated `tf.lite.Interpreter`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError
from pipelines.core.runtime import quiet_stderr

VARIANTS = ("int8", "float16")
SIGNATURE = "serving_default"


def file_name(variant: str) -> str:
    return f"model_{variant}.tflite"


def convert(saved_model_dir: Path, variant: str, calibration: np.ndarray | None = None) -> bytes:
    """The `variant` LiteRT flatbuffer of `saved_model_dir`; `calibration` (uint8 images, a few
    hundred) sets the int8 ranges. Raises PipelineError naming what does not convert."""
    import tensorflow as tf

    if variant not in VARIANTS:
        raise PipelineError(f"unknown LiteRT variant '{variant}'; choose {', '.join(VARIANTS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "int8":
        if calibration is None or not len(calibration):
            raise PipelineError("int8 conversion needs calibration images (real training images)")
        images = np.asarray(calibration)
        converter.representative_dataset = lambda: ([images[i : i + 1]] for i in range(len(images)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8  # the raw pixels, as the SavedModel takes them
        converter.inference_output_type = tf.float32  # probabilities, not quantized codes
    else:
        converter.target_spec.supported_types = [tf.float16]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        with quiet_stderr():  # the converter's MLIR passes log pages of C++ notes on fd 2
            return converter.convert()
    except Exception as exc:  # ConverterError, or a ValueError from the quantizer
        raise PipelineError(f"LiteRT {variant} refused: {unsupported(str(exc))}") from None


def unsupported(message: str) -> str:
    """One line naming the ops (and the layers they come from) that the converter would not
    take, from its multi-line MLIR error; the first line of it when nothing is recognised."""
    ops = sorted(set(re.findall(r"'(tf\.[A-Za-z0-9_]+)' op", message)))
    ops += sorted(set(re.findall(r"Quantization not yet supported for op: '?([A-Za-z0-9_.]+)", message)) - set(ops))
    # MLIR locations read like fused["MatrixDeterminant:", "functional_1/determinant_1/MatrixDeterminant@__inference_..."]:
    # the name scope before the op is the Keras model and layer that made it (a bare node name,
    # such as "hash_table", is kept as it is).
    layers = []
    for op, node in re.findall(r'fused\["([A-Za-z0-9_]+):", "([^"]+)"', message):
        if f"tf.{op}" not in ops and op not in ops:
            continue  # a call site around the op (StatefulPartitionedCall), not the op
        parts = node.split("@")[0].split("/")
        layer = "/".join(parts[:-1]) if len(parts) > 1 else parts[0]
        if layer not in layers:
            layers.append(layer)
    if not ops:
        first = next((line.strip() for line in message.splitlines() if line.strip()), "unknown converter error")
        return first[:300]
    where = f" (at {', '.join(layers[:5])}{', ...' if len(layers) > 5 else ''})" if layers else ""
    return (f"the model needs {', '.join(ops)}{where}, which LiteRT's built-in int8/float kernels lack; embedding TensorFlow "
            "ops (SELECT_TF_OPS) is not done, a device runtime would not have them: replace that layer")


class LiteRTModel:
    """A `.tflite` file under `ai_edge_litert`'s interpreter: `predict(images)` -> probabilities.

    The batch dimension of the signature is dynamic: the input is resized (and tensors
    reallocated) only when the batch size changes, so repeated batch-1 calls cost one invoke.
    One interpreter holds one set of tensors: use one instance per thread (the served MLflow
    model serialises its calls with a lock instead)."""

    def __init__(self, path: Path, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise PipelineError("running a .tflite file needs ai-edge-litert: pip install ai-edge-litert") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise PipelineError(f"{path}: no such LiteRT file")
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(s) for s in self.input["shape_signature"][1:])
        self.input_dtype = np.dtype(self.input["dtype"])
        self._batch = None

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], [batch, *self.input_shape])
            self.interpreter.allocate_tensors()
            self._batch = batch

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != self.input_dtype or images.shape[1:] != self.input_shape:
            raise PipelineError(f"{self.path.name} takes {self.input_dtype} [batch, {', '.join(map(str, self.input_shape))}], "
                                f"got {images.dtype} {list(images.shape)}")
        parts = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            self._resize(len(chunk))
            self.interpreter.set_tensor(self.input["index"], chunk)
            self.interpreter.invoke()
            parts.append(self._dequantized(self.interpreter.get_tensor(self.output["index"])))
        return np.concatenate(parts)

    def _dequantized(self, values: np.ndarray) -> np.ndarray:
        scale, zero = self.output["quantization"]
        if values.dtype == np.float32 or not scale:
            return values.astype(np.float32, copy=True)  # a copy: the interpreter reuses its buffer
        return ((values.astype(np.float32) - zero) * scale).astype(np.float32)
