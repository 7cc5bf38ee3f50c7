"""A team's setup on a real PostgreSQL 15 (a throwaway cluster, tests/postgres.py): the tracking
server on it (`make mlflow-server BACKEND=postgresql://...`) takes a run over HTTP and its
registered model, and `compare` reads it; two `tune` workers share one Optuna study stored in it,
one of them killed mid-trial and restarted; and `make mlflow-server AUTH=1` refuses requests
without a login, logs with one, and keeps a user out of an experiment not theirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO
from postgres import mlflow_server, postgres_cluster

TUNE_SPACE = "learning_rate=log(1e-3,1e-2) model.dropout=float(0,0.5)"
TRIALS = 4


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """One cluster (databases for the tracking store, the study, the logins' server) and the
    tracking server on it, for the module."""
    root = tmp_path_factory.mktemp("team")
    with postgres_cluster(("mlflow", "optuna", "mlflow_auth")) as cluster:
        # `postgresql://` as a user types it; the Makefile reads it with psycopg 3.
        backend = cluster["url"]["mlflow"].replace("postgresql+psycopg://", "postgresql://")
        with mlflow_server(root, backend) as uri:
            env = {"MLFLOW_TRACKING_URI": uri, "PIPELINES_MODELS_ROOT": str(root / "models"),
                   "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
            yield {"root": root, "cluster": cluster, "uri": uri, "env": {**os.environ, **env}}


def cli(team, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=team["env"])


def test_a_run_and_its_registered_model_go_through_the_server_into_postgresql(team):
    import mlflow
    import psycopg

    trained = cli(team, "train", "digits", "--data", "sample", "--set", "epochs=1", "--set", "train_limit=300")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    client = mlflow.MlflowClient(team["uri"])
    (version,) = client.search_model_versions("name='digits'")
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics and run.data.tags["data_source"] == "sample"
    assert client.get_model_version_by_alias("digits", "champion").version == version.version
    # It is in PostgreSQL itself, not in a file beside the server.
    with psycopg.connect(team["cluster"]["url"]["mlflow"].replace("+psycopg", "")) as connection:
        (status,) = connection.execute("SELECT status FROM runs WHERE run_uuid = %s", (version.run_id,)).fetchone()
        assert status == "FINISHED"
    compared = cli(team, "compare", "digits", "--out", str(team["root"] / "compare"), timeout=120)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert version.run_id[:8] in compared.stdout and "champion" in compared.stdout


def worker(team, log_name: str, *options: str) -> subprocess.Popen:
    """One `tune` worker on the study in PostgreSQL (a 5 s heartbeat: a dead worker's trial goes stale in 10 s)."""
    args = [sys.executable, "-u", "-m", "pipelines", "tune", "digits", "--data", "sample", "--set", "epochs=2",
            "--set", "train_limit=200", "--trials", str(TRIALS), "--space", TUNE_SPACE, "--study", "two-workers",
            "--storage", team["cluster"]["url"]["optuna"], "--heartbeat", "5", "--seed", "7",
            "--out", str(team["root"] / f"tune-{log_name}"), *options]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=team["env"])


def test_two_workers_share_one_study_and_a_killed_worker_is_retried(team):
    import mlflow
    import optuna

    # Started together: one creates the study, one joins it. The second takes no new trial after
    # its first (--timeout 1): left free, it could run the whole rest of the budget before the
    # restarted worker is up (measured in a fresh clone), and the restart would prove nothing.
    first, second = worker(team, "a"), worker(team, "b", "--timeout", "1")
    seen = []
    for line in first.stdout:  # kill the first worker once a trial of its own is training
        seen.append(line)
        if "sample data:" in line and any("] trial " in earlier for earlier in seen):
            break
    assert first.poll() is None, "".join(seen)[-3000:]
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    restarted = worker(team, "a2")
    outputs = {}
    for name, process in (("second", second), ("restarted", restarted)):
        outputs[name], _ = process.communicate(timeout=400)
        assert process.returncode == 0, outputs[name][-3000:]

    study = optuna.load_study(study_name="two-workers", storage=team["cluster"]["url"]["optuna"])
    states = [t.state.name for t in study.trials]
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == TRIALS, states  # exactly the budget, over every worker
    assert "FAIL" in states and any(t.system_attrs.get("failed_trial") is not None for t in done), states  # the killed trial, retried
    assert len({t.user_attrs["worker"] for t in done}) >= 2  # both (the second, and the first once restarted) contributed
    points = [json.dumps(t.params, sort_keys=True) for t in done]
    assert len(set(points)) == len(points)  # no parameter set ran twice

    client = mlflow.MlflowClient(team["uri"])
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["verb"] == "tune"
    experiment = client.get_experiment_by_name("digits")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trial_runs = {int(r.data.tags["tune_trial"]): r for r in children if "tune_role" not in r.data.tags}
    assert {t.number for t in done} <= set(trial_runs)  # every trial is a child of the one parent
    assert all(trial_runs[t.number].data.tags["trial_state"] == t.state.name for t in done)
    assert all("test_accuracy" not in trial_runs[t.number].data.metrics for t in done)  # trials never see the test split
    killed = next(t for t in study.trials if t.state.name == "FAIL")
    if "mlflow_run_id" in killed.user_attrs:  # the run the killed worker had started is marked so
        assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    # Optuna and MLflow agree on the best trial; only it was scored on test, once.
    best = study.best_trial
    assert parent.data.tags["tune_best_trial"] == str(best.number)
    assert parent.data.tags["tune_best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert trial_runs[best.number].data.metrics["validation_accuracy"] == pytest.approx(best.value)
    assert parent.data.metrics["best_validation_accuracy"] == pytest.approx(best.value)
    (scored,) = [r for r in children if r.data.tags.get("tune_role") == "best"]
    assert scored.data.tags["tune_trial"] == str(best.number) and "test_accuracy" in scored.data.metrics
    assert parent.data.metrics["best_trial_test_accuracy"] == pytest.approx(scored.data.metrics["test_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/optimization_history.png", "study/trials.csv"} <= artifacts
    both = outputs["second"] + outputs["restarted"]
    assert both.count("scored on the test split this once") == 1


def test_logins_refuse_strangers_log_members_and_keep_experiments_apart(team, tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "admin-password-for-tests"}
    # A second server on the same (already migrated) store, its users and permissions in their own database.
    with mlflow_server(tmp_path, team["cluster"]["url"]["mlflow"], "AUTH=1", f"AUTH_BACKEND={team['cluster']['url']['mlflow_auth']}",
                       f"AUTH_CONFIG={tmp_path / 'auth.ini'}",
                       env={"MLFLOW_AUTH_ADMIN_PASSWORD": admin["MLFLOW_TRACKING_PASSWORD"]}) as uri:
        # No login: 401, and nothing is written.
        request = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/create", data=b'{"name": "strangers"}',
                                         headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        for name, value in admin.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        client = mlflow.MlflowClient(uri)
        assert client.get_experiment_by_name("strangers") is None
        # A login: the pipelines' tracker logs through MLflow's client, which sends it.
        from pipelines.tracking.tracker import Tracker

        with Tracker("digits", run_name="with a login") as tracker:
            tracker.log_metrics({"test_accuracy": 0.5})
        assert client.get_run(tracker.run_id).data.metrics["test_accuracy"] == 0.5
        # Another user reads (default_permission READ) but cannot write to the admin's experiment.
        get_app_client("basic-auth", tracking_uri=uri).create_user("alice", "alice-password-for-tests")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-for-tests")
        experiment = client.get_experiment_by_name("digits")
        with pytest.raises(MlflowException, match="(?i)permission"):
            client.create_run(experiment.experiment_id)
        with pytest.raises(MlflowException, match="(?i)permission"):
            client.log_metric(tracker.run_id, "test_accuracy", 1.0)
        for name, value in admin.items():
            monkeypatch.setenv(name, value)
        assert client.get_run(tracker.run_id).data.metrics["test_accuracy"] == 0.5
