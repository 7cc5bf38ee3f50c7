"""The verbs over one spec: train (fit, evaluate, track, export), export, evaluate.

Each verb prints where its outputs went. Data is loaded before TensorFlow is imported, so a
missing or corrupt file is reported in a second, not after start-up.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipelines import config, export, paths
from pipelines.dataset import Dataset
from pipelines.errors import PipelineError
from pipelines.evaluation import chance_level, classification_report, headline, to_markdown, write_report
from pipelines.loaders import load_dataset
from pipelines.runtime import has_tensorflow


def say(message: str) -> None:
    print(message, flush=True)


def describe_dataset(dataset: Dataset) -> str:
    val = len(dataset.val) if dataset.val is not None else 0
    return f"{dataset.origin} data: train {len(dataset.train)}, val {val}, test {len(dataset.test)} (sha256 {dataset.sha256[:12]})"


def run_train(spec, run_name: str | None = None, tags: dict | None = None) -> dict:
    """`tags` go on the MLflow run from its start (a sweep marks its children with them)."""
    if spec.task == "tabular_classification":
        from pipelines.tabular_pipeline import run_train_tabular

        return run_train_tabular(spec, run_name, tags)
    from pipelines import model_card, strategy, training
    from pipelines.plots import plot_history
    from pipelines.tracking import Tracker, git_commit

    dataset = load_dataset(spec)
    say(f"[{spec.name}] {describe_dataset(dataset)}")
    cluster = strategy.join_cluster()  # several processes (KERAS_DISTRIBUTION_*): before JAX computes anything
    if cluster is not None and not cluster.is_chief:
        return _train_as_worker(spec, dataset, cluster)
    # A multi-process run is not resumable: the other processes would start from scratch.
    resume = training.ResumeState(spec) if cluster is None else None
    pending = resume.pending_run_id() if resume else None
    if pending:
        say(f"[{spec.name}] resuming interrupted MLflow run {pending} from its last completed epoch")

    with Tracker(spec.name, run_name=run_name, resume_run_id=pending, tags=tags) as tracker, tempfile.TemporaryDirectory() as scratch:
        if resume:
            resume.remember(tracker.run_id)
        out = Path(scratch)
        tracker.log_params({**config.flatten(spec), "train_examples": len(dataset.train), "val_examples": len(dataset.val), "test_examples": len(dataset.test)})
        tracker.log_dict(spec.to_dict(), "spec.json")
        tracker.log_dict(dataset.files, "data_files_sha256.json")
        commit = git_commit()
        tracker.set_tags({"usecase": spec.name, "data_source": dataset.origin, "data_sha256": dataset.sha256, "git_commit": commit, "verb": "train"})

        result = training.train(spec, dataset, callbacks=(tracker.epoch_callback(),), resume=resume)
        fingerprint = training.weights_sha256(result.models.serving)
        tracker.set_tags({**result.distribution.as_tags(), **result.batching, "weights_sha256": fingerprint})
        if cluster is not None:
            say(f"[{spec.name}] {cluster.name}: weights sha256 {fingerprint}")
        images_seen = len(dataset.train) * max(result.epochs_run, 1)
        tracker.log_metrics({"fit_seconds": result.fit_seconds, "train_examples_per_second": images_seen / max(result.fit_seconds, 1e-9)})
        if result.history.get("loss"):
            tracker.log_artifact(plot_history(result.history, out / "training_curves.png"), "plots")

        serving = result.models.serving
        probabilities = training.predict_probabilities(serving, dataset.test.x)
        report = classification_report(dataset.test.y, probabilities, spec.class_names)
        for path in write_report(report, out / "evaluation", f"{spec.title}: test report"):
            tracker.log_artifact(path, "evaluation")
        test_metrics = {f"test_{k}": v for k, v in headline(report).items()}
        tracker.log_metrics(test_metrics)
        judge_against_chance(spec, tracker, test_metrics, dataset.test.y)
        if spec.task == "image_classification":
            _log_explanations(spec, result.models, dataset, probabilities, tracker, out)

        metadata = {
            "usecase": spec.name,
            "title": spec.title,
            "task": spec.task,
            "class_names": list(spec.class_names),
            "input_shape": list(spec.input_shape),
            "input_dtype": "uint8",
            "mlflow_run_id": tracker.run_id,
            "git_commit": commit,
            "data_origin": dataset.origin,
            "data_sha256": dataset.sha256,
            "train_examples": len(dataset.train),
            "val_examples": len(dataset.val),
            "test_examples": len(dataset.test),
            "val_origin": dataset.val_origin,
            "epochs_run": result.epochs_run,
            "test_metrics": headline(report),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        checkpoint = training.save_checkpoint(result.models, spec, metadata)
        summary = {
            "run_id": tracker.run_id,
            "test": headline(report),
            "checkpoint": str(checkpoint),
            "fit_seconds": result.fit_seconds,
            "epochs_run": result.epochs_run,
            "train_examples": len(dataset.train),
        }

        if spec.export.enabled and not has_tensorflow():
            say(f"[{spec.name}] export skipped: a SavedModel needs TensorFlow, which is not installed here")
        elif spec.export.enabled:
            card = model_card.render(spec, metadata, report)
            tracker.log_text(card, "MODEL_CARD.md")
            model_dir = export.export_savedmodel(
                serving, spec.name, dataset.test.x[:64], metadata, spec.export.tolerance,
                extra_files={"MODEL_CARD.md": card, "report.json": json.dumps(report, indent=2)},
            )
            tracker.log_artifacts(model_dir, "saved_model")
            tracker.set_tags({"exported_to": str(model_dir)})
            registered = tracker.when_reachable("model registration", lambda: tracker.log_keras_model(
                serving, dataset.test.x[:4], probabilities[:4], spec.name if spec.export.register else None,
                saved_model_dir=model_dir,
            ))
            summary["exported_to"] = str(model_dir)
            summary.update(registered_version=registered, **gate(spec, registered, model_dir))
        if resume:
            resume.clear()

    say(f"[{spec.name}] test " + ", ".join(f"{k} {v:.4f}" for k, v in summary["test"].items()))
    say(f"[{spec.name}] MLflow run: {tracker.ui_hint}; browse with `make mlflow-ui`")
    say_where_exported(spec, summary)
    return summary


def _train_as_worker(spec, dataset: Dataset, cluster) -> dict:
    """A process other than 0 of a multi-process run: it trains its shard in step with the
    others and ends with the same weights, but writes nothing (no MLflow run, checkpoint or
    export): process 0 does, once, for the whole run."""
    from pipelines import training

    result = training.train(spec, dataset)
    fingerprint = training.weights_sha256(result.models.serving)
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
    from pipelines import registry

    decision = registry.gate(spec, registered, model_dir)
    return {"alias": decision.alias, "alias_reason": decision.reason}


def say_where_exported(spec, summary: dict) -> None:
    if "exported_to" in summary:
        registered = summary.get("registered_version")
        say(f"[{spec.name}] SavedModel: {summary['exported_to']}" + (f" (registered as '{spec.name}' version {registered})" if registered else ""))
    if "alias" in summary:
        say(f"[{spec.name}] registry alias: {summary['alias']} ({summary['alias_reason']})")


def _log_explanations(spec, models, dataset, probabilities, tracker, out: Path) -> None:
    from pipelines.runtime import import_keras

    if import_keras().backend.backend() != "tensorflow":
        say(f"[{spec.name}] Grad-CAM skipped: it needs the TensorFlow backend")
        return
    from pipelines.explain import grad_cam_grid

    path = grad_cam_grid(models, dataset.test.x, dataset.test.y, probabilities, spec.class_names, out / "grad_cam.png")
    tracker.log_artifact(path, "explanations")


def run_export(spec, checkpoint: str | None = None) -> Path:
    """Export a trained `.keras` checkpoint (default: the latest `train`'s) as a new version."""
    from pipelines.model import register_custom_layers
    from pipelines.runtime import import_keras

    if spec.task == "tabular_classification":
        raise PipelineError(f"'{spec.name}' models are exported by `train` (its final model fits in seconds); run `make train-{spec.name}`")
    keras = import_keras()
    path = Path(checkpoint) if checkpoint else paths.checkpoints_dir(spec.name) / "latest.keras"
    if not path.is_file():
        raise PipelineError(f"no trained checkpoint at {path}; run `make train-{spec.name}` first or pass --checkpoint FILE")
    info_path = path.with_suffix(".json")
    metadata = json.loads(info_path.read_text()) if info_path.is_file() else {"usecase": spec.name}
    register_custom_layers()
    model = keras.models.load_model(str(path))
    # Real test images from the bundled sample prove the export, whatever data trained it.
    sample = load_dataset(config.apply_overrides(spec, {"data.source": "sample", "data.data_dir": None, "data.train_limit": 0}))
    model_dir = export.export_savedmodel(model, spec.name, sample.test.x[:64], metadata, spec.export.tolerance)
    say(f"[{spec.name}] SavedModel: {model_dir}")
    return model_dir


def run_evaluate(spec, model_dir: str | None = None, out_dir: str | None = None) -> dict:
    """Evaluate an exported SavedModel on the spec's test split, through its `serve` signature."""
    from pipelines.runtime import import_keras

    import_keras()
    import tensorflow as tf

    from pipelines.registry import resolve_model_dir

    folder = resolve_model_dir(spec.name, model_dir)
    metadata = export.read_metadata(folder)
    if metadata.get("usecase") != spec.name:
        raise PipelineError(f"{folder} is a '{metadata.get('usecase')}' model, not '{spec.name}'")
    dataset = load_dataset(spec)
    say(f"[{spec.name}] evaluating {folder} on {describe_dataset(dataset)}")
    loaded = tf.saved_model.load(str(folder))
    batches = [export.call_serving(loaded, dataset.test.x[i : i + 512]) for i in range(0, len(dataset.test), 512)]
    probabilities = np.concatenate(batches)
    if probabilities.shape[1] == 1:  # P(positive) of a binary model -> both classes
        probabilities = np.hstack([1 - probabilities, probabilities])
    report = classification_report(dataset.test.y, probabilities, spec.class_names)
    target = Path(out_dir) if out_dir else paths.usecase_models_dir(spec.name) / "evaluations" / f"v{folder.name}-{dataset.origin}"
    write_report(report, target, f"{spec.title}: {folder} on {dataset.origin} test data")
    print(to_markdown(report, f"{spec.title}: version {folder.name}"), file=sys.stdout)
    say(f"[{spec.name}] report: {target}")
    return report
