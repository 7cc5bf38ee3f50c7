"""Images, judged one of two ways (`validation.cv_folds`):

- held out (0, the default): fit once (resumable, per-epoch backup), evaluate the serving
  model on the test split, explain it with Grad-CAM;
- cross-validated (k >= 2): every image the loader finds (train, validation and test splits
  pooled) goes into repeated stratified k-fold cross-validation, one fresh model per fold on
  the shared folds (`pipelines.training.cross_validation`); the mean +- sd over the folds is the
  estimate, and the exported model is then trained on all the images. It has no held-out
  score of its own: its report and metadata say that the estimate is the CV one, and the run
  is ranked by the CV mean of the spec's ranking metric (`test_accuracy` -> `cv_accuracy_mean`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.core.console import say
from pipelines.core.errors import UsageError
from pipelines.core.runtime import import_keras, many_models_in_one_process
from pipelines.data.dataset import Dataset, Split
from pipelines.data.loaders import get_loader, load_dataset
from pipelines.data.splits import stratified_indices
from pipelines.evaluation import model_card, operating_points
from pipelines.evaluation.explain import grad_cam_grid
from pipelines.evaluation.operating_points import OperatingPoints
from pipelines.evaluation.plots import plot_confusion_matrix
from pipelines.evaluation.report import classification_report, headline, to_markdown, write_report, write_report_text
from pipelines.modeling import test_time_augmentation
from pipelines.tasks import Evaluation, Fitted, Loaded, Task
from pipelines.training import cross_validation, fit
from pipelines.training.cross_validation import describe, ranking_metric
from pipelines.training.fit import predict_probabilities


def stacked_views(spec):
    """`data.views=k` photos of each object, stored RGB after RGB as 3k channels (CUCUMBER-9
    prototype 2: k = 3, 32x32x9): the input shape the loader checks and the model serves."""
    if spec.data.views == 1:
        return spec
    return dataclasses.replace(spec, input_shape=(*spec.input_shape[:2], 3 * spec.data.views))


def cross_validated(spec) -> bool:
    return spec.validation.cv_folds > 0


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
    headline_metrics = ("test_accuracy", "test_balanced_accuracy", "test_macro_auc_ovr",
                        "cv_accuracy_mean", "cv_balanced_accuracy_mean", "cv_macro_auc_ovr_mean")

    def check(self, spec) -> None:
        if spec.data.views > 1 and len(spec.input_shape) != 3:
            raise UsageError(f"data.views={spec.data.views} stacks RGB photos as channels: only colour image use cases have views")
        test_time_augmentation.check(spec.model.test_time_augmentation, spec.input_shape)
        if cross_validated(spec) and spec.train.early_stopping_patience:
            raise UsageError(f"train.early_stopping_patience={spec.train.early_stopping_patience}: with cv_folds every fit runs all "
                             "its epochs (the final model, trained on all the data, has nothing to stop on); set one of them to 0")

    def prepare(self, spec):
        spec = stacked_views(sized(spec))
        if cross_validated(spec):
            spec = dataclasses.replace(spec, ranking_metric=ranking_metric(spec.ranking_metric))
        return spec

    def selection_metric(self, spec) -> str:
        # Cross-validated: the ranking metric already is the CV mean (prepare() made it so).
        return spec.ranking_metric if cross_validated(spec) else "validation_" + spec.ranking_metric.removeprefix("test_")

    def validation_metrics(self, spec, loaded: Loaded, fitted: Fitted) -> dict:
        """The test metrics' names and computations on the validation split instead: `test_accuracy`
        becomes `validation_accuracy`, `test_balanced_point_balanced_accuracy` becomes
        `validation_balanced_point_balanced_accuracy` (its tau is chosen on the same validation
        images, a mild optimism shared by every trial alike)."""
        dataset = loaded.data
        if cross_validated(spec) or dataset.val is None or not len(dataset.val):
            return {}
        val = dataset.val
        probabilities = predict_probabilities(fitted.model, val.x)
        report = classification_report(val.y, probabilities, spec.class_names)
        points, _ = operating_points.choose(spec.class_names, dataset.train.y, (val.y, probabilities), spec.operating_point)
        section = operating_points.report_section(points, spec.class_names, val.y, probabilities, spec.priority_classes)
        measured = {f"validation_{k}": v for k, v in headline(report).items()}
        measured.update({"validation_" + k.removeprefix("test_"): v for k, v in operating_points.metrics(section).items()
                         if k.startswith("test_")})
        return measured

    def load(self, spec) -> Loaded:
        if cross_validated(spec):
            return _load_pooled(spec)
        dataset = load_dataset(spec)
        val = len(dataset.val) if dataset.val is not None else 0
        sizes = {"train_examples": len(dataset.train), "val_examples": val, "test_examples": len(dataset.test), **_passed_over(dataset)}
        return Loaded(dataset, dataset.origin, dataset.sha256, dataset.files, sizes, dataset.describe(), dataset.test.y)

    def fit(self, spec, loaded: Loaded, tracker, resume) -> Fitted:
        if cross_validated(spec):
            return _fit_cross_validated(spec, loaded, tracker, resume)
        return _fit(spec, loaded.data, tracker, resume)

    def evaluate(self, spec, loaded: Loaded, fitted: Fitted, tracker, out) -> Evaluation:
        if cross_validated(spec):
            return _evaluate_cross_validated(spec, loaded, fitted, out)
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
        if import_keras().backend.backend() != "tensorflow":
            say(f"[{spec.name}] Grad-CAM skipped: it needs the TensorFlow backend")
            return
        if cross_validated(spec):
            say(f"[{spec.name}] Grad-CAM skipped: the final model trained on every image, none is held out to explain")
            return
        if spec.data.views > 1:
            say(f"[{spec.name}] Grad-CAM skipped: it explains one image, this model takes {spec.data.views} views at once")
            return

        test = loaded.data.test
        path = grad_cam_grid(fitted.extra["models"], test.x, test.y, fitted.extra["test_probabilities"],
                             spec.class_names, out / "grad_cam.png")
        tracker.log_artifact(path, "explanations")

    def metadata(self, spec, loaded: Loaded, fitted: Fitted, evaluation: Evaluation) -> dict:
        # image_fit: how `predict` fits a photo file to input_shape, as the loader fitted the training photos.
        common = {"input_shape": list(spec.input_shape), "input_dtype": "uint8", "views": spec.data.views,
                  "image_fit": spec.data.image_fit, "test_time_augmentation": list(spec.model.test_time_augmentation),
                  **loaded.sizes,
                  "val_origin": loaded.data.val_origin, "epochs_run": fitted.epochs_run,
                  "operating_points": OperatingPoints.from_metadata(evaluation.report).as_metadata()}
        if cross_validated(spec):
            return {**common, "evaluation": evaluation.report["protocol"], "trained_on_all_data": True,
                    "cv_metrics": evaluation.report["cross_validation"]}
        return {**common, "evaluation": "held-out test split", "test_metrics": headline(evaluation.report)}

    def check_splits(self, spec, loaded: Loaded) -> dict:
        dataset = loaded.data
        if cross_validated(spec):
            return {"folds": dataset.train}
        val = dataset.val if dataset.val is not None and len(dataset.val) else None
        return {"train": dataset.train, "val": val, "test": dataset.test}

    def drop_examples(self, spec, loaded: Loaded, to_drop: dict) -> Loaded:
        dataset = loaded.data
        for name, indices in to_drop.items():
            split = dataset.train if name in ("train", "folds") else dataset.val
            split = split.take(np.setdiff1d(np.arange(len(split)), indices))
            if name == "val":
                dataset.val = split
            else:
                dataset.train = split
        if cross_validated(spec):
            sizes = {**loaded.sizes, "train_examples": len(dataset.train)}
            return dataclasses.replace(loaded, sizes=sizes, chance_labels=dataset.train.y)
        return dataclasses.replace(loaded, sizes={**loaded.sizes, "train_examples": len(dataset.train),
                                                  "val_examples": len(dataset.val) if dataset.val is not None else 0})

    def model_card(self, spec, metadata: dict, evaluation: Evaluation) -> str:
        return model_card.render(spec, metadata, evaluation.report)

    def export_inputs(self, spec, loaded: Loaded) -> tuple:
        # A cross-validated run holds every image as training data: there is no test split.
        images = loaded.data.train.x if cross_validated(spec) else loaded.data.test.x
        return images[:64], images[:4]


def _passed_over(dataset) -> dict:
    """Counts of the files a folder loader passed over (logged as params), when there were any."""
    counts = {"skipped_images": len(dataset.skipped), "ignored_files": dataset.ignored}
    return {name: count for name, count in counts.items() if count}


def _fit(spec, dataset, tracker, resume) -> Fitted:
    result = fit.train(spec, dataset, callbacks=(tracker.epoch_callback(),), resume=resume)
    fingerprint = fit.weights_sha256(result.models.serving)
    tracker.set_tags({**result.distribution.as_tags(), **result.batching, "weights_sha256": fingerprint})
    return Fitted(result.models.serving, result.history, result.epochs_run, result.fit_seconds,
                  examples_seen=len(dataset.train) * max(result.epochs_run, 1),
                  extra={"models": result.models, "weights_sha256": fingerprint})


# --- cross-validation -------------------------------------------------------------------------


def _load_pooled(spec) -> Loaded:
    """Every image the loader finds, in one training split: the folds are drawn from it and the
    final model trains on all of it (`data.train_limit` keeps a stratified subset, for quick runs)."""

    dataset = get_loader(spec.data.loader)(spec)
    parts = [split for split in (dataset.train, dataset.val, dataset.test) if split is not None]
    pooled = Split(np.concatenate([split.x for split in parts]), np.concatenate([split.y for split in parts]))
    if spec.data.train_limit and spec.data.train_limit < len(pooled):
        keep, _ = stratified_indices(pooled.y, 1 - spec.data.train_limit / len(pooled), spec.train.seed)
        pooled = pooled.take(np.sort(keep))
    dataset.train, dataset.test, dataset.val = pooled, pooled.take(np.arange(0)), pooled.take(np.arange(0))
    dataset.val_origin = "none: the held-out folds of the cross-validation"
    description = f"{dataset.origin} data, every split pooled for {describe(spec.validation, len(pooled))} (sha256 {dataset.sha256[:12]})"
    sizes = {"train_examples": len(pooled), "val_examples": 0, "test_examples": 0, **_passed_over(dataset)}
    return Loaded(dataset, dataset.origin, dataset.sha256, dataset.files, sizes, description, pooled.y)


def _fit_cross_validated(spec, loaded: Loaded, tracker, resume) -> Fitted:
    """A fresh model per fold (seed + fold index, like the tabular task), then the final model
    on all the images, which alone logs training curves and is resumable epoch by epoch; the
    folds done are kept in the run's backup folder, so a run killed midway fits only the rest."""

    many_models_in_one_process()  # a model per fold
    dataset = loaded.data
    pooled = dataset.train
    seen = []

    def fit_fold(index, train, held):
        fold = Dataset(train=pooled.take(train), test=pooled.take(held), val=pooled.take(np.arange(0)),
                       class_names=dataset.class_names, origin=dataset.origin, files=dataset.files)
        fold_spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=spec.train.seed + index))
        result = fit.train(fold_spec, fold)
        seen.append(len(train) * max(result.epochs_run, 1))
        probabilities = fit.predict_probabilities(result.models.serving, fold.test.x)
        return {"": (headline(classification_report(fold.test.y, probabilities, spec.class_names)), probabilities)}

    say(f"[{spec.name}] {spec.validation.cv_folds * spec.validation.cv_repeats} folds, a fresh {spec.model.builder} model for each")
    cv = cross_validation.run(spec.validation, spec.train.seed, pooled.y, fit_fold, tracker, shown=("accuracy", "macro_auc_ovr"),
                              cache=resume.folder / "folds" if resume else None)  # removed with the backup when the run ends
    say(f"[{spec.name}] final model on all {len(pooled)} images")
    fitted = _fit(spec, dataset, tracker, resume)
    fitted.extra["cv"] = cv
    fitted.extra["final_fit_seconds"] = fitted.fit_seconds
    fitted.fit_seconds += sum(cv["seconds"])  # the whole protocol, as the tabular task reports it
    fitted.examples_seen += sum(seen)
    return fitted


def _evaluate_cross_validated(spec, loaded: Loaded, fitted: Fitted, out) -> Evaluation:
    cv = fitted.extra["cv"]
    oof_y, oof_p = cv["out_of_fold"]["y"], cv["out_of_fold"][""]
    # The exported model's decision rules (pipelines.evaluation.operating_points): priors from every image it
    # trained on, tau chosen on the pooled out-of-fold predictions, the only images no model of this
    # run had seen. Each fold is also scored at the `balanced` point, so a use case ranked by a
    # balanced-point metric has its CV mean; tau was chosen on those predictions, a mild optimism.
    points, curve = operating_points.choose(spec.class_names, loaded.data.train.y, (oof_y, oof_p), spec.operating_point)
    points = dataclasses.replace(points, tau_source=f"best balanced accuracy of the pooled out-of-fold predictions ({len(oof_y)})")
    bounds = np.cumsum([0] + [len(held) for _, held in cv["splits"]])
    folds = [{**fold, **_balanced_point(points, spec, oof_y[start:end], oof_p[start:end])}
             for fold, start, end in zip(cv["folds"][""], bounds[:-1], bounds[1:])]
    summary = cross_validation.summarise(folds)
    pooled = classification_report(oof_y, oof_p, spec.class_names)
    examples = len(loaded.data.train)
    protocol = (f"{cross_validation.describe(spec.validation, examples)}, seed {spec.train.seed}: mean +- sd over the folds "
                f"estimates this training recipe; the exported model was then trained on all {examples} images, "
                "so it has no held-out score of its own")
    report = {"protocol": protocol, "cross_validation": summary, "per_fold": folds, "fold_seconds": cv["seconds"],
              "final_fit_seconds": fitted.extra["final_fit_seconds"], "out_of_fold": pooled,
              "operating_points": operating_points.report_section(points, spec.class_names, oof_y, oof_p, spec.priority_classes, curve)}
    names = [k for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr", "log_loss") if k in summary]
    lines = [f"# {spec.title}: cross-validation report", "", protocol[0].upper() + protocol[1:] + ".", "",
             *cross_validation.summary_table({spec.model.builder: summary}, names), "",
             "| fold | " + " | ".join(names) + " | seconds |", "|---" * (len(names) + 2) + "|"]
    lines += [f"| {i + 1} | " + " | ".join(f"{fold.get(k, float('nan')):.3f}" for k in names) + f" | {seconds:.0f} |"
              for i, (fold, seconds) in enumerate(zip(folds, cv["seconds"]))]
    markdown = ("\n".join(lines) + "\n\n" + to_markdown(pooled, "Out-of-fold predictions, pooled").replace("# ", "## ", 1)
                + "\n" + operating_points.to_markdown(report["operating_points"])
                + "\nMeasured on the pooled out-of-fold predictions, which tau was chosen on as well.\n")
    folder = out / "evaluation"
    files = [(path, "evaluation") for path in write_report_text(report, markdown, folder)]
    files.append((plot_confusion_matrix(np.array(pooled["confusion_matrix"]), pooled["class_names"], folder / "confusion_matrix.png"),
                  "evaluation"))
    say(markdown)
    logged = {**cross_validation.run_metrics({"": summary}), "operating_point_tau": points.tau}
    return Evaluation(report, markdown, logged, {f"cv {k}": summary[k]["mean"] for k in names if k != "log_loss"}, files, {"cv": summary})


def _balanced_point(points, spec, labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """One fold's figures at the `balanced` operating point, named as the held-out run logs them
    without `test_` (`balanced_point_balanced_accuracy`, priority-class recall)."""

    section = operating_points.report_section(points, spec.class_names, labels, probabilities, spec.priority_classes)
    return {name.removeprefix("test_"): value for name, value in operating_points.metrics(section).items() if name.startswith("test_")}
