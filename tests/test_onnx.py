"""ONNX conversion of a small real SavedModel through Keras' `export(format="onnx")`, run by
onnxruntime: uint8 input, dynamic batch, the SavedModel's probabilities. The end-to-end export
of a trained model is tests/test_edge.py."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.errors import PipelineError
from pipelines.export import onnx


def test_onnx_file_takes_uint8_any_batch_and_matches_the_savedmodel(tmp_path):
    import tensorflow as tf

    from pipelines.core.runtime import import_keras

    keras = import_keras()
    image = keras.Input((6, 6, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(image, keras.layers.Dense(5, activation="softmax")(x)).export(str(tmp_path / "sm"), format="tf_saved_model",
                                                                            verbose=False)
    path = tmp_path / onnx.FILE_NAME
    path.write_bytes(onnx.convert(tmp_path / "sm", (6, 6, 3)))
    runner = onnx.ONNXModel(path, threads=1)
    assert runner.input_dtype == np.uint8 and runner.input_shape == (6, 6, 3)
    images = np.random.default_rng(1).integers(0, 256, (9, 6, 6, 3), dtype=np.uint8)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    expected = loaded.serve(tf.constant(images)).numpy()
    for batch in (1, 9):
        assert np.abs(runner.predict(images[:batch]) - expected[:batch]).max() < 1e-5
    with pytest.raises(PipelineError, match=r"takes uint8 \[batch, 6, 6, 3\], got uint8 \[9, 6, 6\]"):
        runner.predict(images[..., 0])


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="no such ONNX file"):
        onnx.ONNXModel(tmp_path / "absent.onnx")
