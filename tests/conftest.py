"""Every test runs against its own MLflow store, models folder and download cache (under
pytest's tmp_path), so tests never touch the user's mlflow.db or models/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point tracking, models and downloads at tmp_path; returns that folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PIPELINES_MODELS_ROOT", str(tmp_path / "models"))
    monkeypatch.setenv("PIPELINES_DATA_ROOT", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


def run_cli(*args, env=None, timeout=600):
    """Run `python -m pipelines ARGS` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
