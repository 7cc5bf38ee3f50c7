"""Sweeps: grid parsing and validation (no training), then one real 2-point sweep of the digits
sample into a real MLflow store: a parent with two FINISHED nested children, and the same
sweep again training nothing."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import REPO, run_cli

from pipelines.core.errors import UsageError
from pipelines.experiments.sweep import Grid, split_values, sweep_id
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

TINY = {"data.source": "sample", "train.epochs": 1, "data.train_limit": 300}
GRID = "model.dropout=0.2,0.4"


def tiny_digits():
    # No export: the sweep's logic is the subject here; export is `train`'s, tested with it.
    return apply_overrides(get_spec("digits"), {**TINY, "export.enabled": False})


# --- the grid, no training ---------------------------------------------------------------


def test_grid_points_are_every_combination_resolved_like_set():
    grid = Grid.parse(get_spec("skin"), "class_weights=0,0.5 model.dropout=0.2,0.4")
    points = grid.points()
    assert [p.label for p in points] == ["class_weights=0.0 dropout=0.2", "class_weights=0.0 dropout=0.4",
                                         "class_weights=0.5 dropout=0.2", "class_weights=0.5 dropout=0.4"]
    assert points[3].spec.train.class_weights == 0.5 and points[3].spec.model.params["dropout"] == 0.4
    assert grid.keys() == ["model.dropout", "train.class_weights"]


def test_tuple_values_go_in_brackets_and_equal_values_are_one_point():
    assert split_values("[32,64,128],[48,96,192]") == ["32,64,128", "48,96,192"]
    points = Grid.parse(get_spec("skin"), "model.stages=[32,64,128],[48,96,192] epochs=2,2").points()
    assert [p.spec.model.params["stages"] for p in points] == [(32, 64, 128), (48, 96, 192)]
    assert points[0].label == "stages=[32,64,128] epochs=2"


def test_a_builder_change_applies_before_its_params():
    points = Grid.parse(get_spec("digits"), "model.stages=[16,32] model.builder=residual_cnn").points()
    assert points[0].spec.model.builder == "residual_cnn" and points[0].spec.model.params["stages"] == (16, 32)


@pytest.mark.parametrize("grid, message", [
    ("epohcs=1,2", "unknown --set key 'epohcs'"),
    ("class_weights=0,lots", "expected a float value"),
    ("epochs=1 train.epochs=2", "names one setting twice"),
    ("epochs=1 epochs=2", "names a key twice"),
    ("model.stages=[32,64", "'[' without ']'"),
    ("dropout", "expects KEY=V1,V2,..."),
    ("", "--grid is empty"),
])
def test_bad_grids_fail_before_training(grid, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Grid.parse(get_spec("skin"), grid)


def test_sweep_identity_is_base_settings_and_keys():
    spec = tiny_digits()
    keys = Grid.parse(spec, GRID).keys()
    assert sweep_id(spec, keys) == sweep_id(spec, Grid.parse(spec, "dropout=0.1,0.2,0.3").keys())
    assert sweep_id(spec, keys) != sweep_id(apply_overrides(spec, {"train.epochs": 2}), keys)


def test_cli_typo_is_one_line_exit_2():
    result = run_cli("sweep", "digits", "--data", "sample", "--grid", "epohcs=1,2", timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --grid point epohcs=1: unknown --set key 'epohcs'")


def test_make_target_passes_the_grid_and_options():
    result = subprocess.run(["make", "-n", "sweep-skin", "SWEEP=class_weights=0,0.5 model.stages=[32,64],[48,96]",
                             "DATA=sample", "EPOCHS=2"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ("-m pipelines sweep skin --grid 'class_weights=0,0.5 model.stages=[32,64],[48,96]' --data sample "
            "--set epochs=2") in " ".join(result.stdout.split())


# --- a real sweep --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Run the 2-point sweep once for the module, in its own store."""
    from pipelines.experiments.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("PIPELINES_MODELS_ROOT", str(root / "models"))
        result = run_sweep(tiny_digits(), GRID, out_dir=root / "report")
        yield {"root": root, "result": result}


def children(client, parent_run_id):
    experiment = client.get_experiment_by_name("digits")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def test_each_point_is_a_finished_child_of_one_parent(swept):
    import mlflow

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent = client.get_run(swept["result"]["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["verb"] == "sweep"
    assert parent.data.tags["sweep_grid"] == GRID
    runs = children(client, parent.info.run_id)
    assert sorted(r.data.params["model.dropout"] for r in runs) == ["0.2", "0.4"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.info.run_name for r in runs} == {"dropout=0.2", "dropout=0.4"}
    assert all(r.data.tags["sweep_id"] == swept["result"]["sweep_id"] and "test_accuracy" in r.data.metrics for r in runs)
    # The children's comparison: printed, written, and on the parent run.
    table = swept["result"]["comparison"].table
    assert len(table) == 2 and table["best"].sum() == 1 and swept["result"]["comparison"].params == ["model.dropout"]
    # Ranked on validation data, not on the test split the points would otherwise be chosen by.
    assert set(table["ranking_metric"]) == {"validation_accuracy"} and all("validation_accuracy" in r.data.metrics for r in runs)
    assert (swept["root"] / "report" / "comparison.csv").is_file()
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")} == {
        "comparison/comparison.csv", "comparison/comparison.md", "comparison/comparison.png"}


def test_the_same_sweep_again_trains_nothing(swept, capsys):
    """Run for real: a finished point is skipped, so no child run is added."""
    import mlflow

    from pipelines.experiments.sweep import run_sweep

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent_id = swept["result"]["parent_run_id"]
    before = {run.info.run_id for run in children(client, parent_id)}
    again = run_sweep(tiny_digits(), GRID, out_dir=swept["root"] / "again")
    assert again["parent_run_id"] == parent_id
    assert {run.info.run_id for run in children(client, parent_id)} == before
    assert capsys.readouterr().out.count("skipped") == 2


def test_an_unfinished_point_is_trained_again(swept):
    """A child that failed (or was killed past its backup) is not finished: the rerun trains
    that point only, for real, as a new child of the same parent."""
    import mlflow

    from pipelines.experiments.sweep import run_sweep

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent_id = swept["result"]["parent_run_id"]
    failed = next(r for r in children(client, parent_id) if r.data.params["model.dropout"] == "0.4")
    client.set_terminated(failed.info.run_id, "FAILED")
    before = {run.info.run_id for run in children(client, parent_id)}
    again = run_sweep(tiny_digits(), GRID, out_dir=swept["root"] / "again")
    assert again["parent_run_id"] == parent_id
    (new,) = [run for run in children(client, parent_id) if run.info.run_id not in before]
    assert new.info.status == "FINISHED" and new.data.params["model.dropout"] == "0.4"
    assert new.info.run_name == "dropout=0.4" and new.data.tags["sweep_id"] == swept["result"]["sweep_id"]


def test_an_interrupted_child_resumes_as_the_same_child(isolated):
    """What `train`'s resume does inside a sweep: the backup names the interrupted child's run,
    and reopening it under the reopened parent keeps it that parent's child."""
    import mlflow

    from pipelines.tracking.tracker import Tracker

    with Tracker("digits", run_name="parent") as parent:
        with pytest.raises(KeyboardInterrupt):
            with Tracker("digits", run_name="child", tags={"sweep_point": "p"}) as child:
                raise KeyboardInterrupt
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert client.get_run(child.run_id).info.status == "KILLED"
    with Tracker("digits", resume_run_id=parent.run_id):
        with Tracker("digits", resume_run_id=child.run_id, tags={"sweep_point": "p"}):
            pass
    resumed = client.get_run(child.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["mlflow.parentRunId"] == parent.run_id
