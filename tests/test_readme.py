"""The README is a contract: every `make` and `python -m pipelines` command in its code blocks
resolves to a real recipe or parses against the real spec, and the cheap ones run end to end,
through `make`, exactly as written. A command added to the README later is checked without
anyone remembering to."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()
SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}


def code_blocks(language_filter) -> list[str]:
    return [body for language, body in re.findall(r"```(\w*)\n(.*?)```", README, re.S) if language_filter(language)]


def shell_commands(program: tuple[str, ...]) -> list[list[str]]:
    """Commands in the README's shell blocks that start with `program` (after any VAR=value
    prefixes), as argument lists with comments removed."""
    found = []
    for body in code_blocks(lambda language: language in SHELL_LANGUAGES):
        for line in body.replace("\\\n", " ").splitlines():
            if not re.match(r"\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:make|python)\s", line):
                continue  # e.g. a curl with a multi-line JSON body
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                words = words[1:]
            if tuple(words[: len(program)]) == program:
                found.append(words)
    return found


MAKE_COMMANDS = shell_commands(("make",))
CLI_COMMANDS = shell_commands(("python", "-m", "pipelines"))


def test_the_readme_shows_commands_to_check():
    assert len(MAKE_COMMANDS) >= 10 and len(CLI_COMMANDS) >= 5
    assert ["make", "demo"] in MAKE_COMMANDS and ["make", "test"] in MAKE_COMMANDS


def make(*arguments: str, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *arguments], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=" ".join)
def test_every_make_command_has_a_recipe(command):
    """`make -n` prints the commands it would run: never "Nothing to be done" or "No rule"."""
    result = make("-n", *command[1:])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.strip(), f"{' '.join(command)}: no recipe"
    for silent in ("Nothing to be done", "No rule to make target", "is up to date"):
        assert silent not in output, f"{' '.join(command)}: {output.strip()}"


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=" ".join)
def test_every_cli_command_parses_and_resolves(command):
    """Argument parsing, the use case and every --set override resolve, without training."""
    from pipelines.__main__ import build_parser, resolve_spec
    from pipelines.usecases import get_spec

    try:
        args = build_parser().parse_args(command[3:])
    except SystemExit as exc:
        pytest.fail(f"{' '.join(command)}: argparse exited with {exc.code}")
    if getattr(args, "from_run", None):
        return  # the spec comes from an MLflow run: tests/test_rerun.py runs that for real
    if isinstance(getattr(args, "usecase", None), str):
        get_spec(args.usecase)
    if hasattr(args, "overrides"):
        resolve_spec(args)


def test_unknown_train_target_lists_the_use_cases():
    result = make("train-nope")
    assert result.returncode != 0
    assert "error: unknown use case 'nope'; choose one of: digits, clothing, skin, heart, cucumber" in result.stderr


def test_help_shows_the_train_targets_and_use_cases():
    result = make("help")
    assert result.returncode == 0, result.stderr
    assert "train-<usecase>" in result.stdout
    assert "digits clothing skin heart cucumber" in result.stdout


def test_make_list():
    assert ["make", "list"] in MAKE_COMMANDS
    result = make("list")
    assert result.returncode == 0, result.stderr
    for usecase in ("digits", "clothing", "skin", "heart", "cucumber"):
        assert f"  {usecase} " in result.stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A scratch MLflow store and models folder for the commands run for real."""
    root = tmp_path_factory.mktemp("readme")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PIPELINES_MODELS_ROOT": str(root / "models"),
        "PIPELINES_DATA_ROOT": str(root / "data"),
    }
    return {"root": root, "env": env}


@pytest.fixture(scope="module")
def trained_through_make(scratch):
    command = ["make", "train-digits", "DATA=sample", "EPOCHS=1"]
    assert command in MAKE_COMMANDS, "the README no longer shows the smoke-run command"
    result = make(*command[1:], env=scratch["env"], timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_make_train_digits_trains_logs_and_exports(scratch, trained_through_make):
    import mlflow

    client = mlflow.MlflowClient(scratch["env"]["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1" and run.data.tags["data_source"] == "sample"
    assert (scratch["root"] / "models" / "digits" / "1" / "saved_model.pb").is_file()
    assert "SavedModel:" in trained_through_make.stdout


def test_predict_a_real_png_as_the_readme_shows(scratch, trained_through_make):
    import numpy as np
    from PIL import Image

    assert any(c[:4] == ["python", "-m", "pipelines", "predict"] and c[4] == "digits" for c in CLI_COMMANDS)
    with np.load(REPO / "data" / "samples" / "digits" / "test.npz") as sample:
        image, label = sample["x"][0], int(sample["y"][0])
    path = scratch["root"] / "digit.png"
    Image.fromarray(image).save(path)
    result = subprocess.run([sys.executable, "-m", "pipelines", "predict", "digits", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, **scratch["env"]})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"{re.escape(str(path))}: \d \(\d\.\d+\).*\n", result.stdout), result.stdout
    assert label in range(10)


def test_python_snippets_run(scratch, trained_through_make):
    """The README's Python blocks run as written, from a folder holding `models/`."""
    snippets = code_blocks(lambda language: language == "python")
    assert snippets
    for snippet in snippets:
        result = subprocess.run([sys.executable, "-c", snippet], cwd=scratch["root"], capture_output=True, text=True,
                                timeout=120, env={**os.environ, **scratch["env"]})
        assert result.returncode == 0, f"{snippet}\n{result.stderr[-2000:]}"


def test_make_install_answers_when_there_is_nothing_to_install():
    """Run as written: an up-to-date .venv is reported, not met with "Nothing to be done"."""
    assert ["make", "install"] in MAKE_COMMANDS
    result = make("install", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" not in result.stdout + result.stderr
    assert "keras==" in result.stdout and "source .venv/bin/activate" in result.stdout
