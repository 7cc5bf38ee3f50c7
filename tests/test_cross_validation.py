"""The shared cross-validation protocol, on the real cucumber sample with a scikit-learn model
cheap enough to fit a fold in milliseconds: folds, summaries, per-fold logging on a real MLflow
run, and folds read back instead of fitted again."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core import paths
from pipelines.core.spec import ValidationConfig
from pipelines.evaluation.report import classification_report, headline
from pipelines.training import cross_validation


@pytest.fixture(scope="module")
def cucumbers():
    with np.load(paths.samples_dir("cucumber") / "p1_test.npz") as sample:
        x, y = sample["x"], sample["y"]
    # 8x8 colour thumbnails (mean over 4x4 blocks): features a linear model fits at once.
    return x.reshape(len(x), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(x), -1) / 255.0, y


def nearest_centroid_folds(x, y, calls: list):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid

    def fit_fold(index, train, held):
        from threadpoolctl import threadpool_limits

        calls.append(index)
        centroid = NearestCentroid().fit(x[train], y[train])
        # One BLAS thread: on a busy 2-core machine BLAS's own threads made three such fits take
        # 136 s instead of 1.8 s (the same accuracies), most of this file's time in a full run.
        with threadpool_limits(1):
            logistic = LogisticRegression(max_iter=2000).fit(x[train], y[train])
        predictions = {"centroid": np.eye(9)[centroid.predict(x[held])] * 0.9 + 0.1 / 9,  # a hard answer, as probabilities
                       "logistic": logistic.predict_proba(x[held])}
        return {name: (headline(classification_report(y[held], p, tuple(range(9)))), p) for name, p in predictions.items()}

    return fit_fold


def test_folds_are_stratified_disjoint_and_the_same_for_the_same_seed(cucumbers):
    _, y = cucumbers
    folds = cross_validation.splits(y, 5, 2, seed=42)
    assert len(folds) == 10
    for repeat in (folds[:5], folds[5:]):
        held = np.concatenate([h for _, h in repeat])
        assert sorted(held) == list(range(len(y)))  # every image held out exactly once a repeat
    for train, held in folds:
        assert not set(train) & set(held)
        # Each grade is 1/9 of the sample: each fold holds out its share of every grade, +-1.
        assert np.all(np.abs(np.bincount(y[held], minlength=9) - np.bincount(y, minlength=9) / 5) <= 1)
    again = cross_validation.splits(y, 5, 2, seed=42)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not np.array_equal(folds[0][1], cross_validation.splits(y, 5, 2, seed=7)[0][1])


def test_summary_leaves_out_what_a_fold_could_not_measure():
    summary = cross_validation.summarise([{"accuracy": 0.5, "auc": 0.9}, {"accuracy": 0.7}, {"accuracy": 0.6, "auc": float("nan")}])
    assert summary["accuracy"]["mean"] == pytest.approx(0.6) and summary["accuracy"]["sd"] == pytest.approx(0.1)
    assert summary["auc"]["mean"] == 0.9 and np.isnan(summary["auc"]["sd"])  # one fold measured it: no spread
    assert cross_validation.run_metrics({"": summary}) == {"cv_accuracy_mean": pytest.approx(0.6), "cv_accuracy_sd": pytest.approx(0.1),
                                                           "cv_auc_mean": 0.9}


def test_names_and_the_ranking_metric_of_a_cross_validated_run():
    assert cross_validation.metric_name("", "accuracy", "mean") == "cv_accuracy_mean"
    assert cross_validation.metric_name("keras", "roc_auc", "sd") == "cv_keras_roc_auc_sd"
    assert cross_validation.metric_name("", "accuracy") == "fold_accuracy"
    assert cross_validation.ranking_metric("test_balanced_accuracy") == "cv_balanced_accuracy_mean"
    assert cross_validation.ranking_metric("test_balanced_point_balanced_accuracy") == "cv_balanced_point_balanced_accuracy_mean"
    assert cross_validation.ranking_metric("cv_keras_roc_auc_mean") == "cv_keras_roc_auc_mean"


def test_run_logs_each_fold_and_reads_back_finished_folds(cucumbers, isolated):
    import mlflow

    from pipelines.tracking.tracker import Tracker

    x, y = cucumbers
    validation = ValidationConfig(cv_folds=3, cv_repeats=2)
    calls = []
    cache = isolated / "folds"
    with Tracker("cv-test") as tracker:
        first = cross_validation.run(validation, 42, y, nearest_centroid_folds(x, y, calls), tracker, cache=cache)
    assert calls == list(range(6)) and sorted(p.name for p in cache.iterdir()) == [f"fold-{i}.npz" for i in range(6)]
    assert set(first["summary"]) == {"centroid", "logistic"}
    accuracies = [fold["accuracy"] for fold in first["folds"]["logistic"]]
    assert first["summary"]["logistic"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert first["summary"]["logistic"]["accuracy"]["sd"] == pytest.approx(np.std(accuracies, ddof=1))
    assert first["summary"]["logistic"]["accuracy"]["mean"] > 2 / 9  # well above chance (1/9) on real pixels
    # Pooled out-of-fold predictions: every image twice (two repeats), in fold order.
    assert sorted(first["out_of_fold"]["index"]) == sorted(list(range(len(y))) * 2)
    np.testing.assert_array_equal(first["out_of_fold"]["y"], y[first["out_of_fold"]["index"]])

    client = mlflow.MlflowClient()
    history = client.get_metric_history(tracker.run_id, "fold_logistic_accuracy")
    assert [(m.step, m.value) for m in history] == [(i, pytest.approx(a)) for i, a in enumerate(accuracies)]
    assert len(client.get_metric_history(tracker.run_id, "fold_seconds")) == 6

    # The same protocol again (a run killed after its folds, started again): nothing is fitted,
    # nothing logged twice, the figures are the same.
    calls.clear()
    with Tracker("cv-test", resume_run_id=tracker.run_id) as again:
        second = cross_validation.run(validation, 42, y, nearest_centroid_folds(x, y, calls), again, cache=cache)
    assert calls == []
    assert second["summary"] == first["summary"]
    np.testing.assert_array_equal(second["out_of_fold"]["logistic"], first["out_of_fold"]["logistic"])
    assert len(client.get_metric_history(tracker.run_id, "fold_logistic_accuracy")) == 6


def test_summary_table():
    summary = {"accuracy": {"mean": 0.5, "sd": 0.05}}
    lines = cross_validation.summary_table({"transfer": summary, "small_cnn": {}}, ["accuracy"], {"seconds": {"transfer": 12}})
    assert lines == ["| model | accuracy | seconds |", "|---|---|---|", "| transfer | 0.500 +- 0.050 | 12 |", "| small_cnn | - |  |"]
