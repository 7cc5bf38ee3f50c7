"""Kinds of task, registered by `spec.task`: what differs between them is the validation protocol.

An image task fits once and evaluates on a held-out test split; a small table is judged by
repeated cross-validation, a baseline on the same folds and external sites. Everything around
the protocol (tracking, provenance, checkpoint, report, model card, export, verification,
registration, the printed summary) is the run envelope, `pipelines.pipeline.run_train`, and the
same for every task. Adding a kind of task is one module here and one entry in `TASKS`.

Task modules import TensorFlow and scikit-learn inside their methods: the registry (and the
keys a task leaves unread, which `--set` refuses) is known without them.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.errors import UsageError

# spec.task -> "module:class"
TASKS = {
    "image_classification": "pipelines.tasks.image_classification:ImageClassification",
    "tabular_classification": "pipelines.tasks.tabular_classification:TabularClassification",
}


@dataclass
class Loaded:
    """A task's data with its provenance: what every run logs, whatever the task."""

    data: Any
    origin: str  # "sample", "full", a folder
    sha256: str  # of the data files, as one digest
    files: dict  # file name -> sha256
    sizes: dict  # logged as params, e.g. train_examples
    description: str  # one line for the console
    chance_labels: Any = None  # labels that set the chance level of the ranking metric


@dataclass
class Fitted:
    """The final model (the serving model: raw inputs in, probabilities out) and how it got there."""

    model: Any
    history: dict = field(default_factory=dict)
    epochs_run: int = 0
    fit_seconds: float = 0.0
    examples_seen: int = 0
    extra: dict = field(default_factory=dict)  # task-specific: the training/serving pair, CV results


@dataclass
class Evaluation:
    """What the task measured: logged as metrics, written as report.{json,md}, printed."""

    report: dict
    markdown: str
    metrics: dict  # MLflow metric name -> value (`test_*`, `cv_*`)
    headline: dict  # the printed summary line: "test accuracy" -> value
    files: list = field(default_factory=list)  # (path, artifact folder) of the figures
    summary: dict = field(default_factory=dict)  # merged into what `run_train` returns


class Task(ABC):
    """The protocol of one kind of task; `pipelines.pipeline.run_train` is the run around it.

    Every decision that differs by kind of task is a method or attribute here: nothing outside
    `tasks/` asks which task it runs."""

    # Spec keys (flattened, e.g. `train.precision`) this task never reads: `--set` refuses them
    # like unknown keys, rather than accept a value that would silently change nothing.
    unused_keys: frozenset = frozenset()
    # Whether `fit` keeps a per-epoch backup that the same command resumes.
    resumable: bool = False

    # What `compare` shows for runs of this task, first the ranking metric's kind: MLflow metric names.
    headline_metrics: tuple = ()

    def check(self, spec) -> None:
        """Rules of this kind of task across spec keys: a one-line UsageError, before any data loads."""
        return None

    def prepare(self, spec):
        """The spec as the task runs it (e.g. class names that follow from a setting)."""
        return spec

    # --- choosing settings (`tune`, `sweep`) without looking at the test data ------------------

    def selection_metric(self, spec) -> str:
        """The MLflow metric that settings are chosen by: the ranking metric measured on data the
        test split never enters (validation data, or the cross-validated mean). Choosing by the
        test split would leak it into every figure reported on it. `spec` is prepared."""
        return spec.ranking_metric

    def validation_metrics(self, spec, loaded: Loaded, fitted: Fitted) -> dict:
        """The selection metrics of a fitted model on validation data (`validation_*`), or {} when
        the task's own evaluation is already on held-out folds (cross-validation)."""
        return {}

    def for_selection(self, spec):
        """The spec as one trial of a search runs it: nothing that scores test-like data."""
        return spec

    @abstractmethod
    def load(self, spec) -> Loaded:
        raise NotImplementedError

    @abstractmethod
    def fit(self, spec, loaded: Loaded, tracker, resume) -> Fitted:
        raise NotImplementedError

    @abstractmethod
    def evaluate(self, spec, loaded: Loaded, fitted: Fitted, tracker, out) -> Evaluation:
        raise NotImplementedError

    def diagnose(self, spec, loaded: Loaded, fitted: Fitted, tracker, out) -> None:
        """Optional diagnostics (Grad-CAM); a failure here is a warning, never a lost model."""
        return None

    def metadata(self, spec, loaded: Loaded, fitted: Fitted, evaluation: Evaluation) -> dict:
        """Task-specific fields of `metadata.json` (the envelope writes the common ones)."""
        return {}

    @abstractmethod
    def check_splits(self, spec, loaded: Loaded) -> dict:
        """{split name: Split} for the data checks (`pipelines.data.checks`): `train`, `val`
        and `folds` are the training side, any other name is held out."""
        raise NotImplementedError

    @abstractmethod
    def drop_examples(self, spec, loaded: Loaded, to_drop: dict) -> Loaded:
        """`loaded` without the examples `to_drop` names ({split name: indices in that split})."""
        raise NotImplementedError

    @abstractmethod
    def model_card(self, spec, metadata: dict, evaluation: Evaluation) -> str:
        raise NotImplementedError

    @abstractmethod
    def export_inputs(self, spec, loaded: Loaded) -> tuple:
        """(inputs that verify the export, a few inputs that describe the served contract)."""
        raise NotImplementedError


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UsageError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    module_name, _, class_name = TASKS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()
