"""MLflow for every run: params, per-epoch metrics, tags, artifacts, the model, the registry.

Default store: `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlartifacts/`. Any
tracking server (or another SQLite file) via `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from pipelines.core import paths
from pipelines.core.errors import PipelineError
from pipelines.core.runtime import configure_environment, import_keras
from pipelines.tracking.journal import Journal, is_unreachable, replay, replay_pending


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.REPO_ROOT / 'mlflow.db'}"


def _local_artifact_root(uri: str) -> Path | None:
    """For a SQLite store, keep artifacts beside the database file (not in the cwd's ./mlruns)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts"
    return None


def configured_mlflow():
    configure_environment()
    import mlflow

    # "artifact_path is deprecated" and friends: noise for a user of this tool.
    for name in ("mlflow.models.model", "mlflow.tracking._tracking_service.client", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return mlflow


def store_exists() -> bool:
    """A store to ask: a server, or a SQLite file that exists (asking would create one)."""
    uri = tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).is_file()


def mlflow_client():
    """A client of the configured store (tracking and registry), MLflow's chatter quieted."""
    mlflow = configured_mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.MlflowClient()
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


@contextlib.contextmanager
def _store_creation_lock(uri: str):
    """Two runs starting together on a new SQLite store would both create its tables (MLflow's
    migration then fails in one of them): the first creates, the other waits on a file lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    database = Path(uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Tracker:
    """One MLflow run. Use as a context manager; `resume_run_id` reopens a run killed halfway.

    Started while another run is active (a sweep's parent), it is that run's child. If the
    tracking server goes away mid-run, the run goes on: what could not be sent is kept in a
    `Journal` (models/<usecase>/unsent/<run_id>/) and sent by the next run that reaches it.
    """

    def __init__(self, experiment: str, run_name: str | None = None, resume_run_id: str | None = None,
                 tags: dict[str, Any] | None = None):
        self.mlflow = configured_mlflow()
        uri = tracking_uri()
        self.mlflow.set_tracking_uri(uri)
        self.experiment = experiment
        try:
            with _store_creation_lock(uri):
                self._open_experiment(uri)
            replay_pending(self.mlflow.MlflowClient(), experiment, _say)
        except Exception as exc:
            if is_unreachable(exc):
                raise PipelineError(f"tracking server {uri} is unreachable: start it (`make mlflow-server`) or unset "
                                    "MLFLOW_TRACKING_URI for the local store; nothing was trained") from None
            raise
        self.run_name = run_name
        self.resume_run_id = resume_run_id
        self.tags = {k: str(v) for k, v in (tags or {}).items()} or None  # set when the run starts (or resumes)
        self.run = None
        self.journal: Journal | None = None
        # Called as hook(epoch, logs) after each epoch is logged: a tuning trial reports its
        # validation metric to Optuna here, and may stop the fit (a pruned trial).
        self.epoch_hooks: list = []

    def _open_experiment(self, uri: str) -> None:
        if self.mlflow.get_experiment_by_name(self.experiment) is None:
            root = _local_artifact_root(uri)
            location = (root / self.experiment).as_uri() if root else None
            self.mlflow.create_experiment(self.experiment, artifact_location=location)
        self.mlflow.set_experiment(self.experiment)

    def __enter__(self) -> Tracker:
        nested = self.mlflow.active_run() is not None
        self.run = self.mlflow.start_run(run_id=self.resume_run_id, run_name=None if self.resume_run_id else self.run_name,
                                         nested=nested, tags=self.tags)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # An exception may name the run's end itself: a pruned tuning trial was stopped on
        # purpose (KILLED), not broken (FAILED).
        status = "FINISHED" if exc_type is None else getattr(exc, "run_status", None) or (
            "KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        if status == "FAILED":  # why, on the run itself: the console may be long gone
            reason = f"{exc_type.__name__}: {exc}"[:5000]
            self._send("tags", lambda: self.mlflow.set_tag("failure", reason), values={"failure": reason})
        self._send("end", lambda: self.mlflow.end_run(status=status), status=status)
        if self.journal is None:
            return
        try:
            self.mlflow.end_run(status=status)  # pops the fluent run stack, if not yet done
        except Exception:  # noqa: BLE001 - the status is in the journal
            pass
        try:  # the server may be back by now
            replay(self.mlflow.MlflowClient(), self.journal.folder)
            _say(f"[{self.experiment}] the tracking server is back: the kept records were sent to run {self.run_id}")
        except Exception:  # noqa: BLE001 - still away: the journal stays
            _say(f"warning: tracking incomplete: {self.journal.count} records of run {self.run_id} are kept in "
                 f"{self.journal.folder}; the next `train` of '{self.experiment}' that reaches {tracking_uri()} sends them")

    def _send(self, kind: str, call, **payload) -> None:
        """Make a tracking call; once the server is unreachable, journal it (and all later ones)."""
        if self.journal is None:
            try:
                call()
                return
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                self.journal = Journal(self.experiment, self.run_id)
                _say(f"warning: tracking server {tracking_uri()} unreachable ({type(exc).__name__}); training goes on, "
                     f"tracking is kept in {self.journal.folder}")
        self.journal.add(kind, **payload)

    def when_reachable(self, what: str, call):
        """Run `call` (registration: nothing to journal) unless the server is away; else None."""
        if self.journal is None:
            try:
                return call()
            except Exception as exc:
                if not is_unreachable(exc):
                    raise
                self.journal = Journal(self.experiment, self.run_id)
        _say(f"warning: {what} skipped: tracking server {tracking_uri()} unreachable; the SavedModel is exported all the same")
        return None

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
            self._send("params", lambda: self.mlflow.log_params(fresh), values=fresh)

    def set_tags(self, tags: dict[str, Any]) -> None:
        values = {k: str(v) for k, v in tags.items()}
        self._send("tags", lambda: self.mlflow.set_tags(values), values=values)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._send("metrics", lambda: self.mlflow.log_metrics(values, step=step), values=values, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self._send("artifact", lambda: self.mlflow.log_artifact(str(path), artifact_path=folder), path=str(path), folder=folder)

    def log_artifacts(self, path: Path, folder: str | None = None) -> None:
        self._send("artifact", lambda: self.mlflow.log_artifacts(str(path), artifact_path=folder), path=str(path), folder=folder)

    def log_dict(self, data: dict, name: str) -> None:
        self._send("dict", lambda: self.mlflow.log_dict(data, name), data=data, name=name)

    def log_table(self, columns: dict, name: str) -> None:
        """Columns of equal length as an MLflow table (`name` ends in .json): the UI shows it
        under the run's artifacts and `mlflow.load_table` reads it back as a DataFrame."""
        self._send("table", lambda: self.mlflow.log_table(columns, name), data=columns, name=name)

    def log_text(self, text: str, name: str) -> None:
        self._send("text", lambda: self.mlflow.log_text(text, name), text=text, name=name)

    def log_keras_model(self, model, example_input, example_output, registered_name: str | None,
                        saved_model_dir: Path | None = None) -> str | None:
        """Log the exported SavedModel as the run's MLflow model `model/` (what `mlflow models
        serve` and `python -m pipelines serve` load), optionally registered; returns the
        registered version.

        The MLflow model is `pipelines/export/mlflow_model.py` logged as code (MLflow "models from
        code") with the SavedModel folder as its artifact: it loads without this package, answers
        with class names and validates requests itself. It has no signature on purpose: MLflow's
        schema enforcement would cast a float pixel `0.5` to the uint8 `0` before the wrapper
        could refuse it; the input contract is in the model's metadata instead.
        `model`, `example_input` and `example_output` only describe the contract (dtype, shape,
        columns); without `saved_model_dir` (no TensorFlow export) nothing is logged."""
        import numpy as np

        # The served model's code imports MLflow at its top: it is heavy like MLflow itself.
        from pipelines.export import mlflow_model

        if saved_model_dir is None:
            return None

        metadata = json.loads((Path(saved_model_dir) / "metadata.json").read_text())
        if isinstance(example_input, dict):
            types = metadata.get("column_types", {})
            contract = {"columns": {name: "text or null" if types.get(name) == "text" else "number or null"
                                    for name in example_input}}
        else:
            contract = {"images": f"uint8 [batch, {', '.join(str(s) for s in np.shape(example_input)[1:])}]"}
        contract.update(
            output=[*map(str, metadata["class_names"]), mlflow_model.LABEL_COLUMN],
            max_batch_size=mlflow_model.DEFAULT_CONFIG["max_batch_size"],
        )
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()) as printed:
            # Type hints would make MLflow validate (and accept only `inputs`) before the wrapper sees the request.
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
            info = self._log_serving_model(saved_model_dir, contract, metadata, registered_name)
        # MLflow prints "Successfully registered model 'x'." and "Created version 'n' of model 'x'."
        # itself; the run's own summary says it (with the alias). Anything else it printed is shown.
        for line in printed.getvalue().splitlines(keepends=True):
            if not line.startswith(("Successfully registered model", "Created version")):
                sys.stderr.write(line)
        return str(info.registered_model_version) if registered_name and info.registered_model_version else None

    def _log_serving_model(self, saved_model_dir, contract: dict, metadata: dict, registered_name: str | None):
        import mlflow.pyfunc  # noqa: F401 - loads the submodule behind self.mlflow.pyfunc

        from pipelines.export import mlflow_model

        return self.mlflow.pyfunc.log_model(
            name="model",
            python_model=mlflow_model.__file__,
            artifacts={"saved_model": str(saved_model_dir)},
            model_config=dict(mlflow_model.DEFAULT_CONFIG),
            metadata={"input_contract": contract, "usecase": metadata.get("usecase"), "version": metadata.get("version")},
            registered_model_name=registered_name,
            pip_requirements=_serving_requirements(),
        )

    def epoch_callback(self):
        """A Keras callback logging every epoch's metrics with the epoch as the MLflow step."""

        keras = import_keras()
        tracker = self

        class MlflowEpochLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                metrics = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
                optimizer = self.model.optimizer
                metrics["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                tracker.log_metrics(metrics, step=epoch)
                for hook in tracker.epoch_hooks:
                    hook(epoch, metrics)

        return MlflowEpochLogger()
