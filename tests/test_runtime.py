"""Quiet where it is harmless, loud otherwise: TensorFlow's C++ start-up lines are set aside only
around its import (and replayed if the import fails), and the served model's file silences
MLflow's type-hint advice without a warning filter, so a new warning still reaches the user."""

import subprocess
import sys

from conftest import KNOWN_NOISE, REPO


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_known_noise_is_gone_and_a_new_warning_still_shows():
    result = run_python(
        "import os, runpy, warnings\n"
        "from pipelines.core.runtime import import_keras\n"
        "from pipelines.tracking.tracker import configured_mlflow\n"
        "import_keras(); configured_mlflow()\n"
        "runpy.run_path('pipelines/export/mlflow_model.py')  # what MLflow runs at logging and in each worker\n"
        "import tensorflow as tf; tf.constant(1) + 1\n"
        "warnings.warn('a new warning from a library', UserWarning)\n"
        "os.write(2, b'fd 2 is back\\n')\n"
    )
    assert result.returncode == 0, result.stderr
    for noise in KNOWN_NOISE:
        assert noise not in result.stderr, result.stderr
    assert "UserWarning: a new warning from a library" in result.stderr
    assert "fd 2 is back" in result.stderr


def test_what_a_failed_quiet_block_wrote_is_replayed():
    result = run_python(
        "import os\n"
        "from pipelines.core.runtime import quiet_stderr\n"
        "try:\n"
        "    with quiet_stderr():\n"
        "        os.write(2, b'the reason it failed\\n')\n"
        "        raise ImportError('no')\n"
        "except ImportError:\n"
        "    pass\n"
    )
    assert result.returncode == 0 and "the reason it failed" in result.stderr, result.stderr
