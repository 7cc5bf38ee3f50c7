"""Train / validation / test: the official test split is kept as is; validation comes from
the official val split when there is one, else a seeded stratified slice of train."""

from __future__ import annotations

import numpy as np

from pipelines.data.dataset import Dataset
from pipelines.core.errors import PipelineError


def stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices of `y` into (keep, held_out) with `fraction` held out, per class."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(y))
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None  # a singleton class cannot be stratified
    return train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)


def finalize_splits(dataset: Dataset, spec) -> Dataset:
    seed = spec.train.seed
    if spec.data.train_limit and spec.data.train_limit < len(dataset.train):
        fraction = spec.data.train_limit / len(dataset.train)
        keep, _ = stratified_indices(dataset.train.y, 1 - fraction, seed)
        dataset.train = dataset.train.take(np.sort(keep))
    if dataset.val is None and spec.data.val_fraction == 0:
        # The final fit on all of train, once settings are chosen: no validation curves.
        dataset.val = dataset.train.take(np.arange(0))
        dataset.val_origin = "none (val_fraction=0: trained on all of train)"
    elif dataset.val is None:
        if not 0 < spec.data.val_fraction < 1:
            raise PipelineError(f"val_fraction must be at least 0 and below 1, got {spec.data.val_fraction}")
        train_idx, val_idx = stratified_indices(dataset.train.y, spec.data.val_fraction, seed)
        dataset.val = dataset.train.take(np.sort(val_idx))
        dataset.val_origin = f"a seeded stratified {spec.data.val_fraction:.0%} of train"
        dataset.train = dataset.train.take(np.sort(train_idx))
    return dataset
