"""The verbs over one spec: train (the run envelope around a task's protocol), export, evaluate.

`run_train` owns what every run does, whatever its task: tracking, provenance, the checkpoint,
the report, the model card, export, verification, registration and the printed summary. What
differs between an image and a table (how the model is fitted and validated) is the task's,
`pipelines.tasks`. Data is loaded and checked (`pipelines.data.checks`: duplicates across the
splits, inputs with two labels) before TensorFlow is imported, so a missing or corrupt file is
reported in a second, not after start-up.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines.core import paths
from pipelines.core.console import say
from pipelines.core.errors import PipelineError
from pipelines.core.runtime import has_tensorflow, import_keras
from pipelines.data import checks
from pipelines.data.images import resize_images
from pipelines.data.loaders import load_dataset
from pipelines.evaluation import operating_points
from pipelines.evaluation.plots import plot_history
from pipelines.evaluation.report import chance_level, classification_report, to_markdown, write_report
from pipelines.export import edge, saved_model
from pipelines.modeling.models import register_custom_layers
from pipelines.tasks import get_task
from pipelines.tracking import registry
from pipelines.tracking.registry import resolve_model_dir
from pipelines.tracking.tracker import Tracker, git_commit, mlflow_client, store_exists, tracking_uri
from pipelines.training import fit, strategy
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides, flatten


def run_train(spec, run_name: str | None = None, tags: dict | None = None, expected_data_sha256: str | None = None,
              trial=None) -> dict:
    """Train `spec` under its task's protocol inside one MLflow run, then export, verify,
    register and gate the model. `tags` go on the run from its start (a sweep marks its
    children with them); `expected_data_sha256` refuses other data (a re-run of a run).

    `trial` (a search's trial, `pipelines.experiments.tune`) makes it a selection run: fitted
    and scored on validation data only (`Task.selection_metric`), its `started(run_id)` and
    `epoch_end(epoch, logs)` called as it goes; no test score, checkpoint, export or
    registration, and no resumable backup (a trial a dead worker left is rerun by Optuna)."""

    task = get_task(spec.task)
    spec = task.prepare(spec)
    paths.ensure_writable(paths.usecase_models_dir(spec.name))  # before any work, not after the fit
    loaded = task.load(spec)
    say(f"[{spec.name}] {loaded.description}")
    if expected_data_sha256 and loaded.sha256 != expected_data_sha256:
        raise PipelineError(f"the run was trained on data sha256 {expected_data_sha256[:12]}, this is {loaded.sha256[:12]} "
                            f"({loaded.origin}); pass --allow-other-data to re-run it on this data anyway")
    loaded, found = check_data(spec, task, loaded)  # every process of a multi-process run drops the same examples
    cluster = strategy.join_cluster()  # several processes (KERAS_DISTRIBUTION_*): before JAX computes anything
    if cluster is not None and not cluster.is_chief:
        return _train_as_worker(spec, loaded, cluster)
    # A multi-process run is not resumable: the other processes would start from scratch.
    resume = fit.ResumeState(spec) if task.resumable and cluster is None and trial is None else None
    pending = resume.pending_run_id() if resume else None
    if pending:
        say(f"[{spec.name}] resuming interrupted MLflow run {pending} from its last completed epoch")

    with Tracker(spec.name, run_name=run_name, resume_run_id=pending, tags=tags) as tracker, tempfile.TemporaryDirectory() as scratch:
        if resume:
            resume.remember(tracker.run_id)
        if trial is not None:
            trial.started(tracker.run_id)
            tracker.epoch_hooks.append(trial.epoch_end)
        out = Path(scratch)
        selection_metric = task.selection_metric(spec)
        commit = git_commit()
        tracker.log_params({**flatten(spec), **loaded.sizes})
        tracker.log_dict(spec.to_dict(), "spec.json")
        tracker.log_dict(loaded.files, "data_files_sha256.json")
        log_data_checks(tracker, found)
        if getattr(loaded.data, "skipped", None):  # unreadable images the use case said to skip (on_corrupt = "skip")
            tracker.log_dict({"skipped": loaded.data.skipped}, "data_skipped_files.json")
        # `ranking_metric`: what the gate and `compare` rank this run by (a cross-validated image run: the CV mean);
        # a trial has no test score and is ranked by its selection metric, on validation data.
        # `selection_metric`: what a sweep or a search chooses settings by (never the test split).
        tracker.set_tags({"usecase": spec.name, "data_source": loaded.origin, "data_sha256": loaded.sha256,
                          "git_commit": commit, "verb": "train", "selection_metric": selection_metric,
                          "ranking_metric": selection_metric if trial is not None else spec.ranking_metric, **package_versions()})

        fitted = task.fit(spec, loaded, tracker, resume)
        if cluster is not None:
            say(f"[{spec.name}] {cluster.name}: weights sha256 {fitted.extra.get('weights_sha256')}")
        tracker.log_metrics({"fit_seconds": fitted.fit_seconds,
                             "train_examples_per_second": fitted.examples_seen / max(fitted.fit_seconds, 1e-9)})
        selection = task.validation_metrics(spec, loaded, fitted)
        if selection:
            tracker.log_metrics(selection)
        if trial is not None:
            return _end_trial(spec, task, loaded, fitted, tracker, out, selection, selection_metric)
        provenance = {"usecase": spec.name, "title": spec.title, "task": spec.task, "class_names": list(spec.class_names),
                      "output": "probabilities [batch, num_classes] in the order of class_names",
                      "mlflow_run_id": tracker.run_id, "git_commit": commit, "data_origin": loaded.origin,
                      "data_sha256": loaded.sha256, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "data_checks": {"summary": found.card_lines(), **found.metrics()}}
        # The trained model is on disk before anything else can fail (a diagnostic, the export).
        checkpoint = fit.save_checkpoint(fitted.model, spec, provenance)
        if fitted.history.get("loss"):
            tracker.log_artifact(plot_history(fitted.history, out / "training_curves.png"), "plots")

        evaluation = task.evaluate(spec, loaded, fitted, tracker, out)
        for path, folder in evaluation.files:
            tracker.log_artifact(path, folder)
        tracker.log_metrics(evaluation.metrics)
        judge_against_chance(spec, tracker, evaluation.metrics, loaded.chance_labels)
        try:
            task.diagnose(spec, loaded, fitted, tracker, out)
        except Exception as exc:  # noqa: BLE001 - a diagnostic never costs the model
            tracker.set_tags({"diagnostics_failed": f"{type(exc).__name__}: {exc}"[:500]})
            say(f"warning: [{spec.name}] diagnostics failed ({type(exc).__name__}: {str(exc)[:200]}); the model is kept")

        metadata = {**provenance, **task.metadata(spec, loaded, fitted, evaluation)}
        card = task.model_card(spec, metadata, evaluation)
        tracker.log_text(card, "MODEL_CARD.md")
        summary = {"run_id": tracker.run_id, "checkpoint": str(checkpoint), "fit_seconds": fitted.fit_seconds,
                   "epochs_run": fitted.epochs_run, "report": evaluation.report, **loaded.sizes, **evaluation.summary}
        if spec.export.enabled and not has_tensorflow():
            say(f"[{spec.name}] export skipped: a SavedModel needs TensorFlow, which is not installed here")
        elif spec.export.enabled:
            check_inputs, example_inputs = task.export_inputs(spec, loaded)
            model_dir = saved_model.export_savedmodel(
                fitted.model, spec.name, check_inputs, metadata, spec.export.tolerance,
                extra_files={"MODEL_CARD.md": card, "report.json": json.dumps(evaluation.report, indent=2, default=float)},
            )
            tracker.log_artifacts(model_dir, "saved_model")
            tracker.set_tags({"exported_to": str(model_dir)})
            example_outputs = fit.predict_probabilities(fitted.model, example_inputs)
            registered = tracker.when_reachable("model registration", lambda: tracker.log_keras_model(
                fitted.model, example_inputs, example_outputs, spec.name if spec.export.register else None,
                saved_model_dir=model_dir,
            ))
            summary["exported_to"] = str(model_dir)
            summary.update(registered_version=registered, **gate(spec, registered, model_dir))
            for fmt in spec.export.formats:
                try:  # the SavedModel is published and registered: a format that fails costs only itself
                    summary.setdefault("formats", {})[fmt] = export_edge(spec, fmt, model_dir, tracker=tracker)
                except PipelineError as exc:
                    tracker.set_tags({f"export_{fmt}_failed": str(exc)[:500]})
                    say(f"warning: [{spec.name}] {exc}")
        if resume:
            resume.clear()

    say(f"[{spec.name}] " + ", ".join(f"{k} {v:.4f}" for k, v in evaluation.headline.items()))
    say(f"[{spec.name}] MLflow run: {tracker.ui_hint}; browse with `make mlflow-ui`")
    say_where_exported(spec, summary)
    return summary


def check_data(spec, task, loaded):
    """The data checks step: count duplicates within and across the splits and inputs with two
    labels, print them, and drop the training copies of held-out examples when the spec says so.
    Returns (the data to train on, what was found)."""
    found = checks.check(task.check_splits(spec, loaded), spec.class_names, spec.checks.near_duplicate_distance,
                         spec.checks.near_duplicate_difference)
    if spec.checks.drop_test_duplicates and found.to_drop:
        loaded = task.drop_examples(spec, loaded, found.to_drop)
        found.record_drop()
    for line in found.lines():
        say(f"[{spec.name}] {line}")
    leaked = {split: sum(pair) for split, pair in found.held_out_in_training().items() if sum(pair)}
    if leaked and not spec.checks.drop_test_duplicates:
        noun = "images" if found.kind == "images" else "rows"
        say(f"warning: [{spec.name}] " + ", ".join(f"{n} {split}" for split, n in leaked.items()) + f" {noun} have a copy "
            "in the training data: their figures are optimistic; --set checks.drop_test_duplicates=true trains without the copies")
    return loaded, found


def log_data_checks(tracker, found) -> None:
    """On the run: the whole finding as JSON, the duplicate counts and class counts as tables."""
    tracker.log_dict(found.to_dict(), "data_checks/data_checks.json")
    tracker.log_table(found.table(), "data_checks/duplicates.json")
    classes = list(next(iter(found.class_counts.values())))
    tracker.log_table({"class": classes, **{split: [counts[c] for c in classes] for split, counts in found.class_counts.items()}},
                      "data_checks/class_counts.json")
    tracker.log_metrics(found.metrics())


def _end_trial(spec, task, loaded, fitted, tracker, out, selection: dict, metric: str) -> dict:
    """A trial's result: its selection metric. Where the task validates by cross-validation its
    evaluation is the validation (the test-like parts were left out by `Task.for_selection`)."""
    if not selection:
        evaluation = task.evaluate(spec, loaded, fitted, tracker, out)
        for path, folder in evaluation.files:
            tracker.log_artifact(path, folder)
        tracker.log_metrics(evaluation.metrics)
        selection = evaluation.metrics
    if metric not in selection:
        raise PipelineError(f"{spec.name} has no validation data to choose settings by ({metric} was not measured): "
                            "set data.val_fraction above 0, or validation.cv_folds")
    say(f"[{spec.name}] {metric} {selection[metric]:.4f} (validation data; the test split is not scored for a trial)")
    return {"run_id": tracker.run_id, "selection_metric": metric, "value": float(selection[metric]),
            "epochs_run": fitted.epochs_run, "fit_seconds": fitted.fit_seconds}


def package_versions() -> dict:
    """What ran the training, as run tags: a result is only reproducible with its stack."""
    import importlib.metadata

    versions = {"python_version": platform.python_version()}
    for name in ("keras", "tensorflow-cpu", "tensorflow", "jax", "mlflow", "scikit-learn", "numpy", "pandas"):
        try:
            versions[f"version_{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _train_as_worker(spec, loaded, cluster) -> dict:
    """A process other than 0 of a multi-process run: it trains its shard in step with the
    others and ends with the same weights, but writes nothing (no MLflow run, checkpoint or
    export): process 0 does, once, for the whole run."""

    dataset = loaded.data
    result = fit.train(spec, dataset)
    fingerprint = fit.weights_sha256(result.models.serving)
    say(f"[{spec.name}] {cluster.name}: weights sha256 {fingerprint}")
    say(f"[{spec.name}] {cluster.name}: done; process 0 tracks and exports this run")
    return {"weights_sha256": fingerprint, "fit_seconds": result.fit_seconds, "epochs_run": result.epochs_run,
            "train_examples": len(dataset.train), **result.batching}


def judge_against_chance(spec, tracker, metrics: dict, labels) -> None:
    """Log the ranking metric's chance level; a model no better than chance is flagged loudly
    (it is still exported, for inspection, but the registry gate never makes it champion)."""
    chance = chance_level(spec.ranking_metric, labels, spec.num_classes)
    if not np.isfinite(chance):
        return
    tracker.log_metrics({"chance_level": chance})
    value = metrics.get(spec.ranking_metric)
    if value is not None and value <= chance:
        tracker.set_tags({"useless_model": "true"})
        say(f"warning: [{spec.name}] {spec.ranking_metric} {value:.4f} is not better than chance ({chance:.4f}): "
            "this model is exported for inspection but never served; check the data, epochs and learning rate")


def gate(spec, registered: str | None, model_dir: Path) -> dict:
    """The registry alias a new version earns (champion or challenger), for the run summary."""
    if not registered:
        return {}

    decision = registry.gate(spec, registered, model_dir)
    return {"alias": decision.alias, "alias_reason": decision.reason}


def say_where_exported(spec, summary: dict) -> None:
    if "exported_to" in summary:
        registered = summary.get("registered_version")
        say(f"[{spec.name}] SavedModel: {summary['exported_to']}"
            + (f" (registered as '{spec.name}' version {registered})" if registered else ""))
    if "alias" in summary:
        say(f"[{spec.name}] registry alias: {summary['alias']} ({summary['alias_reason']})")


def run_export(spec, checkpoint: str | None = None) -> Path:
    """Export a trained `.keras` checkpoint (default: the latest `train`'s) as a new version."""

    task = get_task(spec.task)
    if not task.resumable:
        raise PipelineError(f"'{spec.name}' models are exported by `train` (it keeps no checkpoint); run `make train-{spec.name}`")
    spec = task.prepare(spec)
    keras = import_keras()
    path = Path(checkpoint) if checkpoint else paths.checkpoints_dir(spec.name) / "latest.keras"
    if not path.is_file():
        raise PipelineError(f"no trained checkpoint at {path}; run `make train-{spec.name}` first or pass --checkpoint FILE")
    info_path = path.with_suffix(".json")
    metadata = json.loads(info_path.read_text()) if info_path.is_file() else {"usecase": spec.name}
    register_custom_layers()
    model = keras.models.load_model(str(path))
    # The checkpoint's own input (a skin model trained at data.image_size=192 takes 192x192x3),
    # not the spec's default: `predict` resizes files to what metadata.json says.
    shape = tuple(model.inputs[0].shape[1:])
    metadata = {**metadata, "input_shape": list(shape), "input_dtype": "uint8"}
    # Real test images from the bundled sample prove the export, whatever data trained it,
    # resized to the model's input where it was trained at another size.
    sample = load_dataset(apply_overrides(spec, {"data.source": "sample", "data.data_dir": None, "data.train_limit": 0}))
    check = sample.test.x[:64]
    if check.shape[1:] != shape:
        check = resize_images(check, shape)
    model_dir = saved_model.export_savedmodel(model, spec.name, check, metadata, spec.export.tolerance)
    say(f"[{spec.name}] SavedModel: {model_dir}")
    return model_dir


CALIBRATION_IMAGES = 300  # int8 ranges: a few hundred real training images, more barely moves them


def run_export_formats(spec, formats: tuple, model: str | None = None, data_given: bool = False) -> dict:
    """`export --format litert|onnx`: files beside a published version (default: the champion),
    verified on the test split of the data it was trained on (or the --data given), and logged
    on the version's MLflow run when the tracking store has it."""
    folder = resolve_model_dir(spec.name, model)
    metadata = saved_model.read_metadata(folder)
    if metadata.get("usecase") != spec.name:
        raise PipelineError(f"{folder} is a '{metadata.get('usecase')}' model, not '{spec.name}'")
    for fmt in formats:
        edge.check_exportable(metadata, fmt, folder)  # a table model: one line before any data loads
    if not data_given:
        spec = on_trained_data(spec, metadata)
    return {fmt: export_edge(spec, fmt, folder) for fmt in formats}


def on_trained_data(spec, metadata: dict):
    """The spec reading the data the version was trained on: its `data_origin` is `sample`,
    `full` or the folder it was read from."""
    origin = metadata.get("data_origin")
    if origin in ("sample", "full"):
        return apply_overrides(spec, {"data.source": origin})
    if origin and Path(origin).is_dir():
        return apply_overrides(spec, {"data.data_dir": origin})
    return spec


def export_edge(spec, fmt: str, folder: Path, tracker=None) -> dict:
    """Convert published version `folder` to `fmt`, verified on the test split of `spec`'s data
    (int8 calibrated on a seeded sample of its training images), then logged on the MLflow run:
    `tracker`'s during `train`, else the version's own run if the store has it."""
    import_keras()
    import tensorflow as tf

    metadata = saved_model.read_metadata(folder)
    edge.check_exportable(metadata, fmt, folder)
    spec = at_model_size(spec, metadata)
    dataset = load_dataset(spec)
    test = dataset.test
    if not len(test):
        raise PipelineError(f"{dataset.origin} data has no test split to verify the {fmt} export on")
    loaded = tf.saved_model.load(str(folder))  # keep a reference: see STACK.md
    reference = np.concatenate([saved_model.call_serving(loaded, test.x[i : i + 512]) for i in range(0, len(test), 512)])
    if reference.shape[1] == 1:
        reference = np.hstack([1 - reference, reference])
    rng = np.random.default_rng(spec.train.seed)
    calibration = dataset.train.x[np.sort(rng.choice(len(dataset.train), min(CALIBRATION_IMAGES, len(dataset.train)), replace=False))]
    note = f"{dataset.origin} test split"
    if metadata.get("trained_on_all_data") and metadata.get("data_sha256") == dataset.sha256:
        note += ", which this cross-validated model trained on: agreement is the check, accuracy is not held out"
    say(f"[{spec.name}] {fmt}: converting {folder} and verifying on {len(test):,} test images ({dataset.origin})")
    entry = edge.export_format(folder, fmt, reference, test.x, test.y, calibration, note)
    for name, info in entry["files"].items():
        figures = info["verification"]
        say(f"[{spec.name}] {folder / fmt / name}: {info['bytes'] / 1e3:,.0f} kB, argmax agreement {figures['argmax_agreement']:.2%}, "
            f"accuracy {figures['accuracy']:.4f} (SavedModel {figures['savedmodel_accuracy']:.4f}), "
            f"largest probability difference {figures['max_abs_probability_difference']:.4f}")
    for info in entry.get("refused", {}).values():
        say(f"warning: [{spec.name}] {info['reason']}")
    _log_edge(spec, fmt, folder, entry, tracker)
    return entry


def _log_edge(spec, fmt: str, folder: Path, entry: dict, tracker) -> None:
    """The files under artifact `<fmt>/`, their figures as `<fmt>_<variant>_*` metrics, and the
    updated metadata.json and model card under `saved_model/` of the run that made the version."""
    metrics = {}
    for name, info in entry["files"].items():
        prefix = f"{fmt}_{Path(name).stem.removeprefix('model_').removeprefix('model')}".rstrip("_")
        metrics.update({f"{prefix}_bytes": info["bytes"], **{f"{prefix}_{k}": v for k, v in info["verification"].items()}})
    described = [folder / name for name in (saved_model.METADATA_FILE, edge.CARD_FILE) if (folder / name).is_file()]
    if tracker is not None:
        tracker.log_artifacts(folder / fmt, fmt)
        tracker.log_metrics(metrics)
        for path in described:
            tracker.log_artifact(path, "saved_model")
        return
    run_id = saved_model.read_metadata(folder).get("mlflow_run_id")
    if not run_id or not store_exists():
        say(f"[{spec.name}] {fmt}: no tracking store with the version's run ({tracking_uri()}): logged in {folder} only")
        return
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        client.get_run(run_id)
    except MlflowException:
        say(f"[{spec.name}] {fmt}: run {run_id} is not in {tracking_uri()}: logged in {folder} only")
        return
    client.log_artifacts(run_id, str(folder / fmt), fmt)
    client.log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()])
    for path in described:
        client.log_artifact(run_id, str(path), "saved_model")
    say(f"[{spec.name}] {fmt}: logged on MLflow run {run_id}")


def at_model_size(spec, metadata: dict):
    """The spec as the task runs it, its images at the exported model's size: a skin model
    trained at `data.image_size=192` is evaluated on 192 px images without repeating the --set;
    a size set on the command line that contradicts the model is refused."""

    task = get_task(spec.task)
    prepared = task.prepare(spec)
    shape = tuple(metadata.get("input_shape") or prepared.input_shape)
    if shape == tuple(prepared.input_shape):
        return prepared
    what = f"the model takes {'x'.join(map(str, shape))} images"
    if "data.image_size" not in flatten(spec):
        raise PipelineError(f"{what}, {spec.name}'s data {'x'.join(map(str, prepared.input_shape))}")
    if spec.data.image_size != get_spec(spec.name).data.image_size:
        raise PipelineError(f"{what}, not data.image_size={spec.data.image_size}: drop that --set or make it {shape[0]}")
    return task.prepare(apply_overrides(spec, {"data.image_size": shape[0]}))


def run_evaluate(spec, model_dir: str | None = None, out_dir: str | None = None, operating_point: str | None = None) -> dict:
    """Evaluate an exported SavedModel on the spec's test split, through its `serve` signature,
    deciding at `operating_point` (default: the model's own default); a model with operating
    points also gets both side by side, at the priors and tau it was exported with."""

    import_keras()
    import tensorflow as tf

    folder = resolve_model_dir(spec.name, model_dir)
    metadata = saved_model.read_metadata(folder)
    if metadata.get("usecase") != spec.name:
        raise PipelineError(f"{folder} is a '{metadata.get('usecase')}' model, not '{spec.name}'")
    operating_points.check_point(operating_point, metadata, str(folder))
    points = operating_points.OperatingPoints.from_metadata(metadata)
    spec = at_model_size(spec, metadata)
    dataset = load_dataset(spec)
    say(f"[{spec.name}] evaluating {folder} on {dataset.describe()}")
    if metadata.get("trained_on_all_data") and metadata.get("data_sha256") == dataset.sha256:
        say(f"warning: [{spec.name}] {folder} was trained on every image of this data (a cross-validated run): these test "
            "figures are on training images; its estimate is the cross-validation in its report.json")
    loaded = tf.saved_model.load(str(folder))
    batches = [saved_model.call_serving(loaded, dataset.test.x[i : i + 512]) for i in range(0, len(dataset.test), 512)]
    probabilities = np.concatenate(batches)
    if probabilities.shape[1] == 1:  # P(positive) of a binary model -> both classes
        probabilities = np.hstack([1 - probabilities, probabilities])
    title = f"{spec.title}: {folder} on {dataset.origin} test data"
    if points is None:
        report = classification_report(dataset.test.y, probabilities, spec.class_names)
        markdown = to_markdown(report, title)
    else:
        point = operating_point or points.default
        report = classification_report(dataset.test.y, probabilities, spec.class_names, points.decide(probabilities, point))
        report["operating_point"] = point
        report["operating_points"] = operating_points.report_section(
            points, spec.class_names, dataset.test.y, probabilities, spec.priority_classes)
        title += f", {point} operating point"
        markdown = to_markdown(report, title) + "\n" + operating_points.to_markdown(report["operating_points"])
    target = Path(out_dir) if out_dir else paths.usecase_models_dir(spec.name) / "evaluations" / f"v{folder.name}-{dataset.origin}"
    write_report(report, target, title, markdown)
    print(markdown, file=sys.stdout)
    say(f"[{spec.name}] report: {target}")
    return report
