"""Process-wide setup done once, before TensorFlow/Keras/MLflow load: quiet logs, seeds."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

_ENV_DEFAULTS = {
    "KERAS_BACKEND": "tensorflow",
    # Hides cpu_feature_guard and XLA start-up lines; real errors still show.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # MLflow telemetry tries the network and writes under ~/.config.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # A tracking server that is down: MLflow's default retries for minutes per call; a run
    # keeps its tracking on disk instead (pipelines.tracking.journal), so fail over in seconds.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # A progress bar for each of the run's own small downloads (the served model checked after
    # logging it); set it to true to see the bars of large ones.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def configure_environment() -> None:
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def quiet_stderr():
    """Redirect fd 2 for the duration (C++ log lines bypass Python's sys.stderr).
    If the block fails, what was written is replayed so no real error is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras():
    """Import Keras (and TensorFlow under the default backend) without the oneDNN/absl banner."""
    configure_environment()
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with quiet_stderr():
        # Under other backends TensorFlow still serves tf.data and SavedModel export when present.
        if os.environ["KERAS_BACKEND"] == "tensorflow" or has_tensorflow():
            import tensorflow  # noqa: F401  (its import prints the banner we hide)
        import keras
    return keras


def many_models_in_one_process() -> None:
    """Cross-validation folds, a search's trials: each new model retraces its tf.functions, and
    TensorFlow warns about that retracing, which is expected here, on the terminal."""
    if has_tensorflow():
        import_keras()  # the first TensorFlow import, quietly (its C++ start-up lines)
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")


def has_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def seed_everything(seed: int, deterministic: bool) -> None:
    """Same seed, same machine, same data -> same metrics. Keras seeds Python, NumPy and the
    backend; TensorFlow additionally needs deterministic kernels (a little slower)."""
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
