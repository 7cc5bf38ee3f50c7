"""MLflow for every run: params, per-epoch metrics, tags, artifacts, the model, the registry.

Default store: `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlartifacts/`. Any
tracking server (or another SQLite file) via `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from pipelines import paths
from pipelines.runtime import configure_environment


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.REPO_ROOT / 'mlflow.db'}"


def _local_artifact_root(uri: str) -> Path | None:
    """For a SQLite store, keep artifacts beside the database file (not in the cwd's ./mlruns)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts"
    return None


def _mlflow():
    configure_environment()
    import mlflow

    # "artifact_path is deprecated" and friends: noise for a user of this tool.
    for name in ("mlflow.models.model", "mlflow.tracking._tracking_service.client", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return mlflow


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """One MLflow run. Use as a context manager; `resume_run_id` reopens a run killed halfway.
    Started while another run is active (a sweep's parent), it is that run's child."""

    def __init__(self, experiment: str, run_name: str | None = None, resume_run_id: str | None = None,
                 tags: dict[str, Any] | None = None):
        self.mlflow = _mlflow()
        uri = tracking_uri()
        self.mlflow.set_tracking_uri(uri)
        if self.mlflow.get_experiment_by_name(experiment) is None:
            root = _local_artifact_root(uri)
            location = (root / experiment).as_uri() if root else None
            self.mlflow.create_experiment(experiment, artifact_location=location)
        self.mlflow.set_experiment(experiment)
        self.experiment = experiment
        self.run_name = run_name
        self.resume_run_id = resume_run_id
        self.tags = {k: str(v) for k, v in (tags or {}).items()} or None  # set when the run starts (or resumes)
        self.run = None

    def __enter__(self) -> "Tracker":
        nested = self.mlflow.active_run() is not None
        self.run = self.mlflow.start_run(run_id=self.resume_run_id, run_name=None if self.resume_run_id else self.run_name,
                                         nested=nested, tags=self.tags)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        self.mlflow.end_run(status=status)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def ui_hint(self) -> str:
        return f"{tracking_uri()} (experiment '{self.experiment}', run {self.run_id})"

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow caps a value at 6000 characters; params are flat spec values, far below that.
        existing = self.mlflow.get_run(self.run_id).data.params if self.resume_run_id else {}
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        if fresh:
            self.mlflow.log_params(fresh)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=folder)

    def log_artifacts(self, path: Path, folder: str | None = None) -> None:
        self.mlflow.log_artifacts(str(path), artifact_path=folder)

    def log_dict(self, data: dict, name: str) -> None:
        self.mlflow.log_dict(data, name)

    def log_text(self, text: str, name: str) -> None:
        self.mlflow.log_text(text, name)

    def log_keras_model(self, model, example_input, example_output, registered_name: str | None) -> str | None:
        """The Keras model as an MLflow model (loadable by `mlflow models serve`), optionally
        registered; returns the registered version. `input_example` is avoided on purpose:
        `mlflow.keras.log_model(..., input_example=...)` raises FileNotFoundError in 3.17."""
        import mlflow.keras
        import numpy as np
        from mlflow.models import infer_signature

        from pipelines.runtime import import_keras

        keras = import_keras()
        signature = infer_signature(example_input, example_output)
        # Named, not inferred: inference is slow and fails on models with custom layers.
        requirements = [f"keras=={keras.__version__}"]
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            requirements.append(f"tensorflow=={tf.__version__}")
        # One image tensor in: log the exported graph, which loads without this package's custom
        # layers (test-time views, fused BatchNorm). Tables (a dict of columns) stay `.keras`.
        exported = keras.backend.backend() == "tensorflow" and isinstance(example_input, np.ndarray)
        # Keras' export prints every endpoint and captured variable (~40 lines a model): not news.
        with contextlib.redirect_stdout(io.StringIO()):
            info = mlflow.keras.log_model(
                model, name="model", signature=signature, registered_model_name=registered_name,
                pip_requirements=requirements, save_exported_model=exported,
            )
        return str(info.registered_model_version) if registered_name and info.registered_model_version else None

    def epoch_callback(self):
        """A Keras callback logging every epoch's metrics with the epoch as the MLflow step."""
        from pipelines.runtime import import_keras

        keras = import_keras()
        tracker = self

        class MlflowEpochLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                metrics = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
                optimizer = self.model.optimizer
                metrics["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                tracker.log_metrics(metrics, step=epoch)

        return MlflowEpochLogger()
