"""LiteRT conversion on small real SavedModels (no training needed): a model that needs a
TensorFlow op is refused in one line naming the op and the layer, for both variants, instead of
a file with TensorFlow kernels silently embedded; the interpreter's dynamic batch and its input
contract. The end-to-end export of a trained model is tests/test_edge.py."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.errors import PipelineError
from pipelines.export import litert


def saved_model(folder, with_determinant: bool):
    """uint8 4x4 images -> Rescaling -> (a layer calling tf.linalg.det) -> softmax, exported as the pipeline exports."""
    import tensorflow as tf

    from pipelines.core.runtime import import_keras

    keras = import_keras()

    class Determinant(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.det(x)[..., None]

    image = keras.Input((4, 4), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(image)
    x = Determinant(name="determinant")(x) if with_determinant else keras.layers.Flatten()(x)
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax")(x))
    model.export(str(folder), format="tf_saved_model", verbose=False)
    return model


CALIBRATION = np.random.default_rng(0).integers(0, 256, (16, 4, 4), dtype=np.uint8)


@pytest.mark.parametrize("variant", litert.VARIANTS)
def test_a_model_needing_tensorflow_ops_is_refused_naming_the_op_and_layer(tmp_path, variant):
    saved_model(tmp_path / "model", with_determinant=True)
    with pytest.raises(PipelineError) as error:
        litert.convert(tmp_path / "model", variant, CALIBRATION)
    message = str(error.value)
    assert message.startswith(f"LiteRT {variant} refused: the model needs tf.MatrixDeterminant (at ")
    assert "determinant" in message and "SELECT_TF_OPS" in message and "\n" not in message


def test_int8_file_takes_uint8_any_batch_and_answers_probabilities(tmp_path):
    model = saved_model(tmp_path / "model", with_determinant=False)
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(litert.convert(tmp_path / "model", "int8", CALIBRATION))
    runner = litert.LiteRTModel(path, threads=1)
    assert runner.input_dtype == np.uint8 and runner.input_shape == (4, 4)
    expected = np.asarray(model.predict(CALIBRATION, verbose=0))
    for batch in (1, 7, 16):  # resized on the fly: the signature's batch is dynamic
        answered = runner.predict(CALIBRATION[:batch])
        assert answered.shape == (batch, 3) and answered.dtype == np.float32
        assert np.abs(answered - expected[:batch]).max() < 0.05  # int8 steps of the softmax: 1/256
    with pytest.raises(PipelineError, match=r"takes uint8 \[batch, 4, 4\], got float32"):
        runner.predict(CALIBRATION.astype(np.float32))


def test_int8_needs_real_calibration_images(tmp_path):
    saved_model(tmp_path / "model", with_determinant=False)
    with pytest.raises(PipelineError, match="calibration images"):
        litert.convert(tmp_path / "model", "int8", None)
