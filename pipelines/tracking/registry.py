"""The registry gate: which registered version is served, and how `predict`/`evaluate` find it.

A new version takes the alias `champion` only if its ranking metric (the spec's
`ranking_metric`) is at least the current champion's *on the same test data* (same data
sha256); otherwise it becomes the `challenger`, and the run says why. The first version is
champion. `promote` moves the alias by hand. So a failed experiment (one epoch, a bad learning
rate) is registered and comparable, but never silently becomes what `predict` answers with.

`models/<usecase>/champion` mirrors the alias as the local version folder's name: a copied
`models/` folder without the tracking store still knows which version it serves.
"""

from __future__ import annotations

import getpass
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.core import paths
from pipelines.core.errors import PipelineError, UsageError
from pipelines.tracking.tracker import mlflow_client, store_exists, tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"
CHAMPION_FILE = "champion"


@dataclass(frozen=True)
class Candidate:
    """What the gate compares: a version's ranking metric and the test data it was measured on."""

    version: str
    metric: float | None
    data_sha256: str | None
    chance: float | None = None  # what the metric scores without looking at the input


@dataclass(frozen=True)
class Decision:
    alias: str
    reason: str


def decide(new: Candidate, champion: Candidate | None, metric_name: str) -> Decision:
    """Champion only when better than chance and at least as good as the champion on the same test data,
    by the same metric (a cross-validated run and a held-out one are not ranked against each other)."""
    if new.metric is None or not math.isfinite(new.metric):
        return Decision(CHALLENGER, f"the run logged no {metric_name}")
    if new.chance is not None and new.metric <= new.chance:
        return Decision(CHALLENGER, f"{metric_name} {new.metric:.4f} is not better than chance ({new.chance:.4f}): never served")
    if champion is None:
        return Decision(CHAMPION, "the first version of this model")
    if new.data_sha256 != champion.data_sha256:
        return Decision(
            CHALLENGER,
            f"champion v{champion.version} was measured on other test data (sha256 {str(champion.data_sha256)[:12]} vs "
            f"{str(new.data_sha256)[:12]}); `python -m pipelines promote` decides by hand",
        )
    if champion.metric is None or not math.isfinite(champion.metric):
        # Measured another way (a held-out split vs cross-validation), or not at all: no comparison.
        return Decision(CHALLENGER, f"champion v{champion.version} logged no {metric_name}: it was measured another way (held-out "
                                    "split vs cross-validation); `python -m pipelines promote` decides by hand")
    if new.metric >= champion.metric:
        return Decision(CHAMPION, f"{metric_name} {new.metric:.4f} >= champion v{champion.version}'s {champion.metric:.4f} "
                                  "on the same test data")
    return Decision(CHALLENGER, f"{metric_name} {new.metric:.4f} < champion v{champion.version}'s {champion.metric:.4f} "
                                "on the same test data")


def _client():
    return mlflow_client()


def _version_by_alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _candidate(client, version, metric_name: str) -> Candidate:
    run = client.get_run(version.run_id)
    metrics = run.data.metrics
    return Candidate(str(version.version), metrics.get(metric_name), run.data.tags.get("data_sha256"), metrics.get("chance_level"))


def gate(spec, version: str, model_dir: Path | None) -> Decision:
    """Give registered `version` of `spec.name` the alias its ranking metric earns; tag the
    version and its run with the reason; mirror a new champion in `models/<usecase>/champion`."""
    client = _client()
    name = spec.name
    new = client.get_model_version(name, version)
    current = _version_by_alias(client, name, CHAMPION)
    champion = _candidate(client, current, spec.ranking_metric) if current is not None and str(current.version) != str(version) else None
    decision = decide(_candidate(client, new, spec.ranking_metric), champion, spec.ranking_metric)
    client.set_registered_model_alias(name, decision.alias, version)
    client.set_model_version_tag(name, version, "gate", f"{decision.alias}: {decision.reason}")
    client.set_tag(new.run_id, "registry_alias", decision.alias)
    client.set_tag(new.run_id, "registry_reason", decision.reason)
    if decision.alias == CHAMPION and model_dir is not None:
        write_local_champion(name, model_dir)
    return decision


def promote(spec, version: str, reason: str | None = None) -> Path:
    """Move `champion` to registered `version` by hand; recorded as a tag on the version."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        chosen = client.get_model_version(spec.name, version)
    except MlflowException:
        raise PipelineError(f"no version '{version}' of registered model '{spec.name}' in {_store()}; see `make compare`") from None
    note = f"promoted by hand by {getpass.getuser()} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    client.set_registered_model_alias(spec.name, CHAMPION, version)
    client.set_model_version_tag(spec.name, version, "gate", f"{CHAMPION}: {note}" + (f": {reason}" if reason else ""))
    client.set_tag(chosen.run_id, "registry_alias", CHAMPION)
    folder = _local_folder(client, chosen)
    write_local_champion(spec.name, folder)
    return folder


def write_local_champion(usecase: str, model_dir: Path) -> None:
    """`models/<usecase>/champion` names the served version folder, when it is one of ours."""
    model_dir = Path(model_dir).resolve()
    base = paths.usecase_models_dir(usecase).resolve()
    if model_dir.parent == base and model_dir.name.isdigit():
        staging = base / f".{CHAMPION_FILE}-{os.getpid()}"
        staging.write_text(model_dir.name + "\n")
        staging.replace(base / CHAMPION_FILE)  # atomic: a reader sees the old or the new name


def _store() -> str:
    return tracking_uri()


def _local_folder(client, version) -> Path:
    """The SavedModel folder of a registered version: where its run exported it, else the
    run's `saved_model` artifact downloaded once into `models/<usecase>/.registry/`."""
    run = client.get_run(version.run_id)
    exported = run.data.tags.get("exported_to")
    if exported and (Path(exported) / "saved_model.pb").is_file():
        return Path(exported)
    target = paths.usecase_models_dir(version.name) / ".registry" / f"v{version.version}"
    if not (target / "saved_model" / "saved_model.pb").is_file():
        import mlflow

        target.mkdir(parents=True, exist_ok=True)
        try:
            mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="saved_model", dst_path=str(target))
        except Exception as exc:  # noqa: BLE001 - any store error means the same to the user
            raise PipelineError(f"registered '{version.name}' v{version.version} has no SavedModel to load "
                                f"({type(exc).__name__}); pass --model DIR") from None
    return target / "saved_model"


def parse_reference(reference: str) -> tuple[str, str, str]:
    """`models:/digits@champion` -> ("digits", "alias", "champion"); `models:/digits/3` -> (.., "version", "3")."""
    body = reference[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, "alias", alias
    elif body.count("/") == 1:
        name, version = body.split("/")
        if name and version.isdigit():
            return name, "version", version
    raise UsageError(f"bad model reference '{reference}': use models:/<usecase>@<alias>, models:/<usecase>/<version> or a folder")


def store_named() -> bool:
    """Did the user name the tracking store (MLFLOW_TRACKING_URI), rather than get the default one?"""
    return bool(os.environ.get("MLFLOW_TRACKING_URI"))


def _inside(folder: Path, root: Path) -> bool:
    return folder.resolve().is_relative_to(root.resolve())


def default_champion(usecase: str) -> tuple[Path, bool]:
    """The champion that `predict`, `evaluate` and `serve` use without --model: (its SavedModel
    folder, whether it came from the registry). The rule (docs/hardening-notes.md):

    1. the registry's `champion`, when its SavedModel lies under the models root
       (PIPELINES_MODELS_ROOT), or wherever it lies when the user named the store
       (MLFLOW_TRACKING_URI): a registry reference wins over the models root only then;
    2. else `<models root>/<usecase>/champion`, the version folder it names;
    3. else one error saying what to do.

    So `PIPELINES_MODELS_ROOT=/elsewhere` alone never answers with a model of the checkout's
    default mlflow.db from outside /elsewhere."""
    named = store_named()  # before asking: mlflow.set_tracking_uri() sets MLFLOW_TRACKING_URI itself
    skipped = None
    if store_exists():
        folder = _registry_folder(usecase, "alias", CHAMPION, required=False)
        if folder is not None and (named or _inside(folder, paths.models_root())):
            return folder, True
        skipped = folder
    pointer = paths.usecase_models_dir(usecase) / CHAMPION_FILE
    if pointer.is_file():
        folder = pointer.parent / pointer.read_text().strip()
        if (folder / "saved_model.pb").is_file():
            return folder, False
        raise PipelineError(f"{pointer} names version {folder.name}, which is not in {pointer.parent}; pass --model DIR")
    aside = (f"; the champion of {_store()} is {skipped}, outside PIPELINES_MODELS_ROOT: set MLFLOW_TRACKING_URI to use it"
             if skipped is not None else "")
    raise PipelineError(f"no champion model for '{usecase}' (registry {_store()}, folder {pointer.parent}{aside}); "
                        f"run `make train-{usecase}` first or pass --model DIR")


def resolve_model_dir(usecase: str, reference: str | None = None) -> Path:
    """The SavedModel folder `predict`/`evaluate` load: a folder as given, a registry reference,
    or by default the champion (see `default_champion`)."""
    if reference and not reference.startswith("models:/"):
        return Path(reference)
    if reference:
        name, kind, value = parse_reference(reference)
        if name != usecase:
            raise UsageError(f"{reference} is a '{name}' model, not '{usecase}'")
        return _registry_folder(name, kind, value, required=True)
    return default_champion(usecase)[0]


def _registry_folder(name: str, kind: str, value: str, required: bool) -> Path | None:
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        version = client.get_model_version_by_alias(name, value) if kind == "alias" else client.get_model_version(name, value)
    except MlflowException:
        if not required:
            return None
        what = f"alias '{value}'" if kind == "alias" else f"version {value}"
        raise PipelineError(f"registered model '{name}' has no {what} in {_store()}; see `make compare`") from None
    return _local_folder(client, version)
