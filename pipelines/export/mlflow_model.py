"""The MLflow model behind `python -m pipelines serve`: an exported SavedModel that answers with
class names, and refuses a bad request with a one-line reason instead of guessing.

This file is logged *as code* with every model (MLflow "models from code") and loaded by the
scoring server on its own, so it imports only mlflow, numpy, pandas and tensorflow (or, serving a
LiteRT / ONNX folder with `serve --format`, ai-edge-litert or onnxruntime instead): never this
package. Its artifacts are the `models/<usecase>/<version>/` SavedModel, with the
`metadata.json` beside it (class names, input shape and dtype, columns, decision threshold).

Why a wrapper rather than the Keras flavour:

- answers carry class names: `{"predictions": [{"0": 0.01, ..., "9": 0.9, "label": "9"}]}`
  (`predict` returns those records; `pandas.DataFrame(records)` makes them a table);
- the request is validated here, on the values the client sent: MLflow's schema enforcement
  casts `0.5` to the uint8 `0` and answers 200, so the model is logged *without* a signature
  (the scoring server then hands over the parsed JSON as it is: int64, float64, strings) and
  every check a client can fail is below, each a `RequestRejected` (an `MlflowException` with
  `INVALID_PARAMETER_VALUE`), which the scoring server answers with HTTP 400 and a one-line
  reason; malformed JSON and unknown request keys MLflow answers with 400 itself;
- it calls the SavedModel's concrete `serving_default` function directly: no Keras
  `predict()` (which builds a data adapter per call) and no retracing.

Settings (the logged `model_config`, overridable at serve time through MLflow's
`SERVING_MODEL_CONFIG` environment variable, a JSON object):
`max_batch_size` (1024), `intra_op_threads` and `inter_op_threads` (TensorFlow thread pools;
0 = TensorFlow's default), `operating_point` (`accuracy` or `balanced`; default: the one in the
model's metadata, see pipelines/evaluation/operating_points.py).
"""

from __future__ import annotations

import json
import os
import threading

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# MLflow overrides only keys the logged config has (load_model's model_config, SERVING_MODEL_CONFIG):
# `operating_point` is logged as "" (the model's own default) so that `serve --operating-point` can set it.
DEFAULT_CONFIG = {"max_batch_size": 1024, "intra_op_threads": 1, "inter_op_threads": 1, "operating_point": ""}
LABEL_COLUMN = "label"


class RequestRejected(MlflowException):
    """A client error, answered with HTTP 400 (INVALID_PARAMETER_VALUE) and a one-line reason.

    The scoring server rewrites the `message` of any MlflowException raised in `predict` to
    "Failed to predict data '<the whole request, several lines of it>'. Error: <message>": the
    client already has its request, so this exception keeps its one-line message as it is."""

    def __init__(self, reason: str):
        self._reason = reason
        super().__init__(reason, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        pass  # see the class docstring


def bad_request(reason: str) -> RequestRejected:
    return RequestRejected(reason)


def describe_shape(shape) -> str:
    return "[" + ", ".join("batch" if size is None else str(size) for size in shape) + "]"


class SavedModelClassifier(mlflow.pyfunc.PythonModel):
    """Class probabilities from an exported image or tabular SavedModel, one row per example."""

    # A PythonModel whose `predict` has no type hints makes MLflow warn, in yellow, each time this
    # file runs (twice per train, once per scoring worker) that hints would enable its data
    # validation; it resets the warning filters around that check, so no filter hides it. Hints
    # would also have MLflow convert requests itself, which this class must not let it do (see
    # above). MLflow's own switch for its ChatModel classes skips exactly that check; if MLflow
    # renames it the warning comes back, and tests/test_serve.py and tests/test_pipeline.py fail.
    _skip_type_hint_validation = True

    def load_context(self, context):
        config = {**DEFAULT_CONFIG, **(context.model_config or {})}
        self.max_batch_size = int(config["max_batch_size"])
        if "edge" in context.artifacts:  # a LiteRT or ONNX folder (`serve --format`): no TensorFlow in this process
            self._load_edge(context.artifacts["edge"], config)
            return
        import tensorflow as tf

        # Thread pools can only be sized before TensorFlow's runtime starts: this process
        # (a scoring server worker) has not run anything in TensorFlow yet.
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(config["intra_op_threads"]))
            tf.config.threading.set_inter_op_parallelism_threads(int(config["inter_op_threads"]))
        except RuntimeError:
            pass  # already initialised (e.g. loaded inside a training process): keep its pools

        folder = context.artifacts["saved_model"]
        with open(os.path.join(folder, "metadata.json")) as file:
            self.metadata = json.load(file)
        self.class_names = [str(name) for name in self.metadata["class_names"]]
        threshold = self.metadata.get("threshold")
        self.threshold = float(threshold) if threshold is not None else 0.5
        self.label_offsets = self._label_offsets(self.metadata.get("operating_points"), config.get("operating_point"))
        self.loaded = tf.saved_model.load(folder)  # keep a reference: its functions need it alive
        self.function = self.loaded.signatures["serving_default"]
        self.input_specs = self.function.structured_input_signature[1]  # {name: TensorSpec}
        self.tabular = "columns" in self.metadata
        if self.tabular:
            self.columns = list(self.metadata["columns"])
            self.text_columns = {c for c, kind in self.metadata.get("column_types", {}).items() if kind == "text"}
            # Raw column name -> the signature's (TensorFlow-safe) name; older exports: the same.
            self.signature_names = {c: self.metadata.get("signature_names", {}).get(c, c) for c in self.columns}
            missing = set(self.signature_names.values()) - set(self.input_specs)
            if missing:
                raise MlflowException(f"the SavedModel has no input for column(s) {sorted(missing)}")
        else:
            (self.input_name, spec), = self.input_specs.items()
            self.image_shape = tuple(spec.shape[1:].as_list())
        self.tf = tf
        # One call now, so the first client does not pay for TensorFlow's lazy start-up.
        self._probabilities(self._example_batch())

    def _load_edge(self, folder: str, config: dict) -> None:
        """The verified `litert/` (int8 file) or `onnx/` folder of a version, with its own metadata.json,
        run by its runtime behind the same request checks and answers as the SavedModel."""
        with open(os.path.join(folder, "metadata.json")) as file:
            self.metadata = json.load(file)
        self.class_names = [str(name) for name in self.metadata["class_names"]]
        threshold = self.metadata.get("threshold")
        self.threshold = float(threshold) if threshold is not None else 0.5
        self.label_offsets = self._label_offsets(self.metadata.get("operating_points"), config.get("operating_point"))
        self.tabular, self.input_name = False, "image"
        self.image_shape = tuple(self.metadata["input_shape"])
        threads = int(config["intra_op_threads"]) or None
        if self.metadata["format"] == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if threads:
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = onnxruntime.InferenceSession(os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self._edge = lambda images: session.run(None, {name: images})[0]
        else:
            from ai_edge_litert.interpreter import Interpreter

            # int8 where it passed its gate, else float16 (`export` publishes each variant that passes).
            name = next(n for n in ("model_int8.tflite", "model_float16.tflite") if os.path.isfile(os.path.join(folder, n)))
            interpreter = Interpreter(model_path=os.path.join(folder, name), num_threads=threads)
            source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
            sizes = {"batch": None}
            # The scoring server calls predict from several threads; an Interpreter holds one set of
            # tensors (measured: 48 of 1,000 concurrent requests failed without the lock).
            lock = threading.Lock()

            def run(images):
                with lock:
                    return invoke(images)

            def invoke(images):
                if sizes["batch"] != len(images):  # the signature's batch is dynamic: resize when it changes
                    interpreter.resize_tensor_input(source, [len(images), *self.image_shape])
                    interpreter.allocate_tensors()
                    sizes["batch"] = len(images)
                interpreter.set_tensor(source, images)
                interpreter.invoke()
                return interpreter.get_tensor(target).copy()

            self._edge = run
        self._probabilities(self._example_batch())

    def predict(self, context, model_input, params=None):
        batch = self._table_batch(model_input) if self.tabular else self._image_batch(model_input)
        return self._answer(self._probabilities(batch))

    # Images

    def _image_batch(self, model_input):
        if isinstance(model_input, pd.DataFrame):
            model_input = self._images_from_table(model_input)
        if isinstance(model_input, dict):
            if len(model_input) != 1:
                raise bad_request(f'expected one image tensor, got named inputs {sorted(model_input)}')
            model_input = next(iter(model_input.values()))
        try:
            images = np.asarray(model_input)
        except ValueError:
            raise bad_request("images must be nested lists of equal lengths") from None
        expected = describe_shape((None, *self.image_shape))
        if images.ndim >= 1 and images.shape[0] == 0:
            raise bad_request("empty batch: send at least one image")
        if images.dtype.kind in "USO":
            raise bad_request("pixels must be integers 0-255; got strings, nulls or ragged lists")
        if images.dtype.kind == "b":
            raise bad_request("pixels must be integers 0-255; got true/false")
        if images.dtype.kind == "f":
            raise bad_request("pixels must be integers 0-255; got floats (scaled to [0, 1]? send the raw uint8 values)")
        if images.ndim != len(self.image_shape) + 1:
            hint = " (wrap a single image in a list)" if images.ndim == len(self.image_shape) else ""
            raise bad_request(f"wrong rank: expected {expected}, got {list(images.shape)}{hint}")
        if images.shape[1:] != self.image_shape:
            raise bad_request(f"wrong shape: expected {expected}, got {list(images.shape)}")
        self._check_batch_size(len(images))
        if images.min() < 0 or images.max() > 255:
            raise bad_request(f"pixel values outside uint8 (0-255): min {images.min()}, max {images.max()}")
        return {self.input_name: images.astype(np.uint8)}

    def _images_from_table(self, table: pd.DataFrame) -> np.ndarray:
        """A table of one column whose cells are flat uint8 pixel arrays: how `mlflow.pyfunc.spark_udf`
        hands over a Spark column of decoded images (`python -m pipelines score`)."""
        size = int(np.prod(self.image_shape))
        refused = ('send images as nested lists of uint8 under "inputs" or "instances", not as a table '
                   f"(a table takes one column of flat arrays of {size} pixels, as Spark sends them)")
        if len(table.columns) != 1 or not len(table):
            raise bad_request(refused)
        cells = [np.asarray(cell) for cell in table.iloc[:, 0]]
        if any(cell.ndim != 1 or cell.shape[0] != size for cell in cells):
            raise bad_request(refused)
        return np.stack(cells).reshape((len(cells), *self.image_shape))

    # Tables

    def _table_batch(self, model_input):
        if isinstance(model_input, pd.DataFrame):
            table = {name: model_input[name].to_numpy() for name in model_input.columns}
        elif isinstance(model_input, dict):
            table = model_input
        else:
            raise bad_request(f"send named columns ({', '.join(self.columns)}), e.g. {{\"inputs\": {{\"age\": [63], ...}}}}")
        names = [str(name) for name in table]
        missing = [name for name in self.columns if name not in names]
        unknown = [name for name in names if name not in self.columns]
        if missing:
            raise bad_request(f"missing column(s): {', '.join(missing)} (send NaN or null for a value not measured)")
        if unknown:
            raise bad_request(f"unknown column(s): {', '.join(unknown)}; expected: {', '.join(self.columns)}")
        batch = {name: self._text_column(name, table[name]) if name in self.text_columns else self._numeric_column(name, table[name])
                 for name in self.columns}
        lengths = {len(values) for values in batch.values()}
        if len(lengths) != 1:
            raise bad_request(f"columns have different lengths: {sorted(lengths)}")
        rows = lengths.pop()
        if rows == 0:
            raise bad_request("empty batch: send at least one row")
        self._check_batch_size(rows)
        return batch

    @staticmethod
    def _numeric_column(name: str, values) -> np.ndarray:
        """Numbers or null (not measured) only: a string is an error, not something to guess at."""
        try:
            column = np.asarray(values)
        except ValueError:
            raise bad_request(f"column '{name}' is not a flat list of numbers") from None
        if column.ndim == 0:
            column = column.reshape(1)
        if column.ndim != 1:
            raise bad_request(f"column '{name}' must be one value per row, got shape {list(column.shape)}")
        if column.dtype.kind == "O":
            # `instances` rows arrive as one 0-d array per cell when a column mixes null and numbers.
            cells = [value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value for value in column]
            for value in cells:
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                    raise bad_request(f"column '{name}' has a value that is not a number: {value!r}")
            column = np.array([np.nan if value is None else value for value in cells], dtype=np.float64)
        elif column.dtype.kind not in "iuf":
            raise bad_request(f"column '{name}' has a value that is not a number: {column[0]!r}")
        column = column.astype(np.float32)
        if np.isinf(column).any():
            raise bad_request(f"column '{name}' has an infinite value")
        return column

    @staticmethod
    def _text_column(name: str, values) -> np.ndarray:
        """Text categories: strings, or null for "not recorded" (the model's ""); a number here
        is refused rather than guessed into a category name."""
        column = np.asarray(values, dtype=object)
        if column.ndim == 0:
            column = column.reshape(1)
        if column.ndim != 1:
            raise bad_request(f"column '{name}' must be one value per row, got shape {list(column.shape)}")
        cells = [value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value for value in column]
        for value in cells:
            if value is not None and not isinstance(value, str) and not (isinstance(value, float) and np.isnan(value)):
                raise bad_request(f"column '{name}' takes text (a category name), got {value!r}")
        return np.array(["" if not isinstance(value, str) else value for value in cells], dtype=object)

    # Both

    @staticmethod
    def _label_offsets(points: dict | None, requested: str | None):
        """What the `balanced` operating point subtracts from log p(y|x): tau * log prior(y)
        (pipelines.evaluation.operating_points.adjusted_log_scores, repeated here: this file imports
        nothing from the package). None: labels are the argmax."""
        requested = requested or None  # "": the model's default
        if requested not in (None, "accuracy", "balanced"):
            raise MlflowException(f"operating_point '{requested}': choose accuracy or balanced")
        point = requested or (points or {}).get("default", "accuracy")
        if point == "accuracy":
            return None
        if not points:
            raise MlflowException("operating_point 'balanced' needs priors and tau in metadata.json; this model has none")
        return float(points["tau"]) * np.log(np.asarray(points["priors"], np.float64))

    def _check_batch_size(self, size: int) -> None:
        if size > self.max_batch_size:
            raise bad_request(f"batch of {size} exceeds the limit of {self.max_batch_size} a request; split it")

    def _example_batch(self) -> dict:
        if self.tabular:
            return {name: np.array([""], object) if name in self.text_columns else np.zeros([1], np.float32)
                    for name in self.columns}
        return {self.input_name: np.zeros((1, *self.image_shape), np.uint8)}

    def _probabilities(self, batch: dict) -> np.ndarray:
        if getattr(self, "_edge", None) is not None:
            return self._edge(batch[self.input_name])
        names = getattr(self, "signature_names", {})
        tensors = {names.get(name, name): self.tf.constant(values, dtype=self.input_specs[names.get(name, name)].dtype)
                   for name, values in batch.items()}
        outputs = self.function(**tensors)
        return next(iter(outputs.values())).numpy()

    def _answer(self, probabilities: np.ndarray) -> list[dict]:
        """One record per example: a probability per class name, and the predicted `label`. A
        binary model's single P(positive) column becomes both classes, labelled at the exported
        decision threshold. Plain records, not a DataFrame: the scoring server writes them as
        they are, where a DataFrame's `to_dict` cost as much as the model itself."""
        if len(self.class_names) == 2:
            # Binary models are labelled at their exported decision threshold, not at 0.5; an
            # older export answers P(positive) alone, `[batch, 1]`.
            positive = probabilities[:, -1].astype(np.float64)
            probabilities = np.stack([1.0 - positive, positive], axis=1)
            labels = [self.class_names[int(p >= self.threshold)] for p in positive]
        elif self.label_offsets is not None:
            scores = np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1.0)) - self.label_offsets
            labels = [self.class_names[i] for i in scores.argmax(axis=1)]
        else:
            labels = [self.class_names[i] for i in probabilities.argmax(axis=1)]
        records = [dict(zip(self.class_names, row)) for row in probabilities.astype(np.float64).tolist()]
        if LABEL_COLUMN not in self.class_names:
            for record, label in zip(records, labels):
                record[LABEL_COLUMN] = label
        return records

mlflow.models.set_model(SavedModelClassifier())
