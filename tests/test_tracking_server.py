"""A real MLflow tracking server (`make mlflow-server`) on a free loopback port: a run logs to it
over HTTP, the server goes away mid-run, training goes on and exports, and the next run sends
what was kept into the same MLflow run. Servers are started and stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager

from conftest import REPO, wait_until_healthy


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def tracking_server(root, port: int):
    """`make mlflow-server` in its own process group; yields its URI once /health answers."""
    command = ["make", "--no-print-directory", "-C", str(REPO), "mlflow-server", f"PORT={port}", "WORKERS=1",
               f"BACKEND=sqlite:///{root / 'server.db'}", f"ARTIFACTS={root / 'artifacts'}"]
    log = open(root / f"server-{port}.log", "a")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server, uri, root / f"server-{port}.log", 90)
        yield server, uri
    finally:
        stop(server)
        log.close()


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def train(env: dict, *overrides: str) -> subprocess.Popen:
    args = [sys.executable, "-u", "-m", "pipelines", "train", "digits", "--data", "sample"]
    for override in overrides:
        args += ["--set", override]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})


def test_a_run_survives_its_tracking_server_going_away(tmp_path):
    import mlflow

    port = free_port()
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "PIPELINES_MODELS_ROOT": str(tmp_path / "models"),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    output = []
    with tracking_server(tmp_path, port) as (server, uri):
        process = train(env, "train_limit=1500", "epochs=3")
        # Keras prints a line with val_loss at the end of each epoch: stop the server after the first.
        for line in process.stdout:
            output.append(line)
            if "val_loss" in line:
                break
        assert process.poll() is None, "".join(output)
        stop(server)
    rest, _ = process.communicate(timeout=300)
    output = "".join(output) + rest
    assert process.returncode == 0, output[-3000:]
    assert "unreachable" in output and "training goes on" in output
    assert "model registration skipped" in output
    assert (tmp_path / "models" / "digits" / "1" / "saved_model.pb").is_file(), output[-2000:]
    (kept,) = (tmp_path / "models" / "digits" / "unsent").iterdir()
    assert "test_accuracy" in (kept / "journal.jsonl").read_text()

    # The server is back: the next run sends the kept records into the same run, then logs itself.
    with tracking_server(tmp_path, port) as (server, uri):
        second = train(env, "train_limit=300", "epochs=1")
        output, _ = second.communicate(timeout=300)
        assert second.returncode == 0, output[-3000:]
        assert "sent" in output and kept.name in output
        client = mlflow.MlflowClient(uri)
        first = client.get_run(kept.name)
        assert first.info.status == "FINISHED"
        assert {m.step for m in client.get_metric_history(kept.name, "val_loss")} == {0, 1, 2}
        assert "test_accuracy" in first.data.metrics and first.data.tags["data_source"] == "sample"
        assert "saved_model" in {a.path for a in client.list_artifacts(kept.name)}
        # The second run went through the server: registered, champion, its artifacts proxied.
        (latest,) = client.search_model_versions("name='digits'")
        assert client.get_model_version_by_alias("digits", "champion").run_id == latest.run_id != kept.name
        assert any((tmp_path / "artifacts").rglob("MLmodel"))
        # compare reads the same server: both runs, the second one the champion.
        compared = subprocess.run([sys.executable, "-m", "pipelines", "compare", "digits", "--out", str(tmp_path / "report")],
                                  cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
        assert compared.returncode == 0, compared.stderr[-2000:]
        assert kept.name[:8] in compared.stdout and "champion" in compared.stdout
    assert not (tmp_path / "models" / "digits" / "unsent").exists() or not any((tmp_path / "models" / "digits" / "unsent").iterdir())


def test_an_unreachable_server_at_the_start_is_one_line(tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "PIPELINES_MODELS_ROOT": str(tmp_path / "models"),
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    result = subprocess.run([sys.executable, "-m", "pipelines", "train", "digits", "--data", "sample"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 1
    assert result.stderr.strip().endswith("unset MLFLOW_TRACKING_URI for the local store; nothing was trained")
    assert "Traceback" not in result.stderr
