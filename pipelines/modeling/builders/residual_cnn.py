"""A small ResNet for 28-64 pixel images: a stem, stages of residual blocks, global pooling.

Each block is conv-BN-ReLU-conv-BN plus a shortcut (a strided 1x1 conv when the shape
changes), then ReLU (He et al., 2016). Costlier than `small_cnn` on a CPU, but BatchNorm and
shortcuts let it go deeper and train at higher learning rates: the builder for GPUs and for
the harder image use cases.
"""

from __future__ import annotations

import functools
from typing import Annotated

from pipelines.core.domains import Range
from pipelines.core.runtime import import_keras
from pipelines.modeling.builders.fused_batch_norm import batch_normalization


def build_residual_cnn(
    input_shape: tuple,
    num_classes: int,
    stem_filters: Annotated[int, Range(min=1)] = 32,
    stages: Annotated[tuple, Range(min=1)] = (32, 64, 128),
    blocks_per_stage: Annotated[int, Range(min=1)] = 1,
    dropout: Annotated[float, Range(0, 1, max_open=True)] = 0.2,
    batch_norm_momentum: Annotated[float, Range(0, 1, max_open=True)] = 0.9,
    name: str = "residual_cnn",
):
    """`stages[i]` channels in stage i; every stage after the first halves the resolution.

    BatchNorm's moving statistics use momentum 0.9 (PyTorch's default), not Keras' 0.99: with
    0.99 they lag the weights for hundreds of steps, and a model trained on a small sample
    evaluates at chance level although its training accuracy is fine."""
    keras = import_keras()
    layers = keras.layers
    BatchNormalization = functools.partial(batch_normalization, momentum=batch_norm_momentum)
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Conv2D(stem_filters, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, width in enumerate(stages):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            prefix = f"stage{stage}_block{block}"
            shortcut = x
            y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv0")(x)
            y = BatchNormalization(name=f"{prefix}_bn0")(y)
            y = layers.ReLU(name=f"{prefix}_relu0")(y)
            y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{prefix}_conv1")(y)
            y = BatchNormalization(name=f"{prefix}_bn1")(y)
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{prefix}_shortcut")(shortcut)
                shortcut = BatchNormalization(name=f"{prefix}_shortcut_bn")(shortcut)
            x = layers.ReLU(name=f"{prefix}_out")(layers.Add(name=f"{prefix}_add")([shortcut, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
