"""MLflow for every run: params, per-epoch metrics, tags, artifacts, the model, the registry.

Default store: `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlartifacts/`. Any
tracking server (or another SQLite file) via `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import warnings
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


def _serving_requirements() -> list[str]:
    """What `serving_model.py` imports, pinned to what trained the model (named, not inferred:
    inference loads the model in a subprocess, which takes seconds)."""
    import importlib.metadata

    names = ["mlflow", "numpy", "pandas"]
    for tensorflow in ("tensorflow-cpu", "tensorflow"):
        try:
            importlib.metadata.version(tensorflow)
            names.append(tensorflow)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


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
    """One MLflow run. Use as a context manager; `resume_run_id` reopens a run killed halfway."""

    def __init__(self, experiment: str, run_name: str | None = None, resume_run_id: str | None = None):
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
        self.run = None

    def __enter__(self) -> "Tracker":
        self.run = self.mlflow.start_run(run_id=self.resume_run_id, run_name=None if self.resume_run_id else self.run_name)
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

    def log_keras_model(self, model, example_input, example_output, registered_name: str | None,
                        saved_model_dir: Path | None = None) -> str | None:
        """Log the exported SavedModel as the run's MLflow model `model/` (what `mlflow models
        serve` and `python -m pipelines serve` load), optionally registered; returns the
        registered version.

        The MLflow model is `pipelines/serving_model.py` logged as code (MLflow "models from
        code") with the SavedModel folder as its artifact: it loads without this package, answers
        with class names and validates requests itself. It has no signature on purpose: MLflow's
        schema enforcement would cast a float pixel `0.5` to the uint8 `0` before the wrapper
        could refuse it; the input contract is in the model's metadata instead.
        `model`, `example_input` and `example_output` only describe the contract (dtype, shape,
        columns); without `saved_model_dir` (no TensorFlow export) nothing is logged."""
        import numpy as np

        if saved_model_dir is None:
            return None
        import mlflow.pyfunc

        from pipelines import serving_model

        metadata = json.loads((Path(saved_model_dir) / "metadata.json").read_text())
        if isinstance(example_input, dict):
            contract = {"columns": {name: "number or null" for name in example_input}}
        else:
            contract = {"images": f"uint8 [batch, {', '.join(str(s) for s in np.shape(example_input)[1:])}]"}
        contract.update(
            output=[*map(str, metadata["class_names"]), serving_model.LABEL_COLUMN],
            max_batch_size=serving_model.DEFAULT_CONFIG["max_batch_size"],
        )
        with warnings.catch_warnings():
            # Type hints would make MLflow validate (and accept only `inputs`) before the wrapper sees the request.
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
            info = self._log_serving_model(saved_model_dir, contract, metadata, registered_name)
        return str(info.registered_model_version) if registered_name and info.registered_model_version else None

    def _log_serving_model(self, saved_model_dir, contract: dict, metadata: dict, registered_name: str | None):
        from pipelines import serving_model

        return self.mlflow.pyfunc.log_model(
            name="model",
            python_model=serving_model.__file__,
            artifacts={"saved_model": str(saved_model_dir)},
            model_config=dict(serving_model.DEFAULT_CONFIG),
            metadata={"input_contract": contract, "usecase": metadata.get("usecase"), "version": metadata.get("version")},
            registered_model_name=registered_name,
            pip_requirements=_serving_requirements(),
        )

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
