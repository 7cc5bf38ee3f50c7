"""Arrays in memory (or memory-mapped files) -> batches for `fit()`.

With TensorFlow present: `tf.data` over arrays decoded once (cache, seeded shuffle,
batch, prefetch). `prefetch(2)`, not AUTOTUNE: measured here, AUTOTUNE made `fit()` idle
13-15 s at every epoch boundary on this CPU, at no throughput gain. Without TensorFlow
(JAX on the accelerator machine) Keras batches the NumPy arrays itself. A memory-mapped
array (a photo folder's decoded cache) is never loaded whole: batches are read from it.
"""

from __future__ import annotations

import math

import numpy as np

from pipelines.data.dataset import Split
from pipelines.core.errors import PipelineError
from pipelines.core.runtime import has_tensorflow


def as_model_inputs(x):
    """Tables become a dict of column arrays (one model input per column); images stay arrays."""
    if hasattr(x, "columns"):
        return {column: x[column].to_numpy() for column in x.columns}
    return x


def steps_per_epoch(examples: int, global_batch: int, shard: tuple[int, int] | None = None) -> int:
    """Several processes step together, so every step must be a full global batch there (the
    remainder of an epoch is dropped); one process keeps its last, smaller batch."""
    return examples // global_batch if shard else math.ceil(examples / global_batch)


def fit_arguments(split: Split, batch_size: int, seed: int, training: bool, skip_epochs: int = 0,
                  shard: tuple[int, int] | None = None) -> dict:
    """Keyword arguments for `fit`/`evaluate`: `x=` a dataset, or `x`, `y`, `batch_size` arrays.

    For training, the epochs are one seeded, endless stream (shuffle, batch, repeat) cut into
    `steps_per_epoch`: epoch k sees the same order whether the run got there directly or was
    killed and resumed, which starts the stream `skip_epochs` epochs in.

    `shard=(process, processes)` (training on several processes): `batch_size` is the global
    batch; every process draws the same seeded global batches and feeds only its own slice of
    each, `batch_size / processes` examples, so together they train on exactly what one
    process would have."""
    x = as_model_inputs(split.x)
    if shard and training:
        return _sharded_fit_arguments(x, split.y, batch_size, seed, skip_epochs, *shard)
    if not has_tensorflow():
        return {"x": x, "y": split.y, "batch_size": batch_size, **({"shuffle": True} if training else {})}
    import tensorflow as tf

    if isinstance(x, np.memmap):
        return _memory_mapped_arguments(x, split.y, batch_size, seed, training, skip_epochs)
    dataset = tf.data.Dataset.from_tensor_slices((x, split.y.astype(np.int64)))
    dataset = dataset.cache()
    if not training:
        return {"x": dataset.batch(batch_size).prefetch(2)}
    steps = steps_per_epoch(len(split), batch_size)
    dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat()
    dataset = dataset.skip(skip_epochs * steps).prefetch(2)
    return {"x": dataset, "steps_per_epoch": steps, "shuffle": False}


def _memory_mapped_arguments(x: np.memmap, y: np.ndarray, batch_size: int, seed: int, training: bool, skip_epochs: int) -> dict:
    """Batches drawn from a memory-mapped array (`pipelines.data.loaders.image_folder`'s cache)
    without loading it: `from_tensor_slices` would copy all of it into one tensor and `cache()`
    keep it, so memory would grow with the data. Here tf.data shuffles and batches *indices*
    and each batch's rows are read from the file; shuffling `range(n)` with the same seed gives
    the same batches as shuffling the examples, so epochs, resume and seeds behave as above."""
    import tensorflow as tf

    labels = y.astype(np.int64)
    shape = (None, *x.shape[1:])

    def rows(indices):
        picked = np.sort(indices)  # read the file forwards; the batch's order is shuffled already
        return x[picked], labels[picked]

    def gather(indices):
        images, classes = tf.numpy_function(rows, [indices], (tf.uint8, tf.int64), stateful=False)
        images.set_shape(shape)
        classes.set_shape((None,))
        return images, classes

    indices = tf.data.Dataset.range(len(y))
    if not training:
        return {"x": indices.batch(batch_size).map(gather).prefetch(2)}
    steps = steps_per_epoch(len(y), batch_size)
    dataset = indices.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(batch_size).repeat()
    dataset = dataset.skip(skip_epochs * steps).map(gather).prefetch(2)
    return {"x": dataset, "steps_per_epoch": steps, "shuffle": False}


def _sharded_fit_arguments(x, y, global_batch: int, seed: int, skip_epochs: int, process: int, processes: int) -> dict:
    if global_batch % processes:
        raise PipelineError(f"the global batch {global_batch} does not split evenly over {processes} processes")
    steps = steps_per_epoch(len(y), global_batch, (process, processes))
    if steps < 1:
        raise PipelineError(f"{len(y)} training examples make no full global batch of {global_batch}; "
                            "lower batch_size or use more data")
    local = global_batch // processes
    mine = slice(process * local, (process + 1) * local)
    if not has_tensorflow():
        # Equal, disjoint shards of one seeded order; Keras shuffles each shard every epoch.
        order = np.random.default_rng(seed).permutation(len(y))[: steps * global_batch]
        picked = order.reshape(steps, global_batch)[:, mine].reshape(-1)
        return {"x": x[picked], "y": y[picked], "batch_size": local, "shuffle": True}
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int64))).cache()
    dataset = dataset.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(global_batch, drop_remainder=True).repeat()
    dataset = dataset.map(lambda images, labels: (images[mine], labels[mine]))
    dataset = dataset.skip(skip_epochs * steps).prefetch(2)
    return {"x": dataset, "steps_per_epoch": steps, "shuffle": False}
