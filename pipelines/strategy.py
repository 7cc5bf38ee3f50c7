"""Where training runs: one place picks the distribution strategy, precision and batch size.

- TensorFlow backend: one device (CPU or GPU) or `MirroredStrategy` over the GPUs of one
  host. `MultiWorkerMirroredStrategy` is refused: Keras 3's `fit` fails under it today
  (keras-team/keras#20585); several hosts use the JAX backend instead.
- JAX backend: `keras.distribution.DataParallel` over all local devices, and across hosts
  when `KERAS_DISTRIBUTION_JOB_ADDRESSES` / `_NUM_PROCESSES` / `_PROCESS_ID` are set.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

from pipelines.errors import PipelineError
from pipelines.runtime import import_keras


@dataclass
class DistributionSetup:
    backend: str
    strategy: str  # a readable name: "default", "OneDevice", "Mirrored", "DataParallel"
    devices: list[str]
    replicas: int
    precision: str
    scope: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext, repr=False)

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def as_tags(self) -> dict[str, str]:
        return {
            "keras_backend": self.backend,
            "distribution": self.strategy,
            "devices": ",".join(self.devices),
            "replicas": str(self.replicas),
            "precision": self.precision,
        }


def _pick_precision(requested: str, accelerators: list, supports_bf16: bool, cpu_bf16: bool = False) -> str:
    if requested != "auto":
        return requested
    if not accelerators:
        # float16 is 16x slower on CPU. bfloat16 pays where the CPU multiplies it in hardware
        # (measured: residual_cnn epochs ~1.4x faster with AMX-BF16); elsewhere it is emulated,
        # and some models (MobileNet's depthwise convolutions) are slower in it even there.
        return "mixed_bfloat16" if cpu_bf16 else "float32"
    return "mixed_bfloat16" if supports_bf16 else "mixed_float16"


def cpu_has_amx_bf16() -> bool:
    """Intel AMX with bfloat16 tiles (Sapphire Rapids and later), read from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def setup_distribution(precision: str = "auto", cpu_bfloat16: bool = True) -> DistributionSetup:
    """`cpu_bfloat16`: whether the model to train is one that bfloat16 speeds up on a CPU
    (see `pipelines.builders.BuilderEntry`); precision=auto then uses it where AMX-BF16 exists."""
    keras = import_keras()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        setup = _setup_tensorflow(precision, cpu_bfloat16)
    elif backend == "jax":
        setup = _setup_jax(precision)
    else:
        setup = DistributionSetup(backend, "default", ["default"], 1, _pick_precision(precision, [], False))
    keras.mixed_precision.set_global_policy(setup.precision)
    return setup


def _setup_tensorflow(precision: str, cpu_bfloat16: bool) -> DistributionSetup:
    import tensorflow as tf

    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    workers = tf_config.get("cluster", {}).get("worker", [])
    if len(workers) > 1:
        raise PipelineError(
            "TF_CONFIG names several workers, but Keras 3 fit() fails under MultiWorkerMirroredStrategy "
            "(keras-team/keras#20585); run multi-host training with KERAS_BACKEND=jax and KERAS_DISTRIBUTION_* variables"
        )
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    supports_bf16 = all(
        tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)) >= (8, 0) for gpu in gpus
    )
    chosen = _pick_precision(precision, gpus, supports_bf16, cpu_bf16=not gpus and cpu_bfloat16 and cpu_has_amx_bf16())
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return DistributionSetup("tensorflow", "Mirrored", [g.name for g in gpus], strategy.num_replicas_in_sync, chosen, strategy.scope())
    if len(gpus) == 1:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
        return DistributionSetup("tensorflow", "OneDevice", [gpus[0].name], 1, chosen, strategy.scope())
    return DistributionSetup("tensorflow", "default", ["cpu"], 1, chosen)


def _setup_jax(precision: str) -> DistributionSetup:
    import jax

    keras = import_keras()
    if os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        keras.distribution.initialize()  # reads the KERAS_DISTRIBUTION_* variables
    devices = keras.distribution.list_devices()
    accelerators = [d for d in jax.devices() if d.platform != "cpu"]
    chosen = _pick_precision(precision, accelerators, supports_bf16=True)
    if len(devices) > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return DistributionSetup("jax", "DataParallel", devices, len(devices), chosen)
    return DistributionSetup("jax", "default", devices, 1, chosen)
