"""Where training runs: one place picks the distribution strategy, precision and batch size.

- TensorFlow backend: one device (CPU or GPU) or `MirroredStrategy` over the GPUs of one
  host. `MultiWorkerMirroredStrategy` is refused: Keras 3's `fit` fails under it today
  (keras-team/keras#20585); several hosts use the JAX backend instead.
- JAX backend: `keras.distribution.DataParallel` over all local devices, and across hosts
  when `KERAS_DISTRIBUTION_JOB_ADDRESSES` / `_NUM_PROCESSES` / `_PROCESS_ID` are set. Each
  process then feeds its own shard of every global batch (`Cluster.shard`), and only process 0
  (the chief) tracks and exports.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field

from pipelines.core.errors import PipelineError
from pipelines.core.runtime import import_keras

# A peer that stops sending heartbeats for this long is declared dead and the run fails (JAX's
# default is 100 s); hosts that start at different times may take this long to join.
PEER_TIMEOUT_ENV = "PIPELINES_PEER_TIMEOUT_SECONDS"
START_TIMEOUT_ENV = "PIPELINES_CLUSTER_START_TIMEOUT_SECONDS"
DEFAULT_PEER_TIMEOUT_SECONDS = 60
DEFAULT_START_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class Cluster:
    """The processes of one multi-process run, from the KERAS_DISTRIBUTION_* variables."""

    coordinator: str  # host:port of process 0
    num_processes: int
    process_id: int

    @property
    def is_chief(self) -> bool:
        return self.process_id == 0

    @property
    def name(self) -> str:
        return f"process {self.process_id}/{self.num_processes}"


_joined: Cluster | None = None


def cluster_from_environment() -> Cluster | None:
    """The cluster the KERAS_DISTRIBUTION_* variables describe, or None for a one-process run.

    `KERAS_DISTRIBUTION_JOB_ADDRESSES` is the coordinator's `host:port` (process 0's host), or
    every process's address comma-separated (Keras' form: the first one coordinates)."""
    addresses = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES", "").strip()
    if not addresses:
        return None
    names = ("KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")
    missing = [name for name in names if not os.environ.get(name, "").strip()]
    if missing:
        raise PipelineError(f"KERAS_DISTRIBUTION_JOB_ADDRESSES is set but {' and '.join(missing)} is not: set all three on every host")
    try:
        count, index = (int(os.environ[name]) for name in names)
    except ValueError:
        raise PipelineError(f"{names[0]} and {names[1]} must be integers, got "
                            f"{os.environ[names[0]]!r} and {os.environ[names[1]]!r}") from None
    if count < 1 or not 0 <= index < count:
        raise PipelineError(f"KERAS_DISTRIBUTION_PROCESS_ID={index} must be in 0..{count - 1} (KERAS_DISTRIBUTION_NUM_PROCESSES={count})")
    listed = [address.strip() for address in addresses.split(",")]
    if len(listed) > 1 and len(listed) != count:
        raise PipelineError(f"KERAS_DISTRIBUTION_JOB_ADDRESSES lists {len(listed)} addresses for {count} processes")
    if ":" not in listed[0]:
        raise PipelineError(f"KERAS_DISTRIBUTION_JOB_ADDRESSES={listed[0]!r}: give the coordinator as host:port, e.g. 10.0.0.1:1234")
    return Cluster(listed[0], count, index)


def _seconds(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        seconds = int(value) if value else default
    except ValueError:
        raise PipelineError(f"{name}={value!r}: give whole seconds") from None
    if seconds < 1:
        raise PipelineError(f"{name}={seconds}: must be at least 1")
    return seconds


def join_cluster() -> Cluster | None:
    """Connect this process to the others (once; later calls return the same cluster).

    Must run before JAX computes anything. Uses `jax.distributed.initialize` directly rather
    than `keras.distribution.initialize`, which has no way to pass the timeouts: with JAX's
    defaults a dead peer is noticed only after 100 s, and a missing one after 300 s."""
    global _joined
    if _joined is not None:
        return _joined
    cluster = cluster_from_environment()
    if cluster is None:
        return None
    keras = import_keras()
    if keras.backend.backend() != "jax":
        raise PipelineError(f"KERAS_DISTRIBUTION_* variables need KERAS_BACKEND=jax (this run uses {keras.backend.backend()}); "
                            "TensorFlow's multi-worker strategy fails with Keras 3 (keras-team/keras#20585)")
    try:
        import jax
    except ImportError:
        raise PipelineError("multi-process training needs JAX: pip install 'jax==0.10.2' (CPU) or 'jax[cuda12]' (GPU)") from None
    # CPU devices of several processes talk through gloo (TCP); GPUs use NCCL regardless.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            initialization_timeout=_seconds(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT_SECONDS),
            heartbeat_timeout_seconds=_seconds(PEER_TIMEOUT_ENV, DEFAULT_PEER_TIMEOUT_SECONDS),
        )
    except Exception as exc:  # noqa: BLE001 - JAX raises XlaRuntimeError / RuntimeError with pages of detail
        raise PipelineError(f"{cluster.name} could not join the cluster at {cluster.coordinator}: "
                            f"{_first_line(exc)} (are all {cluster.num_processes} processes started, and the port open?)") from None
    _joined = cluster
    return cluster


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class PeerLost(PipelineError):
    """Another process of the run died. JAX's shutdown at exit would then wait for it at a
    barrier until the heartbeat timeout and abort with a C++ stack, so the CLI leaves at once
    (`os._exit`) after printing this one line."""

    leave_immediately = True


def peer_failure(exc: BaseException) -> PipelineError | None:
    """A collective that failed because another process died, as a one-line error; None for
    any other exception (which then surfaces as it is)."""
    if _joined is None:
        return None
    text = str(exc)
    signs = ("Gloo", "gloo", "Connection closed", "Connection reset", "heartbeat", "UNAVAILABLE", "DEADLINE_EXCEEDED",
             "coordination service", "Broken pipe", "Socket closed")
    if not any(sign in text for sign in signs):
        return None
    return PeerLost(f"{_joined.name}: another process of this run stopped ({_first_line(exc)}); "
                    "nothing was exported: start all processes again")


@dataclass
class DistributionSetup:
    backend: str
    strategy: str  # a readable name: "default", "OneDevice", "Mirrored", "DataParallel"
    devices: list[str]
    replicas: int
    precision: str
    scope: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext, repr=False)
    cluster: Cluster | None = None

    @property
    def processes(self) -> int:
        return self.cluster.num_processes if self.cluster else 1

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def process_batch(self, per_replica: int) -> int:
        """The examples this process feeds per step: its share of the global batch."""
        return self.global_batch(per_replica) // self.processes

    def shard(self) -> tuple[int, int] | None:
        """(this process, processes) when each process must feed its own part of every batch."""
        return (self.cluster.process_id, self.cluster.num_processes) if self.cluster else None

    def as_tags(self) -> dict[str, str]:
        return {
            "keras_backend": self.backend,
            "distribution": self.strategy,
            "devices": ",".join(self.devices),
            "replicas": str(self.replicas),
            "precision": self.precision,
            "processes": str(self.processes),
        }


def _pick_precision(requested: str, accelerators: list, supports_bf16: bool, cpu_bf16: bool = False) -> str:
    if requested != "auto":
        return requested
    if not accelerators:
        # float16 is emulated on CPUs (far slower); bfloat16 pays where the CPU multiplies it in
        # hardware (AMX-BF16), and not for every model even there (docs/scaling.md).
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
    (see `pipelines.modeling.builders.BuilderEntry`); precision=auto then uses it where AMX-BF16 exists."""
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
    cluster = join_cluster()  # no-op without KERAS_DISTRIBUTION_* variables
    devices = keras.distribution.list_devices()  # every process's devices, once joined
    accelerators = [d for d in jax.devices() if d.platform != "cpu"]
    chosen = _pick_precision(precision, accelerators, supports_bf16=True)
    if len(devices) > 1:
        distribution = keras.distribution.DataParallel(devices=devices)
        # Each process feeds its own shard (pipelines.data.input_pipeline shards it by process): Keras
        # must take what it is given as this process's part of the global batch, not shard again.
        distribution.auto_shard_dataset = cluster is None
        keras.distribution.set_distribution(distribution)
        return DistributionSetup("jax", "DataParallel", devices, len(devices), chosen, cluster=cluster)
    return DistributionSetup("jax", "default", devices, 1, chosen, cluster=cluster)


def end_distribution(setup: DistributionSetup) -> None:
    """Back to one process's view after a distributed fit: later predictions and the export
    run on this process's own devices (the weights stay where the caller copied them)."""
    if setup.strategy == "DataParallel":
        import_keras().distribution.set_distribution(None)
