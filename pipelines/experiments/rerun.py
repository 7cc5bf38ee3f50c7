"""`train --from-run RUN_ID`: the spec a run logged (its `spec.json`), rebuilt to train again.

The logged values are applied as overrides onto the use case's current spec, so they are
validated like any `--set`, and a key that no longer exists is named rather than ignored.
"""

from __future__ import annotations

from typing import Any

from pipelines.core.errors import PipelineError, UsageError
from pipelines.tracking.tracker import mlflow_client, store_exists, tracking_uri
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides, flatten


def _logged_run(run_id: str):
    from mlflow.exceptions import MlflowException

    if not store_exists():
        raise PipelineError(f"no MLflow store at {tracking_uri()}: set MLFLOW_TRACKING_URI to the store that holds run '{run_id}'")
    client = mlflow_client()
    try:
        return client, client.get_run(run_id)
    except MlflowException:
        raise PipelineError(f"no MLflow run '{run_id}' in {tracking_uri()}; see `make compare` for run ids") from None


def logged_data_sha256(run_id: str) -> str | None:
    return _logged_run(run_id)[1].data.tags.get("data_sha256")


def spec_of_run(run_id: str, usecase: str | None = None):
    import mlflow

    client, run = _logged_run(run_id)
    try:
        logged = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/spec.json")
    except Exception:  # noqa: BLE001 - any store error means the same here
        raise PipelineError(f"run '{run_id}' has no spec.json artifact: it was not made by `train`") from None
    name = logged.get("name")
    if usecase and usecase != name:
        raise UsageError(f"run '{run_id}' trained '{name}', not '{usecase}'")
    base = get_spec(name)
    builder = logged["model"]["builder"]
    spec = apply_overrides(base, {"model.builder": builder})
    values = {key: _as_spec_value(_lookup(logged, key)) for key in flatten(spec) if key != "model.builder"}
    return apply_overrides(spec, values)


# Settings that moved: where a run logged before the move has them.
MOVED = {"validation.cv_folds": "tabular.cv_folds", "validation.cv_repeats": "tabular.cv_repeats",
         "tabular.train_groups": "tabular.train_sites",
         # Heart's binary/severity choice is its loader's option; `tabular.target` names a column now.
         "data.options.target": "tabular.target"}
# Settings added later, with the value that every run logged before they existed ran with
# (not the use case's current default: cucumber cross-validates now, its older runs did not).
# operating_point: older runs decided by argmax. (data.image_size: see `_lookup`.) checks: older
# runs dropped nothing; the near-copy settings only change what the data checks report.
BEFORE_THEY_EXISTED = {"validation.cv_folds": 0, "validation.cv_repeats": 1, "data.views": 1, "operating_point": "accuracy",
                       "checks.drop_test_duplicates": False, "checks.near_duplicate_distance": 4,
                       "checks.near_duplicate_difference": 4.0}


def _lookup(logged: dict, key: str) -> Any:
    """`train.epochs` -> logged["train"]["epochs"]; builder parameters live under model.params."""
    section, dot, name = key.partition(".")
    if not dot:  # a top-level setting (operating_point)
        return logged[key] if key in logged else BEFORE_THEY_EXISTED[key]
    block = logged.get(section) or {}
    if key.startswith("data.options."):  # a loader option: data.options.<name>
        block, name = block.get("options") or {}, key[len("data.options."):]
    if section == "model" and name not in block:
        block = block.get("params", {})
    if name in block:
        return block[name]
    if key in MOVED and MOVED[key].partition(".")[2] in (logged.get(MOVED[key].partition(".")[0]) or {}):
        return _lookup(logged, MOVED[key])
    if key in BEFORE_THEY_EXISTED:
        return BEFORE_THEY_EXISTED[key]
    if key == "data.image_size" and logged.get("input_shape"):
        return logged["input_shape"][0]  # before the setting, images trained at the spec's own side
    raise PipelineError(f"the logged spec has no '{key}' (it predates that setting); train with --set instead")


def _as_spec_value(value: Any) -> Any:
    """JSON has lists where specs have tuples."""
    return tuple(_as_spec_value(v) for v in value) if isinstance(value, list) else value
