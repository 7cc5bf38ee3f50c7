import numpy as np

from pipelines.data.loaders import load_dataset
from pipelines.data.splits import stratified_indices
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides


def test_stratified_indices_are_disjoint_and_keep_proportions():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    keep, held = stratified_indices(y, 0.2, seed=0)
    assert len(set(keep) & set(held)) == 0 and len(keep) + len(held) == len(y)
    np.testing.assert_array_equal(np.bincount(y[held]), [20, 10, 6, 4])


def test_validation_is_carved_from_train_and_seeded():
    spec = apply_overrides(get_spec("digits"), {"data.source": "sample"})
    first, second = load_dataset(spec), load_dataset(spec)
    assert len(first.train) == 4500 and len(first.val) == 500 and len(first.test) == 1000
    np.testing.assert_array_equal(first.val.x, second.val.x)
    other = load_dataset(apply_overrides(spec, {"train.seed": 7}))
    assert not np.array_equal(first.val.x, other.val.x)


def test_train_limit_is_stratified():
    spec = apply_overrides(get_spec("digits"), {"data.source": "sample", "data.train_limit": 1000})
    dataset = load_dataset(spec)
    assert len(dataset.train) + len(dataset.val) == 1000
    assert np.bincount(dataset.train.y).min() >= 70


def test_val_fraction_zero_trains_on_all_of_train_and_fits_without_validation():
    from pipelines.training.fit import train

    spec = apply_overrides(get_spec("digits"),
                           {"data.source": "sample", "data.val_fraction": 0, "data.train_limit": 256, "train.epochs": 1})
    dataset = load_dataset(spec)
    assert len(dataset.train) == 256 and len(dataset.val) == 0 and "trained on all of train" in dataset.val_origin
    result = train(spec, dataset)
    assert "loss" in result.history and "val_loss" not in result.history


def test_early_stopping_without_validation_is_refused():
    import pytest

    from pipelines.core.errors import UsageError
    from pipelines.training.fit import train

    spec = apply_overrides(get_spec("digits"),
                           {"data.source": "sample", "data.val_fraction": 0, "data.train_limit": 256, "train.early_stopping_patience": 2})
    with pytest.raises(UsageError, match="early stopping watches val_accuracy, so it needs validation data"):
        train(spec, load_dataset(spec))
