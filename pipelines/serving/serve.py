"""`python -m pipelines serve <usecase>`: one registered model behind MLflow's scoring server.

No home-made HTTP server: this resolves which MLflow model to serve, checks that it exists
(so a typo is a one-line error, not a traceback from a server that then dies), fetches it as
`mlflow models serve --env-manager local` does and replaces itself with uvicorn running MLflow's
scoring server app (FastAPI) behind `pipelines/serving/guarded_app.py`, which refuses an
oversized body with 413 before reading it and unparseable JSON with 400 (MLflow's server has no
body limit; `mlflow models serve` cannot take a middleware, hence uvicorn directly). The MLflow
model is `pipelines/export/mlflow_model.py` around the exported SavedModel (see that file): it
answers with class names and refuses bad requests with HTTP 400.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path

from pipelines.core import paths
from pipelines.core.errors import PipelineError, UsageError
from pipelines.core.runtime import configure_environment
from pipelines.evaluation.operating_points import check_point
from pipelines.export.saved_model import read_metadata
from pipelines.tracking.registry import default_champion, parse_reference, resolve_model_dir
from pipelines.tracking.tracker import mlflow_client, tracking_uri
from pipelines.usecases import get_spec

# The scoring server's contract with its app module (mlflow/pyfunc/scoring_server/app.py), as
# mlflow.pyfunc.scoring_server.get_cmd sets it (a rename fails tests/test_serve.py, which starts real servers).
SERVER_MODEL_PATH = "__pyfunc_model_path__"
MAX_BODY_ENV = "PIPELINES_SERVE_MAX_BODY_BYTES"  # read by pipelines/serving/guarded_app.py
# A few MB: a full batch (1,024) of 28x28 grey digits is 2.4-3.6 MB of JSON; of 28x28 RGB skin up to
# 12 MB (split it, or raise --max-body-mb). Python parses JSON at roughly 10 MB/s here.
DEFAULT_MAX_BODY_MB = 8.0
DEFAULT_ALIAS = "champion"
DEFAULT_PORT = 5001
DEFAULT_HOST = "127.0.0.1"
# One scoring process per core, up to 4 (each holds its own TensorFlow, ~0.7 GB): each has its
# own GIL, so throughput grows with the workers up to the cores (docs/serving.md, `make bench-serve`).
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))


def _fetch(model_uri: str) -> str:
    """A local copy of the MLflow model, as `mlflow models serve` makes one before it starts uvicorn."""
    if Path(model_uri).is_dir():
        return model_uri
    import mlflow

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    except Exception as exc:  # noqa: BLE001 - any store error means the same to the user
        raise PipelineError(f"cannot fetch {model_uri} from {tracking_uri()} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def default_reference(usecase: str) -> str:
    return f"models:/{usecase}@{DEFAULT_ALIAS}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a public interface


def resolve_model_uri(usecase: str, reference: str | None) -> str:
    """An MLflow model URI that exists, for `reference`:

    - `models:/<name>@<alias>` (default: `models:/<usecase>@champion`) or `models:/<name>/<version>`;
    - `runs:/<run_id>/<path>`;
    - a `models/<usecase>/<version>` folder: the MLflow model its training run logged
      (`metadata.json`'s `mlflow_run_id`), which wraps that same SavedModel;
    - a folder holding an MLflow model (an `MLmodel` file), served as it is.
    """
    from mlflow.exceptions import MlflowException

    if reference is None:
        # The same champion `predict` answers with (pipelines.tracking.registry.default_champion):
        # the registry's alias, or the models root's own champion folder, served through its run.
        folder, from_registry = default_champion(usecase)
        reference = default_reference(usecase) if from_registry else str(folder)
    client = mlflow_client()
    if reference.startswith("models:/"):
        name, kind, value = parse_reference(reference)
        try:
            if kind == "alias":
                client.get_model_version_by_alias(name, value)
            else:
                client.get_model_version(name, value)
        except MlflowException:
            what = f"alias {value!r}" if kind == "alias" else f"version {value}"
            raise PipelineError(f"no {what} for model '{name}' in "
                                f"{tracking_uri()}; {_what_exists(client, name)}") from None
        return reference
    if reference.startswith("runs:/"):
        run_id = reference[len("runs:/"):].split("/", 1)[0]
        try:
            client.get_run(run_id)
        except MlflowException:
            raise PipelineError(f"no run '{run_id}' in {tracking_uri()}") from None
        return reference
    if "://" in reference:
        raise UsageError(f"--model takes models:/, runs:/ or a folder, not '{reference}'")

    folder = Path(reference).expanduser()
    if (folder / "MLmodel").is_file():
        return str(folder.resolve())
    if not folder.is_dir():
        raise PipelineError(f"--model {reference}: no such folder")

    run_id = read_metadata(folder).get("mlflow_run_id")
    if not run_id:
        raise PipelineError(f"{folder}/metadata.json names no MLflow run; serve it with --model models:/{usecase}/<version>")
    try:
        client.get_run(run_id)
    except MlflowException:
        raise PipelineError(f"{folder} was logged to run {run_id}, which is not in {tracking_uri()}; "
                            "set MLFLOW_TRACKING_URI to the store that trained it") from None
    return f"runs:/{run_id}/model"


def _what_exists(client, name: str) -> str:
    """The hint after 'not found': which versions and aliases there are."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return f"nothing is registered as '{name}' there: train it first (make train-{name})"
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    aliases = ", ".join(f"@{alias} = {version}" for alias, version in sorted((model.aliases or {}).items()))
    listed = ", ".join(map(str, versions[-10:])) or "none"
    example = f"models:/{name}/{versions[-1] if versions else 1}"
    return f"versions: {listed}" + (f"; aliases: {aliases}" if aliases else "") + f"; e.g. --model {example}"


FORMATS = ("savedmodel", "litert", "onnx")


def edge_serving_model(usecase: str, reference: str | None, fmt: str) -> str:
    """A local MLflow model serving the version's verified `litert/` (int8) or `onnx/` folder
    through the same wrapper (`pipelines/export/mlflow_model.py`: same request checks, same
    answers), written under `models/<usecase>/.serving/`; its path, for `mlflow models serve`."""
    import importlib.metadata
    import shutil

    import mlflow.pyfunc

    from pipelines.export import mlflow_model  # the served model's code imports MLflow at its top

    folder = resolve_model_dir(usecase, reference)
    metadata = read_metadata(folder)
    source = folder / fmt
    if not (source / "metadata.json").is_file():
        raise PipelineError(f"{folder} has no verified {fmt} export; make one first: make export-{usecase} FORMAT={fmt} MODEL={folder}")
    target = paths.usecase_models_dir(usecase) / ".serving" / f"v{metadata.get('version', folder.name)}-{fmt}"
    shutil.rmtree(target, ignore_errors=True)
    runtime = "onnxruntime" if fmt == "onnx" else "ai-edge-litert"
    mlflow.pyfunc.save_model(str(target), python_model=mlflow_model.__file__, artifacts={"edge": str(source)},
                             model_config=dict(mlflow_model.DEFAULT_CONFIG),
                             pip_requirements=[f"{name}=={importlib.metadata.version(name)}"
                                               for name in ("mlflow", "numpy", "pandas", runtime)])
    return str(target)


def serve(usecase: str, reference: str | None = None, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
          workers: int = DEFAULT_WORKERS, operating_point: str | None = None, fmt: str = "savedmodel",
          max_body_mb: float = DEFAULT_MAX_BODY_MB) -> None:
    """Resolve, check, then exec uvicorn on MLflow's scoring server app (never returns).
    `operating_point` overrides the model's default decision rule (via MLflow's
    SERVING_MODEL_CONFIG); `fmt` serves the version's verified LiteRT int8 or ONNX file instead
    of its SavedModel; a request body over `max_body_mb` is answered 413 unread."""

    get_spec(usecase)  # an unknown use case is a usage error
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: choose 1-65535")
    if workers < 1:
        raise UsageError(f"--workers {workers}: at least 1")
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: choose {', '.join(FORMATS)}")
    if not max_body_mb > 0:
        raise UsageError(f"--max-body-mb {max_body_mb}: more than 0")
    configure_environment()
    model_uri = resolve_model_uri(usecase, reference) if fmt == "savedmodel" else edge_serving_model(usecase, reference, fmt)
    model_config = {}
    if operating_point:
        folder = resolve_model_dir(usecase, reference)
        check_point(operating_point, read_metadata(folder), str(folder))
        model_config = {"SERVING_MODEL_CONFIG": json.dumps({**json.loads(os.environ.get("SERVING_MODEL_CONFIG") or "{}"),
                                                            "operating_point": operating_point})}
    if not is_loopback(host):
        print(f"warning: serving on {host}, reachable from other machines: the server has no authentication or TLS",
              file=sys.stderr)

    local_model = _fetch(model_uri)
    bin_dir = Path(sys.executable).parent
    environment = {
        # uvicorn reads UVICORN_* settings from the environment: a log line per request costs
        # time under load and floods the terminal; UVICORN_ACCESS_LOG=true brings it back.
        "UVICORN_ACCESS_LOG": "false",
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri(),
        **model_config,
        SERVER_MODEL_PATH: local_model,  # what mlflow.pyfunc.scoring_server.app loads in each worker
        MAX_BODY_ENV: str(int(max_body_mb * 2**20)),
    }
    command = [str(bin_dir / "uvicorn"), "--host", host, "--port", str(port), "--workers", str(workers),
               "pipelines.serving.guarded_app:app"]
    print(f"serving {model_uri} at http://{host if ':' not in host else f'[{host}]'}:{port}/invocations "
          f"({workers} worker{'s' if workers > 1 else ''}); Ctrl-C stops it", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(command[0], command, environment)

