"""BatchNormalization that trains with TensorFlow's fused kernel.

Keras 3's BatchNormalization computes batch moments and the normalisation as separate
element-wise ops. Keras 2 used TF's fused kernel (`FusedBatchNormV3`, oneDNN-accelerated on
CPU) instead. Measured here (2 CPU cores, residual_cnn on 28x28, batch 128): 465 images/s
with Keras' layer, 575 with the fused one, the same as with no BatchNorm at all.

Same weights, same configuration, same inference path (Keras' own); only the training-mode
forward pass differs, and only for 4-D channels-last inputs under the TensorFlow backend.
Elsewhere (JAX on the accelerator machine, other ranks) it is Keras' layer unchanged.
The moving variance is updated with the batch variance the kernel returns, which has
Bessel's correction (n/(n-1)): with n = batch x height x width it is the same to ~1e-5.
"""

from __future__ import annotations

import functools

from pipelines.core.runtime import import_keras


@functools.cache
def _layer_class():
    """Defined (and registered for `.keras` loading) on first use: it needs Keras."""
    keras = import_keras()

    @keras.saving.register_keras_serializable(package="pipelines")
    class FusedBatchNormalization(keras.layers.BatchNormalization):
        def _fusable(self, inputs, training, mask) -> bool:
            return (
                bool(training)
                and self.trainable
                and mask is None
                and not self.renorm
                and len(inputs.shape) == 4
                and self.axis in (-1, 3)
                and keras.backend.backend() == "tensorflow"
            )

        def call(self, inputs, training=None, mask=None):
            if not self._fusable(inputs, training, mask):
                return super().call(inputs, training=training, mask=mask)
            import tensorflow as tf

            channels = inputs.shape[-1]
            x = tf.cast(inputs, "float32")
            gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
            beta = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
            return tf.cast(y, self.compute_dtype)

    return FusedBatchNormalization


def batch_normalization(**kwargs):
    """A BatchNormalization layer for the builders: the fused one under TensorFlow."""
    keras = import_keras()
    if keras.backend.backend() != "tensorflow":
        return keras.layers.BatchNormalization(**kwargs)
    return _layer_class()(**kwargs)


def register() -> None:
    """Make the layer known before loading a `.keras` file that may contain it."""
    _layer_class()
