"""Sweeps: grid parsing and validation (no training), then one real 2-point sweep of the digits
sample into a real MLflow store and Optuna study: a grid study whose trials are the points,
each once, a parent run with the points and the best point's test run as children, and the
same sweep again training nothing."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import REPO, run_cli

from pipelines.core.errors import UsageError
from pipelines.experiments.sweep import Grid
from pipelines.experiments.tune import default_study_name, split_values
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


def test_the_grid_is_a_space_of_choices_for_the_grid_sampler():
    grid = Grid.parse(get_spec("skin"), "class_weights=0,0.5,0.50 model.stages=[32,64,128],[48,96,192]")
    space = grid.space()
    assert space.grid() == {"model.stages": ["32,64,128", "48,96,192"], "train.class_weights": [0.0, 0.5]}
    assert space.grid_size() == len(grid.points()) == 4  # 0.5 and 0.50 are one value
    spec = space.apply(get_spec("skin"), {"model.stages": "48,96,192", "train.class_weights": 0.5})
    assert spec.model.params["stages"] == (48, 96, 192) and spec.train.class_weights == 0.5


def test_a_sweep_is_one_study_per_use_case_base_settings_and_grid():
    spec = tiny_digits()
    space = Grid.parse(spec, GRID).space()
    assert default_study_name(spec, space) == default_study_name(spec, Grid.parse(spec, "dropout=0.2,0.4").space())
    assert default_study_name(spec, space) != default_study_name(apply_overrides(spec, {"train.epochs": 2}), space)
    assert default_study_name(spec, space) != default_study_name(spec, Grid.parse(spec, "dropout=0.2,0.3").space())


def test_a_range_is_not_a_grid():
    from pipelines.experiments.tune import Space

    with pytest.raises(UsageError, match=r"--sampler grid takes choice\(...\) dimensions only"):
        Space.parse(get_spec("digits"), "model.dropout=float(0,0.5)").grid()


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
    workers = subprocess.run(["make", "-n", "sweep-skin", "SWEEP=class_weights=0,0.5", "STUDY=cw", "STORAGE=sqlite:///x.db"],
                             cwd=REPO, capture_output=True, text=True)
    assert "sweep skin --grid 'class_weights=0,0.5' --study cw --storage 'sqlite:///x.db'" in " ".join(workers.stdout.split())


# --- a real sweep --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """Run the 2-point sweep once for the module, in its own store and study."""
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


def test_each_point_is_one_trial_of_a_grid_study_and_a_child_run(swept):
    import mlflow
    import optuna

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    result = swept["result"]
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["verb"] == "tune"
    assert parent.data.tags["sweep_grid"] == GRID and parent.data.tags["tune_sampler"] == "grid"
    assert parent.info.run_name == f"sweep {GRID}"
    runs = children(client, parent.info.run_id)
    trials = [r for r in runs if r.data.tags.get("tune_role") != "best"]
    # Every point exactly once, fitted and scored on validation data only: no test figure.
    assert sorted(r.data.params["model.dropout"] for r in trials) == ["0.2", "0.4"]
    assert {r.info.status for r in trials} == {"FINISHED"} and {r.data.tags["trial_state"] for r in trials} == {"COMPLETE"}
    assert all("validation_accuracy" in r.data.metrics and "test_accuracy" not in r.data.metrics for r in trials)
    # The study agrees with MLflow, and only its best point was scored on the test split.
    study = optuna.load_study(study_name=result["study"], storage=f"sqlite:///{swept['root'] / 'models' / 'optuna.db'}")
    assert sorted(t.params["model.dropout"] for t in study.trials) == [0.2, 0.4]
    assert {t.system_attrs["grid_id"] for t in study.trials} == {0, 1}
    (best,) = [r for r in runs if r.data.tags.get("tune_role") == "best"]
    assert float(best.data.params["model.dropout"]) == study.best_trial.params["model.dropout"] == result["best_params"]["model.dropout"]
    assert "test_accuracy" in best.data.metrics and parent.data.metrics["best_validation_accuracy"] == study.best_value
    assert (swept["root"] / "report" / "comparison.csv").is_file() and (swept["root"] / "report" / "study" / "trials.csv").is_file()
    assert {"comparison/comparison.csv", "comparison/comparison.md", "comparison/comparison.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}


def test_the_same_sweep_again_trains_nothing(swept, capsys):
    """Run for real: the study is done and its best point scored, so no child run is added."""
    import mlflow

    from pipelines.experiments.sweep import run_sweep

    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    parent_id = swept["result"]["parent_run_id"]
    before = {run.info.run_id for run in children(client, parent_id)}
    again = run_sweep(tiny_digits(), GRID, out_dir=swept["root"] / "again")
    assert again["parent_run_id"] == parent_id and again["ran"] == 0
    assert {run.info.run_id for run in children(client, parent_id)} == before
    assert "its test score is on run" in capsys.readouterr().out


def test_an_interrupted_child_resumes_as_the_same_child(isolated):
    """What `train`'s resume does inside a parent run (a sweep's points are trials now, rerun by
    Optuna instead, but a run under any parent resumes so): the backup names the interrupted
    child's run, and reopening it under the reopened parent keeps it that parent's child."""
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
