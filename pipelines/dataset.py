"""The in-memory data set every pipeline step after loading works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.errors import PipelineError


@dataclass
class Split:
    """Inputs and integer labels. `x` is a uint8 array for images, a DataFrame for tables."""

    x: Any
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, indices: np.ndarray) -> "Split":
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
    val_origin: str = "official"  # or "carved from train" (set by pipelines.splits)

    def check_images(self, input_shape: tuple, files_hint: str) -> None:
        """Fail early, naming the data, if arrays do not match what the spec serves."""
        for name, split in (("train", self.train), ("test", self.test), ("val", self.val)):
            if split is None:
                continue
            if split.x.dtype != np.uint8 or tuple(split.x.shape[1:]) != tuple(input_shape):
                raise PipelineError(
                    f"{files_hint}: {name} images are {split.x.dtype} {tuple(split.x.shape[1:])}, "
                    f"expected uint8 {tuple(input_shape)}"
                )
            if len(split.x) != len(split.y):
                raise PipelineError(f"{files_hint}: {name} has {len(split.x)} images but {len(split.y)} labels")
            if len(split.y) and (split.y.min() < 0 or split.y.max() >= len(self.class_names)):
                raise PipelineError(
                    f"{files_hint}: {name} labels span {split.y.min()}..{split.y.max()}, expected 0..{len(self.class_names) - 1}"
                )

    @property
    def sha256(self) -> str:
        """One digest naming exactly which files were used (order-independent)."""
        import hashlib

        joined = "\n".join(f"{name} {digest}" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(joined.encode()).hexdigest()
