"""A throwaway PostgreSQL 15 cluster for tests: `initdb` and `pg_ctl` from Debian's packages, run
as the `postgres` user (PostgreSQL refuses to run as root), on a free loopback port, password
logins over TCP, stopped by its postmaster's PID. Skips with the reason where the binaries are
missing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import wait_until_healthy

BIN = Path(os.environ.get("PIPELINES_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD = "pipelines-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_cluster(databases=("mlflow",)):
    """Yields {"port", "url": name -> postgresql+psycopg URL} with `databases` created."""
    if not (BIN / "initdb").is_file() or not (BIN / "pg_ctl").is_file():
        pytest.skip(f"PostgreSQL binaries not found in {BIN} (Debian: apt-get install postgresql-15)")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _user_missing("postgres")):
        pytest.skip("running as root needs runuser and a 'postgres' user to run PostgreSQL as")
    # Not under pytest's tmp_path: that is private to root (0700) and the postgres user must enter it.
    root = Path(tempfile.mkdtemp(prefix="pipelines-pg-"))
    root.chmod(0o755)
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    (root / "password").write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        for path in (root, sockets, root / "password"):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()
    server = None
    try:
        subprocess.run(_as_owner([str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(root / "password"),
                                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, text=True, timeout=120)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
        started = subprocess.run(_as_owner([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-o", options,
                                            "-w", "-t", "60", "start"]), capture_output=True, text=True, timeout=90)
        assert started.returncode == 0, started.stderr + (root / "server.log").read_text()[-2000:]
        server = int((data / "postmaster.pid").read_text().split()[0])
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=PASSWORD, dbname="postgres",
                             autocommit=True) as connection:
            for name in databases:
                connection.execute(f'CREATE DATABASE "{name}"')
        url = {name: f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/{name}" for name in databases}
        yield {"port": port, "url": url, "root": root, "pid": server}
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(root, ignore_errors=True)


def _user_missing(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        return True


def _stop(pid: int) -> None:
    """Fast shutdown (SIGINT to the postmaster), then SIGKILL if it lingers."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def mlflow_server(root: Path, backend: str, *make_args: str, env: dict | None = None):
    """`make mlflow-server BACKEND=...` in its own process group on a free loopback port; yields
    its URI once /health answers; stopped by its process group's id."""
    import sys

    repo = Path(__file__).resolve().parent.parent
    port = free_port()
    command = ["make", "--no-print-directory", "-C", str(repo), "mlflow-server", f"PORT={port}", "WORKERS=1",
               f"BACKEND={backend}", f"ARTIFACTS={root / 'artifacts'}", *make_args]
    log_path = root / f"server-{port}.log"
    log = open(log_path, "a")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, **(env or {})})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server, uri, log_path, 120)
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        log.close()
        print(log_path.read_text()[-1500:], file=sys.stderr)  # shown by pytest when a test fails
