"""A plain convolutional network: the right size for 28-32 pixel images on a CPU."""

from __future__ import annotations

from typing import Annotated

from pipelines.core.domains import Range
from pipelines.core.runtime import import_keras
from pipelines.modeling.builders.fused_batch_norm import batch_normalization


def build_small_cnn(
    input_shape: tuple,
    num_classes: int,
    filters: Annotated[tuple, Range(min=1)] = (32, 64),
    convs_per_block: Annotated[int, Range(min=1)] = 2,
    dense_units: Annotated[int, Range(min=0)] = 128,
    dropout: Annotated[float, Range(0, 1, max_open=True)] = 0.3,
    batch_norm: bool = True,
    name: str = "small_cnn",
):
    """Blocks of `convs_per_block` 3x3 convolutions (`filters[i]` channels), each block
    ending in 2x2 max-pooling; then dropout, a dense layer and the softmax classifier.
    BatchNorm after every convolution lets a short, high-learning-rate schedule converge."""
    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = inputs
    for block, width in enumerate(filters):
        for conv in range(convs_per_block):
            x = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm, name=f"block{block}_conv{conv}")(x)
            if batch_norm:
                x = batch_normalization(name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu", name="dense")(x)
        x = layers.Dropout(dropout, name="dense_dropout")(x)
    # float32 output even under a mixed-precision policy: softmax in bf16 loses probability mass.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
