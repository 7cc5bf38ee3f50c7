"""Arrays in memory -> batches for `fit()`.

With TensorFlow present: `tf.data` over arrays decoded once (cache, seeded shuffle,
batch, prefetch). `prefetch(2)`, not AUTOTUNE: measured here, AUTOTUNE made `fit()` idle
13-15 s at every epoch boundary on this CPU, at no throughput gain. Without TensorFlow
(JAX on the accelerator machine) Keras batches the NumPy arrays itself.
"""

from __future__ import annotations

import numpy as np

from pipelines.dataset import Split
from pipelines.runtime import has_tensorflow


def as_model_inputs(x):
    """Tables become a dict of column arrays (one model input per column); images stay arrays."""
    if hasattr(x, "columns"):
        return {column: x[column].to_numpy() for column in x.columns}
    return x


def fit_arguments(split: Split, batch_size: int, seed: int, training: bool) -> dict:
    """Keyword arguments for `fit`/`evaluate`: `x=` a dataset, or `x`, `y`, `batch_size` arrays."""
    x = as_model_inputs(split.x)
    if not has_tensorflow():
        return {"x": x, "y": split.y, "batch_size": batch_size, **({"shuffle": True} if training else {})}
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, split.y.astype(np.int64)))
    dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).prefetch(2)
    return {"x": dataset, **({"shuffle": False} if training else {})}
