"""Preprocessing inside the tabular model: fitted on the training rows only."""

import numpy as np
import pandas as pd
import pytest

from pipelines.core import paths
from pipelines.data.loaders.uci_heart_format import CATEGORICAL, NUMERIC, read_folder
from pipelines.modeling.builders.tabular_mlp import MISSING_CODE, build_tabular_mlp


def frames():
    sites, _ = read_folder(paths.samples_dir("heart"))
    return sites["cleveland"], pd.concat(list(sites.values()), ignore_index=True)


def test_statistics_come_from_the_training_rows_only():
    """Would fail if normalisation, imputation or lookups were adapted on all rows."""
    cleveland, everything = frames()
    train = cleveland[cleveland["age"] < 55]  # a training fold whose statistics differ from the whole
    model = build_tabular_mlp(train, NUMERIC, CATEGORICAL, 2)
    normalise = model.get_layer("age_normalise")
    assert float(np.ravel(normalise.mean)[0]) == np.float32(train["age"].mean())
    assert abs(float(np.ravel(normalise.mean)[0]) - everything["age"].mean()) > 1
    impute = model.get_layer("chol_impute")
    assert impute.fill_value == np.float32(np.nanmean(train["chol"].to_numpy(np.float32)))
    # thal 6 (fixed defect) exists in the full data; a fold without it must not know it.
    no_thal6 = train[train["thal"] != 6]
    vocabulary = build_tabular_mlp(no_thal6, NUMERIC, CATEGORICAL, 2).get_layer("thal_lookup").get_vocabulary()
    assert 6 not in vocabulary and 3 in vocabulary


def test_missing_values_and_unknown_categories_give_finite_probabilities():
    cleveland, _ = frames()
    model = build_tabular_mlp(cleveland, NUMERIC, CATEGORICAL, 2)
    row = {c: np.array([np.nan], np.float32) for c in NUMERIC + CATEGORICAL}
    row["cp"] = np.array([9.0], np.float32)  # a code no site uses
    probability = model.predict_on_batch(row)
    assert probability.shape == (1, 2) and np.isfinite(probability).all() and probability.sum() == pytest.approx(1.0)
    assert MISSING_CODE not in (-1, 0, 1, 2, 3, 4, 5, 6, 7)
