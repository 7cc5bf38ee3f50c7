"""The walkthrough pages in docs/ run end to end: every `make` and `python` command in their
shell blocks runs as written, in order, for real (the other pages' commands are checked for a
recipe and a parse by tests/test_readme.py, since they train on full data sets or serve for hours): in a scratch home folder (`~`)
with its own use-case folder, MLflow store, models, reports and caches, so nothing in the checkout changes.
A command that serves (`make serve-NAME`) is checked for its recipe, then served for real on a
free port and sent a request."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_serve import assert_probabilities, running_server

# A walkthrough: a user's own data from nothing to a served model, on data a test can build.
WALKTHROUGHS = ("your-own-data.md",)
PAGES = [REPO / "docs" / name for name in WALKTHROUGHS]
SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}


def commands(page: Path) -> list[str]:
    """`make ...` and `python ...` lines of the page's shell blocks, in order, comments removed."""
    found = []
    for language, body in re.findall(r"```(\w*)\n(.*?)```", page.read_text(), re.S):
        if language not in SHELL_LANGUAGES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if re.match(r"(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:make|python)\s", line):
                found.append(line)
    return found


def scratch_env(root: Path) -> dict:
    return {**os.environ, "HOME": str(root), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PIPELINES_USECASES_DIR": str(root / "usecases"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "PIPELINES_MODELS_ROOT": str(root / "models"), "PIPELINES_REPORTS_ROOT": str(root / "reports"),
            "PIPELINES_DATA_ROOT": str(root / "data")}


def test_the_pages_show_commands():
    assert PAGES and all(commands(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_runs_as_written(page, tmp_path):
    env = scratch_env(tmp_path)
    served = []
    for line in commands(page):
        serve = re.fullmatch(r"make serve-(\S+)", line)
        if serve:
            dry = subprocess.run(["make", "--no-print-directory", "-n", f"serve-{serve[1]}"], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=120)
            assert dry.returncode == 0 and "pipelines serve" in dry.stdout, dry.stdout + dry.stderr
            served.append(serve[1])
            continue
        result = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{line}\n{result.stderr[-3000:]}"
    for usecase in served:
        check_served(usecase, env, tmp_path)


def check_served(usecase: str, env: dict, root: Path) -> None:
    """The served model answers photos of the use case's own folder with its class names."""
    from PIL import Image

    spec_text = (root / "usecases" / f"{usecase}.toml").read_text()
    shape = json.loads(re.search(r"^input_shape = (\[.*\])", spec_text, re.M)[1])
    classes = json.loads(re.search(r"^class_names = (\[.*\])", spec_text, re.M)[1])
    folder = Path(re.search(r'^folder = "(.*)"', spec_text, re.M)[1])
    photos = sorted(folder.rglob("*.jpg"))[:2] + sorted(folder.rglob("*.png"))[:2]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize(tuple(shape[:2][::-1]))) for p in photos])
    with running_server(usecase, None, {k: v for k, v in env.items() if k.startswith(("PIPELINES_", "MLFLOW_", "HOME"))},
                        root / "serve.log") as post:
        status, text = post({"inputs": pixels.tolist()})
    assert status == 200, text
    assert_probabilities(json.loads(text)["predictions"], classes, len(photos))
