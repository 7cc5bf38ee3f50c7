"""`compare` against a real MLflow store: one real digits run (exported, registered), plus runs
written with the MLflow client where a rule needs a case a tiny run cannot produce (another
data set, a failed run with the best score). Checks the table, the files and the errors."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import run_cli, trained_once

from pipelines.core.errors import PipelineError, UsageError

TINY = {"data.source": "sample", "train.epochs": 1, "data.train_limit": 300}
FULL_SHA = "f" * 64


def _add_run(client, experiment_id: str, like, name: str, metrics: dict, params: dict | None = None,
             tags: dict | None = None, status: str = "FINISHED") -> str:
    """A training run shaped like `like` (same params and tags) with other values."""
    run = client.create_run(experiment_id, run_name=name, tags={**like.data.tags, "mlflow.runName": name, **(tags or {})})
    for key, value in {**like.data.params, **(params or {})}.items():
        client.log_param(run.info.run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real tiny digits run, then: a better run on the same sample with other dropout, a failed
    run that scored highest (never best), and a run on another data set (ranked apart)."""
    import mlflow

    with trained_once(tmp_path_factory, "digits", TINY) as trained:
        client = mlflow.MlflowClient(trained["env"]["MLFLOW_TRACKING_URI"])
        real = client.get_run(trained["summary"]["run_id"])
        experiment = real.info.experiment_id
        score = real.data.metrics["test_accuracy"]
        ids = {
            "real": real.info.run_id,
            "better": _add_run(client, experiment, real, "better", {"test_accuracy": min(score + 0.05, 1.0), "fit_seconds": 3.0},
                               params={"model.dropout": "0.1"}),
            "failed": _add_run(client, experiment, real, "failed", {"test_accuracy": 1.0}, status="FAILED"),
            "full": _add_run(client, experiment, real, "on full data", {"test_accuracy": score - 0.1},
                             tags={"data_source": "full", "data_sha256": FULL_SHA}),
        }
        client.set_registered_model_alias("digits", "champion", trained["summary"]["registered_version"])
        yield {**trained, "ids": ids, "client": client, "score": score}


def row(table, run_id):
    return table.set_index("run_id").loc[run_id]


def test_best_finished_run_is_marked_per_data_set(store):
    from pipelines.experiments.compare import build_comparison

    table = build_comparison(["digits"]).table
    ids = store["ids"]
    assert len(table) == 4
    assert row(table, ids["better"])["best"] and row(table, ids["better"])["rank"] == 1
    assert row(table, ids["real"])["rank"] == 2
    # The highest score, but the run failed: listed, not ranked.
    assert not row(table, ids["failed"])["best"] and pd.isna(row(table, ids["failed"])["rank"])
    # Lower than both sample runs, yet the best of its own data set: never ranked against them.
    assert row(table, ids["full"])["best"] and row(table, ids["full"])["rank"] == 1
    assert row(table, ids["full"])["data"] == "full " + FULL_SHA[:12]
    assert row(table, ids["real"])["data"].startswith("sample ")


def test_a_cross_validated_run_is_ranked_apart_by_its_cv_mean(store):
    """Same use case, same data, but scored by cross-validation: ranked by its own tag's metric,
    never against the held-out runs (0.2 would rank last among them; alone it is best)."""
    from pipelines.experiments.compare import build_comparison, render_terminal

    client, real = store["client"], store["client"].get_run(store["ids"]["real"])
    cv = _add_run(client, real.info.experiment_id, real, "cross-validated", {"cv_accuracy_mean": 0.2, "cv_balanced_accuracy_mean": 0.19},
                  params={"validation.cv_folds": "5"}, tags={"ranking_metric": "cv_accuracy_mean"})
    try:
        comparison = build_comparison(["digits"])
        table = comparison.table
        assert row(table, cv)["ranking_metric"] == "cv_accuracy_mean" and row(table, cv)["score"] == 0.2
        assert row(table, cv)["best"] and row(table, store["ids"]["better"])["best"]  # one best per (data, metric)
        assert row(table, store["ids"]["real"])["ranking_metric"] == "test_accuracy"  # an older run: no tag, the spec's
        assert row(table, cv)["cv_balanced_accuracy_mean"] == 0.19 and pd.isna(row(table, cv)["test_balanced_accuracy"])
        text = render_terminal(comparison)
        assert "ranked by cv_accuracy_mean" in text and "ranked by test_accuracy and by cv_accuracy_mean" in text
    finally:
        client.delete_run(cv)


def test_only_differing_params_are_columns(store):
    from pipelines.experiments.compare import build_comparison

    comparison = build_comparison(["digits"])
    assert comparison.params == ["model.dropout"]  # train.epochs, model.filters, ... are the same everywhere
    assert row(comparison.table, store["ids"]["better"])["model.dropout"] == "0.1"
    assert row(comparison.table, store["ids"]["real"])["builder"] == "small_cnn"


def test_registry_version_and_aliases_are_shown(store):
    from pipelines.experiments.compare import build_comparison

    table = build_comparison(["digits"]).table
    real = row(table, store["ids"]["real"])
    assert real["version"] == store["summary"]["registered_version"] and real["aliases"] == "champion"
    assert row(table, store["ids"]["better"])["version"] == ""  # never exported


def test_terminal_table_fits_100_columns_and_says_data_sets_are_apart(store):
    from pipelines.experiments.compare import build_comparison, render_terminal

    text = render_terminal(build_comparison(["digits"]))
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "digits: runs on 2 data sets" in text and "ranked separately, never against each other" in text
    assert text.count("ranked by test_accuracy") == 2  # one table per data set
    best_lines = [line for line in text.splitlines() if line.startswith("*")]
    assert len(best_lines) == 2 and any(store["ids"]["better"][:8] in line for line in best_lines)


def test_files_csv_markdown_png(store, tmp_path):
    from pipelines.experiments.compare import run_compare

    run_compare(["digits"], out_dir=tmp_path)
    csv = pd.read_csv(tmp_path / "comparison.csv", dtype={"version": str})
    assert set(csv["run_id"]) == set(store["ids"].values())
    assert {"usecase", "data", "rank", "best", "run_name", "started", "status", "builder", "model.dropout",
            "ranking_metric", "score", "test_balanced_accuracy", "fit_seconds", "examples_per_second",
            "version", "aliases", "data_sha256"} <= set(csv.columns)
    real = csv.set_index("run_id").loc[store["ids"]["real"]]
    assert real["score"] == pytest.approx(store["score"]) and real["aliases"] == "champion"
    assert csv["best"].sum() == 2
    markdown = (tmp_path / "comparison.md").read_text()
    assert "## digits: sample " in markdown and "## digits: full " + FULL_SHA[:12] in markdown
    assert "| best | run | id |" in markdown and store["ids"]["real"][:8] in markdown
    png = (tmp_path / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_last_and_metric_options(store):
    from pipelines.experiments.compare import build_comparison

    assert len(build_comparison(["digits"], last=1).table) == 1
    table = build_comparison(["digits"], metric="test_balanced_accuracy").table
    assert set(table["ranking_metric"]) == {"test_balanced_accuracy"}
    assert row(table, store["ids"]["real"])["best"]  # the only run that logged it


def test_log_writes_the_files_to_the_comparisons_experiment(store, tmp_path):
    from pipelines.experiments.compare import run_compare

    run_compare(["digits"], out_dir=tmp_path, log=True)
    client = store["client"]
    experiment = client.get_experiment_by_name("comparisons")
    [run] = client.search_runs([experiment.experiment_id])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"comparison.csv", "comparison.md", "comparison.png"}
    assert run.data.tags["verb"] == "compare"


def test_errors_are_one_line(store, tmp_path, monkeypatch):
    from pipelines.experiments.compare import build_comparison

    with pytest.raises(UsageError, match="unknown metric 'test_nope'"):
        build_comparison(["digits"], metric="test_nope")
    with pytest.raises(UsageError, match="unknown use case 'cats'"):
        build_comparison(["cats"])
    with pytest.raises(PipelineError, match="no training runs of skin"):
        build_comparison(["skin"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(PipelineError, match="no MLflow runs yet"):
        build_comparison()
    assert not (tmp_path / "empty.db").exists()  # asking did not create a store


def test_cli(store, tmp_path):
    result = run_cli("compare", "digits", "--out", str(tmp_path), env=store["env"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ranked by test_accuracy" in result.stdout and (tmp_path / "comparison.csv").is_file()
    result = run_cli("compare", "digits", "--metric", "test_nope", env=store["env"], timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown metric") and result.stderr.count("\n") == 1


def test_heart_is_ranked_by_its_cross_validated_auc(store):
    """A tabular use case reports its task's headline metrics, not an image one's."""
    from pipelines.experiments.compare import build_comparison

    client = store["client"]
    real = client.get_run(store["ids"]["real"])
    experiment = client.create_experiment("heart")
    metrics = {"cv_keras_roc_auc_mean": 0.92, "cv_keras_accuracy_mean": 0.85, "cv_baseline_roc_auc_mean": 0.91,
               "fit_seconds": 200.0}
    heart = _add_run(client, experiment, real, "heart", metrics, tags={"usecase": "heart", "ranking_metric": "cv_keras_roc_auc_mean"})
    comparison = build_comparison(["heart", "digits"])
    table = comparison.table
    assert list(dict.fromkeys(table["usecase"])) == ["heart", "digits"]  # in the order asked
    assert row(table, heart)["score"] == 0.92 and row(table, heart)["ranking_metric"] == "cv_keras_roc_auc_mean"
    assert row(table, heart)["cv_keras_accuracy_mean"] == 0.85 and row(table, heart)["fit_seconds"] == 200.0
    assert pd.isna(row(table, heart)["test_balanced_accuracy"])  # not a heart metric
    assert pd.isna(row(table, store["ids"]["real"])["cv_keras_accuracy_mean"])


def test_chart_labels_never_overlap_and_bounded_metrics_end_at_1():
    """The demo's chart had legends on value labels in three of five panels and an axis to 1.2:
    here every text and legend of a chart with near-1 scores, two data sets and a killed run is
    drawn and no two of them overlap."""
    import itertools

    from pipelines.experiments.compare import Comparison, comparison_figure

    rows = [("digits", "sample c3f4e979", "test_accuracy", "demo", 0.979, True, "champion", "FINISHED"),
            ("digits", "sample c3f4e979", "test_accuracy", "class_weights=0.5 dropout=0.2", 0.961, False, "", "FINISHED"),
            ("digits", "full 0f0f0f0f0f0f", "test_accuracy", "full data", 0.9921, True, "", "FINISHED"),
            ("clothing", "sample 81b2aa10", "test_accuracy", "demo", 0.801, True, "champion", "FINISHED"),
            ("skin", "sample 5d6e7f80", "test_balanced_point_balanced_accuracy", "demo", 0.4213, True, "champion", "FINISHED"),
            ("skin", "sample 5d6e7f80", "test_balanced_point_balanced_accuracy", "killed", None, False, "", "KILLED"),
            ("heart", "cleveland 0a9b8c7d", "cv_keras_roc_auc_mean", "demo", 0.9012, True, "champion", "FINISHED"),
            ("cucumber", "sample 11e5715b", "cv_accuracy_mean", "demo", 0.3204, True, "champion", "FINISHED")]
    table = pd.DataFrame([dict(usecase=u, data=d, ranking_metric=m, run_name=n, run_id=f"{i:032x}", score=s, best=b,
                               aliases=a, status=st) for i, (u, d, m, n, s, b, a, st) in enumerate(rows)])
    figure = comparison_figure(Comparison(table, [], [], "sqlite:///test"))
    renderer = figure.canvas.get_renderer()
    boxes = []
    for axis in figure.axes:
        # The right-hand twin of a panel (the values) shares its x axis: its x labels are the panel's.
        texts = [axis.title, *axis.get_yticklabels(), *(axis.get_xticklabels() if axis.get_title() else [])]
        boxes += [(text.get_text(), text.get_window_extent(renderer)) for text in texts if text.get_text() and text.get_visible()]
        if axis.get_legend() is not None:
            boxes.append(("legend", axis.get_legend().get_window_extent(renderer)))
    for (first, a), (second, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"{first!r} overlaps {second!r}"
    assert {"0.9790 best @champion", "0.9921 best", "no score KILLED, not ranked"} <= {text for text, _ in boxes}
    panels = [axis for axis in figure.axes if axis.get_title()]
    assert len(panels) == 5 and all(axis.get_xlim() == (0.0, 1.0) for axis in panels)
    _pyplot_close(figure)


def _pyplot_close(figure):
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_a_long_float_param_shows_its_first_digits_and_a_long_text_is_cut():
    from pipelines.experiments.compare import _trim

    assert _trim("0.17677245162011", 14) == "0.1768"  # a tune trial's dropout, as MLflow logged it
    assert _trim("0.003", 14) == "0.003"
    assert _trim("/home/user/data/skin/train", 14) == "/home/user/da~"
