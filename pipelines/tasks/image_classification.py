"""Images with a held-out test split: fit once (resumable, per-epoch backup), evaluate the
serving model on the official test split, explain it with Grad-CAM."""

from __future__ import annotations

import dataclasses

from pipelines.console import say
from pipelines.tasks import Evaluation, Fitted, Loaded, Task


def sized(spec):
    """The spec with `input_shape` following `data.image_size`: square images of that side,
    channels kept (0, or the spec's own side: unchanged). The loader resizes to it, and the
    model, export, model card and `predict` all read it from here."""
    size = spec.data.image_size
    if not size or tuple(spec.input_shape[:2]) == (size, size):
        return spec
    return dataclasses.replace(spec, input_shape=(size, size, *spec.input_shape[2:]))


class ImageClassification(Task):
    # Tabular settings live in `spec.tabular`, which image specs do not have: nothing else to refuse.
    resumable = True

    def prepare(self, spec):
        return sized(spec)

    def load(self, spec) -> Loaded:
        from pipelines.loaders import load_dataset

        dataset = load_dataset(spec)
        val = len(dataset.val) if dataset.val is not None else 0
        sizes = {"train_examples": len(dataset.train), "val_examples": val, "test_examples": len(dataset.test)}
        return Loaded(dataset, dataset.origin, dataset.sha256, dataset.files, sizes, dataset.describe(), dataset.test.y)

    def fit(self, spec, loaded: Loaded, tracker, resume) -> Fitted:
        from pipelines import training

        dataset = loaded.data
        result = training.train(spec, dataset, callbacks=(tracker.epoch_callback(),), resume=resume)
        fingerprint = training.weights_sha256(result.models.serving)
        tracker.set_tags({**result.distribution.as_tags(), **result.batching, "weights_sha256": fingerprint})
        return Fitted(result.models.serving, result.history, result.epochs_run, result.fit_seconds,
                      examples_seen=len(dataset.train) * max(result.epochs_run, 1),
                      extra={"models": result.models, "weights_sha256": fingerprint})

    def evaluate(self, spec, loaded: Loaded, fitted: Fitted, tracker, out) -> Evaluation:
        from pipelines import operating_points
        from pipelines.evaluation import classification_report, headline, to_markdown, write_report
        from pipelines.training import predict_probabilities

        dataset = loaded.data
        test = dataset.test
        probabilities = predict_probabilities(fitted.model, test.x)
        fitted.extra["test_probabilities"] = probabilities
        report = classification_report(test.y, probabilities, spec.class_names)
        # Both decision rules from the one model; tau is chosen on validation data, never on test.
        validation = (dataset.val.y, predict_probabilities(fitted.model, dataset.val.x)) if dataset.val is not None else None
        points, curve = operating_points.choose(spec.class_names, dataset.train.y, validation, spec.operating_point)
        report["operating_points"] = operating_points.report_section(
            points, spec.class_names, test.y, probabilities, spec.priority_classes, curve)
        title = f"{spec.title}: test report"
        markdown = to_markdown(report, title) + "\n" + operating_points.to_markdown(report["operating_points"])
        files = [(path, "evaluation") for path in write_report(report, out / "evaluation", title, markdown)]
        files.append((operating_points.plot_curve(report["operating_points"], out / "operating_points.png"), "evaluation"))
        measured = headline(report)
        balanced = report["operating_points"]["points"]["balanced"]
        printed = {f"test {k}": v for k, v in measured.items()}
        printed[f"balanced point (tau {balanced['tau']:.2f}) balanced_accuracy"] = balanced["balanced_accuracy"]
        metrics = {f"test_{k}": v for k, v in measured.items()}
        metrics.update(operating_points.metrics(report["operating_points"]))
        return Evaluation(report, markdown, metrics, printed, files, {"test": measured})

    def diagnose(self, spec, loaded: Loaded, fitted: Fitted, tracker, out) -> None:
        from pipelines.runtime import import_keras

        if import_keras().backend.backend() != "tensorflow":
            say(f"[{spec.name}] Grad-CAM skipped: it needs the TensorFlow backend")
            return
        from pipelines.explain import grad_cam_grid

        test = loaded.data.test
        path = grad_cam_grid(fitted.extra["models"], test.x, test.y, fitted.extra["test_probabilities"],
                             spec.class_names, out / "grad_cam.png")
        tracker.log_artifact(path, "explanations")

    def metadata(self, spec, loaded: Loaded, fitted: Fitted, evaluation: Evaluation) -> dict:
        from pipelines.evaluation import headline
        from pipelines.operating_points import OperatingPoints

        return {
            "input_shape": list(spec.input_shape),
            "input_dtype": "uint8",
            **loaded.sizes,
            "val_origin": loaded.data.val_origin,
            "epochs_run": fitted.epochs_run,
            "test_metrics": headline(evaluation.report),
            "operating_points": OperatingPoints.from_metadata(evaluation.report).as_metadata(),
        }

    def model_card(self, spec, metadata: dict, evaluation: Evaluation) -> str:
        from pipelines import model_card

        return model_card.render(spec, metadata, evaluation.report)

    def export_inputs(self, spec, loaded: Loaded) -> tuple:
        test = loaded.data.test
        return test.x[:64], test.x[:4]
