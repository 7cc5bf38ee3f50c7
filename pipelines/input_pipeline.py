"""Arrays in memory -> batches for `fit()`.

With TensorFlow present: `tf.data` over arrays decoded once (cache, seeded shuffle,
batch, prefetch). `prefetch(2)`, not AUTOTUNE: measured here, AUTOTUNE made `fit()` idle
13-15 s at every epoch boundary on this CPU, at no throughput gain. Without TensorFlow
(JAX on the accelerator machine) Keras batches the NumPy arrays itself.
"""

from __future__ import annotations

import math

import numpy as np

from pipelines.dataset import Split
from pipelines.runtime import has_tensorflow


def as_model_inputs(x):
    """Tables become a dict of column arrays (one model input per column); images stay arrays."""
    if hasattr(x, "columns"):
        return {column: x[column].to_numpy() for column in x.columns}
    return x


def fit_arguments(split: Split, batch_size: int, seed: int, training: bool, skip_epochs: int = 0) -> dict:
    """Keyword arguments for `fit`/`evaluate`: `x=` a dataset, or `x`, `y`, `batch_size` arrays.

    For training, the epochs are one seeded, endless stream (shuffle, batch, repeat) cut into
    `steps_per_epoch`: epoch k sees the same order whether the run got there directly or was
    killed and resumed, which starts the stream `skip_epochs` epochs in."""
    x = as_model_inputs(split.x)
    if not has_tensorflow():
        return {"x": x, "y": split.y, "batch_size": batch_size, **({"shuffle": True} if training else {})}
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, split.y.astype(np.int64)))
    dataset = dataset.cache()
    if not training:
        return {"x": dataset.batch(batch_size).prefetch(2)}
    steps = math.ceil(len(split) / batch_size)
    dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat()
    dataset = dataset.skip(skip_epochs * steps).prefetch(2)
    return {"x": dataset, "steps_per_epoch": steps, "shuffle": False}
