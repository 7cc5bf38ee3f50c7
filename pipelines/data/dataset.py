"""The in-memory data set every pipeline step after loading works on, and the checks that
keep a malformed data folder from reaching training as anything but a one-line error."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.core.errors import PipelineError


@dataclass
class Split:
    """Inputs and integer labels. `x` is a uint8 array for images, a DataFrame for tables."""

    x: Any
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, indices: np.ndarray) -> Split:
        x = self.x.iloc[indices].reset_index(drop=True) if hasattr(self.x, "iloc") else self.x[indices]
        return Split(x, self.y[indices])


@dataclass
class Dataset:
    train: Split
    test: Split
    class_names: tuple[str, ...]
    origin: str  # how it was found: sample, data_dir, system, cache, download
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    val: Split | None = None  # an official validation split, when the data set has one
    val_origin: str = "official"  # or "carved from train" (set by pipelines.data.splits)
    # Files a loader passed over, for the run to log: unreadable images it was told to skip
    # ("path: reason", `on_corrupt = "skip"`), and how many files were not images at all.
    skipped: list[str] = field(default_factory=list)
    ignored: int = 0

    def describe(self) -> str:
        """One line for the console: where the data came from, split sizes, content hash."""
        val = len(self.val) if self.val is not None else 0
        return f"{self.origin} data: train {len(self.train)}, val {val}, test {len(self.test)} (sha256 {self.sha256[:12]})"

    def check_images(self, input_shape: tuple, files_hint: str) -> None:
        """Fail early, naming the data, if arrays do not match what the spec serves.

        Images must be uint8 pixels 0-255. Float images (often scaled to [0, 1]) are refused,
        never rescaled: guessing the scale wrongly would train on near-black images without a
        word. An empty split is refused; a class with no training examples is a warning (a
        folder may hold a subset of the classes on purpose), since the model cannot learn it.
        """
        for name, split in (("train", self.train), ("test", self.test), ("val", self.val)):
            if split is None:
                continue
            expected = f"uint8 pixels 0-255 of shape (N, {', '.join(map(str, input_shape))})"
            if split.x.dtype != np.uint8 or tuple(split.x.shape[1:]) != tuple(input_shape):
                raise PipelineError(f"{files_hint}: {name} images are {split.x.dtype} of shape {split.x.shape}, expected {expected}")
            if len(split.x) != len(split.y):
                raise PipelineError(f"{files_hint}: {name} has {len(split.x)} images but {len(split.y)} labels")
            if len(split.y) == 0:
                raise PipelineError(f"{files_hint}: the {name} split is empty")
            check_label_range(split.y, len(self.class_names), f"{files_hint}: {name}")
        counts = np.bincount(self.train.y, minlength=len(self.class_names))
        absent = [self.class_names[i] for i in np.flatnonzero(counts == 0)]
        if absent:
            print(f"warning: {files_hint}: no training examples of class(es) {', '.join(absent)}; "
                  f"the model cannot learn to predict them", file=sys.stderr)

    @property
    def sha256(self) -> str:
        """One digest naming exactly which files were used (order-independent)."""
        import hashlib

        joined = "\n".join(f"{name} {digest}" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()


def check_label_range(y: np.ndarray, num_classes: int, where: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise PipelineError(f"{where} labels span {y.min()}..{y.max()}, expected 0..{num_classes - 1}")


def checked_split(x: np.ndarray, y: np.ndarray, where: str) -> Split:
    """A Split of uint8 images and int64 labels, checked where the file is still known.

    Nothing is cast that could hide a problem: float images (often in [0, 1]) are refused, not
    rescaled; labels must be whole numbers (2.7 would silently become 2), one per image, as (N,)
    or MedMNIST's (N, 1). The image shape is checked against the spec later (`check_images`)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != np.uint8:
        scale = ""
        if np.issubdtype(x.dtype, np.floating) and x.size and np.nanmin(x) >= 0 and np.nanmax(x) <= 1:
            scale = " in [0, 1] (not rescaled here: multiply by 255 and round)"
        raise PipelineError(f"{where}: images are {x.dtype}{scale}; expected uint8 pixels 0-255")
    if x.ndim not in (3, 4):
        raise PipelineError(f"{where}: images have shape {x.shape} (rank {x.ndim}); expected (N, height, width) "
                            f"or (N, height, width, channels)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise PipelineError(f"{where}: labels have shape {y.shape}; expected (N,) or (N, 1) class indices")
    whole = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    if not whole:
        raise PipelineError(f"{where}: labels are {y.dtype} with non-integer values; expected integer class indices")
    if len(x) != len(y):
        raise PipelineError(f"{where}: {len(x)} images but {len(y)} labels")
    return Split(x, y.astype(np.int64))
