"""A small MLP for tabular data whose preprocessing lives inside the model, so the exported
model takes the raw named columns a client records (one float tensor per column, NaN for
"not measured") and nothing can drift between training and serving.

- numeric column: a missing-value indicator, then the value imputed with the training mean
  and normalised with statistics adapted on the training rows only;
- categorical column of numeric codes: missing becomes its own code, then an `IntegerLookup`
  one-hot over the codes seen in training, with an out-of-vocabulary bucket for any other;
- categorical column of text (its training frame column holds strings, e.g. "red"): a string
  input, then a `StringLookup` one-hot likewise ("" = missing is a category like any other).
"""

from __future__ import annotations

import functools
from typing import Annotated

import numpy as np

from pipelines.core.domains import Range
from pipelines.core.runtime import import_keras
from pipelines.data.table_schema import signature_name

MISSING_CODE = -2  # IntegerLookup reserves -1 for its out-of-vocabulary token


@functools.cache
def _layers():
    """The two custom layers, defined (and registered for `.keras` loading) on first use."""
    keras = import_keras()

    @keras.saving.register_keras_serializable(package="pipelines")
    class FillMissing(keras.layers.Layer):
        """NaN -> `fill_value`; optionally cast to int64 (for lookups)."""

        def __init__(self, fill_value: float = 0.0, integer: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.fill_value, self.integer = float(fill_value), bool(integer)

        def call(self, x):
            ops = keras.ops
            filled = ops.where(ops.isnan(x), ops.cast(self.fill_value, x.dtype), x)
            return ops.cast(filled, "int64") if self.integer else filled

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "fill_value": self.fill_value, "integer": self.integer}

    @keras.saving.register_keras_serializable(package="pipelines")
    class MissingIndicator(keras.layers.Layer):
        """1.0 where the value is NaN, else 0.0."""

        def call(self, x):
            return keras.ops.cast(keras.ops.isnan(x), "float32")

        def compute_output_shape(self, input_shape):
            return input_shape

    return (FillMissing, MissingIndicator)


def register() -> None:
    """Make the layers known before loading a `.keras` file that contains them."""
    _layers()


def build_tabular_mlp(
    train_frame,
    numeric: tuple,
    categorical: tuple,
    num_classes: int,
    hidden_units: Annotated[tuple, Range(min=1)] = (32, 16),
    dropout: Annotated[float, Range(0, 1, max_open=True)] = 0.3,
    name: str = "tabular_mlp",
):
    """Adapts every statistic on `train_frame` (the training rows only, raw column names); returns
    an uncompiled model: {signature_name(column): [batch] float32 or string} -> class
    probabilities `[batch, num_classes]`
    (for two classes, from one sigmoid unit: column 1 is P(positive))."""
    keras = import_keras()
    layers = keras.layers
    FillMissing, MissingIndicator = _layers()
    text = {column for column in categorical if train_frame[column].dtype == object}
    # Keyed and named (in the exported signature too) by TensorFlow-safe names: `mean radius`
    # is the input `mean_radius`; the task feeds, and serving maps, the columns by those.
    inputs = {signature_name(column): keras.Input(shape=(), dtype="string" if column in text else "float32",
                                                  name=signature_name(column))
              for column in (*numeric, *categorical)}
    encoded = []
    for column in numeric:
        value = layers.Reshape((1,), name=f"{signature_name(column)}_column")(inputs[signature_name(column)])
        train_values = train_frame[column].to_numpy(np.float32)
        mean = float(np.nanmean(train_values)) if np.isfinite(train_values).any() else 0.0
        normalise = layers.Normalization(name=f"{signature_name(column)}_normalise")
        normalise.adapt(np.where(np.isnan(train_values), mean, train_values).reshape(-1, 1))
        encoded.append(normalise(FillMissing(mean, name=f"{signature_name(column)}_impute")(value)))
        encoded.append(MissingIndicator(name=f"{signature_name(column)}_missing")(value))
    for column in categorical:
        if column in text:
            lookup = layers.StringLookup(num_oov_indices=1, output_mode="one_hot", name=f"{signature_name(column)}_lookup")
            lookup.adapt(train_frame[column].to_numpy(str).reshape(-1, 1))
            encoded.append(lookup(layers.Reshape((1,), name=f"{signature_name(column)}_column")(inputs[signature_name(column)])))
            continue
        value = layers.Reshape((1,), name=f"{signature_name(column)}_column")(inputs[signature_name(column)])
        codes = FillMissing(MISSING_CODE, integer=True, name=f"{signature_name(column)}_code")(value)
        lookup = layers.IntegerLookup(num_oov_indices=1, output_mode="one_hot", name=f"{signature_name(column)}_lookup")
        lookup.adapt(np.nan_to_num(train_frame[column].to_numpy(np.float32), nan=MISSING_CODE).astype(np.int64).reshape(-1, 1))
        encoded.append(lookup(codes))
    x = layers.Concatenate(name="features")(encoded)
    for index, units in enumerate(hidden_units):
        x = layers.Dense(units, activation="relu", name=f"dense_{index}")(x)
        x = layers.Dropout(dropout, name=f"dropout_{index}")(x)
    if num_classes == 2:
        # One sigmoid unit (a logistic model at its core), served as both classes' probabilities
        # like every other model: `[batch, 2]`, column 1 P(positive).
        positive = layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
        outputs = layers.Concatenate(name="probabilities")([keras.ops.subtract(1.0, positive), positive])
    else:
        outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
