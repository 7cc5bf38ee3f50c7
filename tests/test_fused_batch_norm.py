import numpy as np

from pipelines.core.runtime import import_keras
from pipelines.modeling.builders.fused_batch_norm import batch_normalization, register


def _pair(momentum=0.9):
    """Keras' layer and the fused one, built on the same shape with the same weights."""
    keras = import_keras()
    plain = keras.layers.BatchNormalization(momentum=momentum)
    fused = batch_normalization(momentum=momentum)
    plain.build((None, 6, 6, 4))
    fused.build((None, 6, 6, 4))
    rng = np.random.default_rng(0)
    weights = [rng.normal(1, 0.2, 4), rng.normal(0, 0.2, 4), rng.normal(0, 1, 4), rng.uniform(0.5, 2, 4)]
    plain.set_weights(weights)
    fused.set_weights(weights)
    return plain, fused


def test_training_forward_pass_and_moving_statistics_match_keras():
    plain, fused = _pair()
    assert type(fused).__name__ == "FusedBatchNormalization"
    x = np.random.default_rng(1).normal(3, 2, (8, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), np.asarray(plain(x, training=True)), atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), atol=1e-5)
    # The fused kernel's batch variance has Bessel's correction: n/(n-1) with n = 8*6*6.
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=2e-3)


def test_gradients_match_keras():
    import tensorflow as tf

    plain, fused = _pair()
    x = tf.constant(np.random.default_rng(2).normal(0, 1, (8, 6, 6, 4)).astype("float32"))
    gradients = []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) ** 3)
        gradients.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    for ours, keras_ in zip(gradients[1], gradients[0]):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_), rtol=1e-3, atol=1e-3)


def test_inference_is_keras_own_path():
    plain, fused = _pair()
    x = np.random.default_rng(3).normal(0, 1, (2, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(fused(x, training=False)), np.asarray(plain(x, training=False)), atol=1e-6)


def test_other_ranks_fall_back_to_keras():
    keras = import_keras()
    plain, fused = keras.layers.BatchNormalization(), batch_normalization()
    x = np.random.default_rng(4).normal(0, 1, (16, 5)).astype("float32")
    np.testing.assert_allclose(np.asarray(fused(x, training=True)), np.asarray(plain(x, training=True)), atol=1e-5)


def test_a_saved_model_file_reloads(tmp_path):
    keras = import_keras()
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, batch_normalization(momentum=0.9)(inputs))
    model.save(tmp_path / "bn.keras")
    register()
    reloaded = keras.models.load_model(tmp_path / "bn.keras")
    assert type(reloaded.layers[-1]).__name__ == "FusedBatchNormalization"
    assert reloaded.layers[-1].momentum == 0.9
