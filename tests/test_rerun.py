"""`train --from-run RUN_ID` re-runs exactly the spec a run logged, on the same data."""

import os

import pytest
from conftest import run_cli


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerun")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PIPELINES_MODELS_ROOT": str(root / "models")}
    # --no-export: a rerun repeats the logged spec, so neither run exports, logs or registers a
    # model (what this file checks is the spec, the data and the metrics; ~40% of each run's time).
    result = run_cli("train", "digits", "--data", "sample", "--no-export", "--set", "train_limit=300", "--set", "epochs=1",
                     "--set", "model.dropout=0.1", "--set", "filters=8,16", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    return {"env": env, "client": client, "run": run}


def test_the_same_spec_and_data_give_the_same_run(original):
    client, first = original["client"], original["run"]
    result = run_cli("train", "--from-run", first.info.run_id, env=original["env"])
    assert result.returncode == 0, result.stderr[-2000:]
    runs = client.search_runs([first.info.experiment_id], filter_string=f"tags.rerun_of = '{first.info.run_id}'")
    (again,) = runs
    assert again.data.params == first.data.params  # model.filters=8,16 and the rest, exactly
    assert again.data.metrics["test_accuracy"] == pytest.approx(first.data.metrics["test_accuracy"], abs=1e-6)


def test_other_data_is_refused_unless_allowed(original):
    client, first = original["client"], original["run"]
    client.set_tag(first.info.run_id, "data_sha256", "0" * 64)  # as if the data had changed since
    try:
        refused = run_cli("train", "--from-run", first.info.run_id, env=original["env"])
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert "pass --allow-other-data" in refused.stderr.strip().splitlines()[-1]
        mixed = run_cli("train", "digits", "--from-run", first.info.run_id, "--set", "epochs=2", env=original["env"])
        assert mixed.returncode == 2 and "drop --set" in mixed.stderr
    finally:
        client.set_tag(first.info.run_id, "data_sha256", first.data.tags["data_sha256"])


def test_an_unknown_run_is_one_line(original):
    result = run_cli("train", "--from-run", "0123abc", env=original["env"])
    assert result.returncode == 1 and result.stderr.strip() == (
        f"error: no MLflow run '0123abc' in {original['env']['MLFLOW_TRACKING_URI']}; see `make compare` for run ids")
    assert os.environ.get("MLFLOW_TRACKING_URI") != original["env"]["MLFLOW_TRACKING_URI"]


def test_a_spec_logged_before_a_setting_moved_or_existed_is_read_as_it_ran():
    """Heart logged `tabular.cv_folds` before it became `validation.cv_folds`; runs logged before
    `cv_folds`, `views` and `image_size` existed were held out, one view and 28x28, whatever the use
    case's default is now."""
    from pipelines.core.errors import PipelineError
    from pipelines.experiments.rerun import _lookup

    heart = {"tabular": {"cv_folds": 2, "cv_repeats": 1}, "train": {"epochs": 60}}
    assert (_lookup(heart, "validation.cv_folds"), _lookup(heart, "validation.cv_repeats")) == (2, 1)
    cucumber = {"data": {"source": "sample"}, "tabular": None, "model": {"builder": "transfer", "params": {"alpha": 0.25}}}
    assert (_lookup(cucumber, "validation.cv_folds"), _lookup(cucumber, "data.views"), _lookup(cucumber, "model.alpha")) == (0, 1, 0.25)
    assert _lookup({"validation": {"cv_folds": 5}}, "validation.cv_folds") == 5
    skin = {"data": {"source": "full", "image_size": 192}, "input_shape": [192, 192, 3]}
    before = {"data": {"source": "full"}, "input_shape": [28, 28, 3]}  # trained at the spec's own side then
    assert (_lookup(skin, "data.image_size"), _lookup(before, "data.image_size")) == (192, 28)
    # A top-level setting: skin decided by argmax before it had operating points.
    assert (_lookup({"operating_point": "balanced"}, "operating_point"), _lookup(skin, "operating_point")) == ("balanced", "accuracy")
    # Runs logged before the data checks dropped nothing.
    assert _lookup(skin, "checks.drop_test_duplicates") is False and _lookup({"checks": {"drop_test_duplicates": True}},
                                                                                "checks.drop_test_duplicates") is True
    with pytest.raises(PipelineError, match="the logged spec has no 'train.epochs' \\(it predates that setting\\)"):
        _lookup(cucumber, "train.epochs")


def test_a_heart_run_logged_before_the_tabular_task_was_generic_is_read_as_it_ran():
    """Heart's `tabular.train_sites` is `tabular.train_groups` now, and its binary/severity
    `tabular.target` the loader option `data.options.target` (`tabular.target` names a column)."""
    from pipelines.experiments.rerun import _lookup
    from pipelines.tasks import get_task
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    logged = {"data": {"options": {}}, "tabular": {"target": "severity", "train_sites": ["hungarian"]}}
    assert _lookup(logged, "tabular.train_groups") == ["hungarian"] and _lookup(logged, "data.options.target") == "severity"
    now = {"data": {"options": {"target": "binary"}}, "tabular": {"target": "num", "train_groups": ["cleveland"]}}
    assert _lookup(now, "data.options.target") == "binary"
    spec = get_task("tabular_classification").prepare(apply_overrides(get_spec("heart"), {"data.options.target": "severity"}))
    assert spec.class_names == ("0 none", "1", "2", "3", "4 severe")
