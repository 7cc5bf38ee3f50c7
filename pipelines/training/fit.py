"""Compile and fit a spec's training model: schedule, callbacks, class weights, resume.

A run killed halfway (Ctrl-C, OOM, a reboot) loses at most the epoch in progress:
`BackupAndRestore` saves model and optimizer state after every epoch, and running the same
command again continues from there, in the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.core import paths
from pipelines.core.errors import PipelineError, UsageError
from pipelines.core.runtime import import_keras, seed_everything
from pipelines.data.dataset import Dataset
from pipelines.data.input_pipeline import as_model_inputs, fit_arguments, steps_per_epoch
from pipelines.modeling import builders
from pipelines.modeling.models import Models, build_models, network_input_shape
from pipelines.training.strategy import DistributionSetup, end_distribution, peer_failure, setup_distribution


@dataclass
class TrainResult:
    models: Models
    history: dict[str, list[float]]
    epochs_run: int
    fit_seconds: float
    distribution: DistributionSetup
    batching: dict  # global batch, this process's part of it, what it fed an epoch (for the run's tags)


def spec_fingerprint(spec) -> str:
    """What must match for a backup to be resumed: everything but export settings."""
    data = spec.to_dict()
    data.pop("export", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResumeState:
    """A run's own backup folder, `models/<usecase>/checkpoints/backup-<spec fingerprint>[-k]/`:
    Keras' per-epoch backup plus the MLflow run it belongs to.

    Keyed by the spec, so running the same command again finds it; held under an exclusive
    lock (`<folder>.lock`, released when the process ends, even by SIGKILL), so two runs at
    once never share one: the second identical command takes `-1`, `-2`, ...
    """

    def __init__(self, spec):
        self.fingerprint = spec_fingerprint(spec)
        self.folder, self._lock = self._claim(paths.checkpoints_dir(spec.name))
        self.state_file = self.folder / "state.json"

    def _claim(self, root: Path):
        import fcntl

        root.mkdir(parents=True, exist_ok=True)
        for index in range(1000):
            folder = root / (f"backup-{self.fingerprint}" + (f"-{index}" if index else ""))
            lock = open(folder.with_name(folder.name + ".lock"), "a")  # noqa: SIM115 - held for the run
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process is running this very command
                lock.close()
                continue
            return folder, lock
        raise PipelineError(f"more than 1000 runs of the same spec at once in {root}")

    def pending_run_id(self) -> str | None:
        if not self.state_file.is_file():
            if self.folder.exists():
                shutil.rmtree(self.folder)
            return None
        return json.loads(self.state_file.read_text()).get("run_id")

    def remember(self, run_id: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"fingerprint": self.fingerprint, "run_id": run_id}))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def class_weights(y: np.ndarray, num_classes: int, power: float = 1.0) -> dict[int, float]:
    """Inverse-frequency weights to the `power`: at 1 ("balanced") each class contributes
    equally to the loss; absent classes get 0. (Not sklearn's `compute_class_weight`: it
    refuses a class missing from `y`, which a sample or a small fold can lack.)"""
    counts = np.bincount(y, minlength=num_classes).astype(float)
    weights = np.where(counts > 0, (len(y) / (num_classes * np.maximum(counts, 1))) ** power, 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def learning_rate_schedule(spec, steps_per_epoch: int):
    keras = import_keras()
    train = spec.train
    if train.schedule == "constant":
        return train.learning_rate
    if train.schedule != "cosine":
        raise UsageError(f"unknown schedule '{train.schedule}'; known: cosine, constant")
    total = max(1, train.epochs * steps_per_epoch)
    warmup = min(train.warmup_epochs * steps_per_epoch, total - 1)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, total - warmup, alpha=0.01, warmup_target=train.learning_rate, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(train.learning_rate, total, alpha=0.01)


def compile_for_training(models: Models, spec, steps_per_epoch: int) -> None:
    keras = import_keras()
    schedule = learning_rate_schedule(spec, steps_per_epoch)
    if spec.train.weight_decay:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=spec.train.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    models.training.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def train(spec, dataset: Dataset, callbacks: tuple = (), resume: ResumeState | None = None) -> TrainResult:
    keras = import_keras()  # sets the backend up quietly before anything else touches Keras
    # The precision policy is global in Keras; the models built here keep theirs, and the
    # caller gets its own policy back (a later model in the same process is not silently bf16).
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(spec, dataset, callbacks, resume)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(spec, dataset: Dataset, callbacks: tuple, resume: ResumeState | None) -> TrainResult:
    seed_everything(spec.train.seed, spec.train.deterministic)
    distribution = setup_distribution(spec.train.precision, cpu_bfloat16=builders.cpu_bfloat16_pays(spec.model.builder))
    batch_size = distribution.global_batch(spec.train.batch_size)
    shard = distribution.shard()
    steps = steps_per_epoch(len(dataset.train), batch_size, shard)
    with distribution.scope:
        models = build_models(spec, dataset)
        compile_for_training(models, spec, steps)

    weights = class_weights(dataset.train.y, spec.num_classes, spec.train.class_weights) if spec.train.class_weights else None
    phase = _Phase(spec, models, dataset, batch_size, tuple(callbacks), weights, shard)
    process_batch = distribution.process_batch(spec.train.batch_size)
    batching = {"global_batch": batch_size, "process_batch": process_batch, "process_examples_per_epoch": steps * process_batch}
    if distribution.cluster is not None:
        print(f"[{spec.name}] {distribution.cluster.name}: global batch {batch_size} = {process_batch} examples from each of "
              f"{distribution.processes} processes; this one feeds its shard, {steps * process_batch} of {len(dataset.train)} "
              f"training examples an epoch ({steps} steps)", flush=True)

    started = time.perf_counter()
    try:
        history = phase.fit(0, spec.train.epochs, resume.folder if resume else None, spec.train.seed)
        if spec.train.fine_tune_epochs:
            with distribution.scope:
                _prepare_fine_tuning(spec, models, steps)
            fine_tuned = phase.fit(
                spec.train.epochs,
                spec.train.epochs + spec.train.fine_tune_epochs,
                resume.folder / "fine_tune" if resume else None,
                spec.train.seed + 1,
            )
            history = {k: history.get(k, []) + fine_tuned.get(k, []) for k in {*history, *fine_tuned}}
    except Exception as exc:
        failure = peer_failure(exc)  # a dead peer: one line, not an XLA stack
        if failure is None:
            raise
        raise failure from None
    if distribution.cluster is not None:
        models = _on_this_process(spec, dataset, models, distribution)
    recompute_batch_norm_statistics(models.network, dataset.train.x, spec.train.batch_size)
    fit_seconds = time.perf_counter() - started
    return TrainResult(models, history, len(history.get("loss", [])), fit_seconds, distribution, batching)


def _nested_layers(model) -> list:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found += _nested_layers(layer)
    return found


def recompute_batch_norm_statistics(network, images, batch_size: int) -> int:
    """Precise BatchNorm: give every BatchNorm layer that trained (normalised by batch statistics
    during fit) the average of those statistics over the training images under the final
    weights, in place of Keras' moving averages. These (momentum 0.99) lag the weights, and on a
    small data set they never catch up (on the cucumber images, near-chance answers with them:
    docs/benchmarks.md). On large data sets the two agree.
    Frozen layers (a pretrained backbone's) keep theirs. A layer called several times a batch
    (a backbone shared by views) keeps the last call's. Returns how many layers it set."""
    keras = import_keras()

    layers = [layer for layer in _nested_layers(network) if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers or not len(images):
        return 0
    momenta = [layer.momentum for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]
    batches = range(0, len(images), batch_size)
    try:
        for layer in layers:
            layer.momentum = 0.0  # each call leaves its batch statistics in the moving mean and variance
        for start in batches:
            batch = np.asarray(images[start : start + batch_size], dtype="float32") / 255.0
            network(batch.reshape((len(batch),) + network_input_shape(batch.shape[1:])), training=True)
            for total, layer in zip(sums, layers):
                total[0] = total[0] + keras.ops.convert_to_numpy(layer.moving_mean)
                total[1] = total[1] + keras.ops.convert_to_numpy(layer.moving_variance)
        for (mean, variance), layer in zip(sums, layers):
            layer.moving_mean.assign(mean / len(batches))
            layer.moving_variance.assign(variance / len(batches))
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def _on_this_process(spec, dataset: Dataset, models: Models, distribution: DistributionSetup) -> Models:
    """The trained serving model as an ordinary one-process model: after a multi-process fit its
    weights are arrays spanning every process, which this process cannot predict with or
    export. Every process holds a full replica of them (data parallelism), so its own copy is
    the model."""
    values = [_local_value(variable) for variable in models.serving.weights]
    end_distribution(distribution)
    local = build_models(spec, dataset)
    local.serving.set_weights(values)
    return local


def _local_value(variable) -> np.ndarray:
    value = variable.value
    shards = getattr(value, "addressable_shards", None)
    if shards:  # a replicated global JAX array: this process's replica is the whole value
        return np.asarray(shards[0].data)
    return np.asarray(import_keras().ops.convert_to_numpy(value))


def weights_sha256(model) -> str:
    """A fingerprint of a model's weights (values, shapes and dtypes, in order): two processes
    of one data-parallel run must print the same one, and so do two runs that trained alike."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(_local_value(weight))
        digest.update(f"{weight.path}:{value.dtype}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


@dataclass
class _Phase:
    """What every `fit` of a run shares; a phase is a range of epochs with its own backup."""

    spec: object
    models: Models
    dataset: Dataset
    batch_size: int
    callbacks: tuple
    class_weight: dict | None
    shard: tuple[int, int] | None = None  # (process, processes) in a multi-process run

    def fit(self, initial_epoch: int, epochs: int, backup: Path | None, seed: int) -> dict[str, list[float]]:
        keras = import_keras()
        spec = self.spec
        callbacks = list(self.callbacks)
        if backup is not None:
            # Seed states first: when Keras' backup says "epoch k", the states of epoch k are on disk.
            callbacks.append(seed_state_backup(backup))
            callbacks.append(keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False))
        validation = _validation_data(self.dataset, self.batch_size) if len(self.dataset.val) else None
        # Resuming at epoch k: the input stream starts k epochs in, as if never interrupted.
        skip = max(0, _completed_epochs(backup) - initial_epoch) if backup is not None else 0
        if spec.train.early_stopping_patience and validation is None and spec.primary_metric.startswith("val_"):
            raise UsageError(f"early stopping watches {spec.primary_metric}, so it needs validation data: set val_fraction above 0")
        if spec.train.early_stopping_patience:
            mode = "min" if spec.primary_metric.endswith("loss") else "max"
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=spec.primary_metric, mode=mode, patience=spec.train.early_stopping_patience, restore_best_weights=True
                )
            )
        history = self.models.training.fit(
            **fit_arguments(self.dataset.train, self.batch_size, seed, training=True, skip_epochs=skip, shard=self.shard),
            validation_data=validation,
            initial_epoch=initial_epoch,
            epochs=epochs,
            class_weight=self.class_weight,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        return {k: [float(v) for v in values] for k, values in history.history.items()}


def seed_state_backup(folder: Path):
    """A callback keeping the random layers' seed states (dropout, augmentation) beside Keras'
    backup, which saves weights and optimizer but not these: without them a resumed run draws
    other dropout masks than an uninterrupted one, and ends with other metrics.

    One file per epoch (the last two kept), written before Keras' backup of that epoch: a kill
    between the two writes leaves Keras at the previous epoch, whose states are still there."""
    keras = import_keras()

    def states_file(epoch: int) -> Path:
        return folder / f"seed_states-{epoch}.npz"

    class SeedStateBackup(keras.callbacks.Callback):
        def _states(self):
            return [v for v in self.model.variables if v.path.endswith("seed_generator_state")]

        def on_train_begin(self, logs=None):
            path = states_file(_completed_epochs(folder))
            if not path.is_file():
                return
            with np.load(path) as saved:
                for index, variable in enumerate(self._states()):
                    variable.assign(saved[f"state_{index}"])

        def on_epoch_end(self, epoch, logs=None):
            folder.mkdir(parents=True, exist_ok=True)
            states = {f"state_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self._states())}
            staging = folder / f".seed_states-{os.getpid()}.npz"
            np.savez(staging, **states)
            staging.replace(states_file(epoch + 1))
            stale = states_file(epoch - 1)
            if stale.is_file():
                stale.unlink()

    return SeedStateBackup()


def _completed_epochs(backup: Path) -> int:
    """Epochs (counted from the run's start) that Keras' backup in `backup` holds; 0 if none."""
    metadata = backup / "training_metadata.json"
    return int(json.loads(metadata.read_text()).get("epoch", 0)) if metadata.is_file() else 0


def unfreeze_top(backbone, count: int) -> int:
    """Make the top `count` layers of `backbone` trainable (all when 0), except BatchNorm,
    whose statistics a small data set would wreck; returns how many layers now train."""
    keras = import_keras()
    backbone.trainable = True
    candidates = backbone.layers if count == 0 else backbone.layers[-count:]
    for layer in backbone.layers:
        layer.trainable = layer in candidates and not isinstance(layer, keras.layers.BatchNormalization)
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def _prepare_fine_tuning(spec, models: Models, steps_per_epoch: int) -> None:
    """Phase 2 of transfer learning: unfreeze the backbone's top and recompile at
    `fine_tune_learning_rate`, with a fresh schedule over `fine_tune_epochs`."""
    import dataclasses

    try:
        backbone = models.network.get_layer("backbone")
    except ValueError:
        raise PipelineError(
            f"fine_tune_epochs needs a pretrained backbone; builder '{spec.model.builder}' has none (use model.builder=transfer)"
        ) from None
    unfreeze_top(backbone, spec.train.fine_tune_layers)
    phase = dataclasses.replace(
        spec,
        train=dataclasses.replace(
            spec.train, epochs=spec.train.fine_tune_epochs, learning_rate=spec.train.fine_tune_learning_rate, warmup_epochs=0
        ),
    )
    compile_for_training(models, phase, steps_per_epoch)


def _validation_data(dataset: Dataset, batch_size: int):
    arguments = fit_arguments(dataset.val, batch_size, 0, training=False)
    if "y" in arguments:
        return arguments["x"], arguments["y"]
    return arguments["x"]


def predict_probabilities(model, x, batch_size: int = 512) -> np.ndarray:
    """Batch-by-batch `predict_on_batch`: `model.predict` on arrays builds a parallel tf.data
    map that TF's determinism rewrite re-parses, printing a spurious C++ error line."""

    inputs = as_model_inputs(x)
    count = len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)
    batches = []
    for start in range(0, count, batch_size):
        if isinstance(inputs, dict):
            batch = {name: column[start : start + batch_size] for name, column in inputs.items()}
        else:
            batch = inputs[start : start + batch_size]
        batches.append(np.asarray(model.predict_on_batch(batch)))
    return np.concatenate(batches) if batches else np.zeros((0,))


def save_checkpoint(model, spec, info: dict) -> Path:
    """The trained serving model as `.keras`, for `export` without retraining."""
    folder = paths.checkpoints_dir(spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "latest.keras"
    staging = folder / f".latest-{os.getpid()}.keras"  # two runs at once never write one file
    model.save(str(staging))
    staging.replace(path)  # atomic: `latest` is whichever run finished last, never a mix
    info_staging = folder / f".latest-{os.getpid()}.json"
    info_staging.write_text(json.dumps(info, indent=2, default=str))
    info_staging.replace(folder / "latest.json")
    return path
