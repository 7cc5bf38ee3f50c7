"""Training on several processes, for real: two `python -m pipelines train` processes on
127.0.0.1 under the JAX backend, joined by the KERAS_DISTRIBUTION_* variables the README
documents, exactly as two hosts would run them (only the address differs).

What must hold: the global batch is split between the processes (each feeds half of every
step), both end with the same weights, process 0 alone tracks and exports, and a process that
dies makes the other one fail with one clear line in bounded time instead of hanging.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO

pytest.importorskip("jax", reason="multi-process training runs on the JAX backend (pip install jax, in the dev extra)")

PEER_TIMEOUT_SECONDS = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_workers(root, *arguments: str, port: int) -> list[subprocess.Popen]:
    """Both processes get the same tracking store and models folder, as two hosts sharing a
    tracking server and a file system would."""
    processes = []
    for process_id in (0, 1):
        environment = {
            **os.environ,
            "KERAS_BACKEND": "jax",
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(process_id),
            "PIPELINES_PEER_TIMEOUT_SECONDS": str(PEER_TIMEOUT_SECONDS),
            "PIPELINES_CLUSTER_START_TIMEOUT_SECONDS": "120",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "PIPELINES_MODELS_ROOT": str(root / "models"),
            "PIPELINES_DATA_ROOT": str(root / "data"),
            "PYTHONUNBUFFERED": "1",
        }
        environment.pop("KERAS_MAX_STEPS_PER_EPOCH", None)
        log = open(root / f"process{process_id}.log", "w")  # noqa: SIM115 - closed with the test's tmp dir
        processes.append(subprocess.Popen([sys.executable, "-m", "pipelines", "train", "digits", "--data", "sample", *arguments],
                                          cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT))
    return processes


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_processes")
    # 360 training examples, global batch 2 x 32 = 64: 5 full steps an epoch, 32 examples from each process per step.
    processes = start_workers(root, "--set", "train_limit=400", "--set", "batch_size=32", "--set", "epochs=1", port=free_port())
    try:
        codes = [process.wait(timeout=240) for process in processes]
    finally:
        stop(processes)
    logs = [(root / f"process{index}.log").read_text() for index in (0, 1)]
    return {"root": root, "codes": codes, "logs": logs}


def test_both_processes_finish(two_process_run):
    for code, log in zip(two_process_run["codes"], two_process_run["logs"]):
        assert code == 0, log[-3000:]


def test_each_process_feeds_half_of_every_global_batch(two_process_run):
    for index, log in enumerate(two_process_run["logs"]):
        assert (f"process {index}/2: global batch 64 = 32 examples from each of 2 processes; "
                "this one feeds its shard, 160 of 360 training examples an epoch (5 steps)") in log, log[-3000:]


def test_both_processes_end_with_the_same_weights(two_process_run):
    hashes = [re.findall(r"process \d/2: weights sha256 ([0-9a-f]{64})", log) for log in two_process_run["logs"]]
    assert all(len(found) == 1 for found in hashes), two_process_run["logs"]
    assert hashes[0] == hashes[1]


def test_only_process_0_tracks_and_exports(two_process_run):
    from mlflow import MlflowClient

    root = two_process_run["root"]
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    tags = runs[0].data.tags
    assert (tags["processes"], tags["global_batch"], tags["process_batch"], tags["distribution"]) == ("2", "64", "32", "DataParallel")
    chief_hash = re.search(r"weights sha256 ([0-9a-f]{64})", two_process_run["logs"][0]).group(1)
    assert tags["weights_sha256"] == chief_hash

    models = root / "models" / "digits"
    assert sorted(p.name for p in models.iterdir() if p.name.isdigit()) == ["1"]  # one export
    # No resume backup or lock: a multi-process run cannot be resumed, so none is kept.
    assert sorted(p.name for p in (models / "checkpoints").iterdir()) == ["latest.json", "latest.keras"]
    assert "process 0 tracks and exports" in two_process_run["logs"][1]
    assert "MLflow run" not in two_process_run["logs"][1] and "SavedModel" not in two_process_run["logs"][1]


def test_a_dead_process_makes_the_other_fail_fast_with_one_line(tmp_path):
    # Long enough (3 epochs of 4,500 examples at global batch 16) that it is mid-training when killed.
    processes = start_workers(tmp_path, "--set", "batch_size=8", "--set", "epochs=3", port=free_port())
    survivor, victim = processes
    try:
        log = tmp_path / "process1.log"
        deadline = time.monotonic() + 120
        while "global batch" not in log.read_text() and time.monotonic() < deadline:
            assert victim.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # into the first epoch
        victim.kill()
        killed = time.monotonic()
        code = survivor.wait(timeout=60)
        seconds = time.monotonic() - killed
    finally:
        stop(processes)
    output = (tmp_path / "process0.log").read_text()
    assert code != 0, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "process 0/2: another process of this run stopped" in errors[0], output[-3000:]
    assert "Check failure stack trace" not in output  # left before JAX's shutdown barrier could abort
    assert seconds < 60
    assert not [p for p in (tmp_path / "models" / "digits").glob("[0-9]*")]  # nothing exported


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}, "KERAS_DISTRIBUTION_PROCESS_ID is not"),
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "2"}, "must be in 0..1"),
        ({"KERAS_DISTRIBUTION_NUM_PROCESSES": "two", "KERAS_DISTRIBUTION_PROCESS_ID": "0"}, "must be integers"),
    ],
)
def test_incomplete_cluster_variables_are_one_line_errors(monkeypatch, variables, message):
    from pipelines.core.errors import PipelineError
    from pipelines.training.strategy import cluster_from_environment

    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "10.0.0.1:1234")
    for name in ("KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PipelineError, match=message):
        cluster_from_environment()


def test_the_coordinator_is_the_first_of_all_addresses(monkeypatch):
    from pipelines.training.strategy import Cluster, cluster_from_environment

    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "10.0.0.1:1234,10.0.0.2:2345")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert cluster_from_environment() == Cluster("10.0.0.1:1234", 2, 1)
