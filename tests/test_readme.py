"""The README and the pages under docs/ are a contract: every `make` and `python -m pipelines`
command in their code blocks resolves to a real recipe or parses against the real spec, the cheap
ones run end to end, through `make`, exactly as written, and every file, test and page they name
exists. A command added to any of them later is checked without anyone remembering to."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO
from test_docs import WALKTHROUGHS as WALKTHROUGHS_RUN_END_TO_END

from pipelines.usecases import USECASES

# The README first, then docs/*.md: file name (relative to the checkout) -> text.
DOCUMENTS = {"README.md": (REPO / "README.md").read_text()} | {
    f"docs/{path.name}": path.read_text() for path in sorted((REPO / "docs").glob("*.md"))
}
SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}


def code_blocks(language_filter) -> list[tuple[str, str]]:
    """(file, body) of every fenced block, in every document, whose language passes the filter."""
    return [(name, body) for name, text in DOCUMENTS.items()
            for language, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S) if language_filter(language)]


def shell_commands(program: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """(file, command) for the commands in the documents' shell blocks that start with `program`
    (after any VAR=value prefixes), as argument lists with comments removed; each once per file."""
    found = []
    for name, body in code_blocks(lambda language: language in SHELL_LANGUAGES):
        for line in body.replace("\\\n", " ").splitlines():
            if not re.match(r"\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:make|python)\s", line):
                continue  # e.g. a curl with a multi-line JSON body
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                words = words[1:]
            if tuple(words[: len(program)]) == program and (name, words) not in found:
                found.append((name, words))
    return found


# Walkthrough pages (a user's own data, from `init NAME` to a served model) name use cases they
# create themselves; each is run end to end, in order, by its own test, so here they are left out:
# your-own-data by tests/test_docs.py, tables by tests/test_init_table.py.
WALKTHROUGHS = {f"docs/{name}" for name in WALKTHROUGHS_RUN_END_TO_END} | {"docs/tables.md"}
DOCUMENTED_MAKE = [found for found in shell_commands(("make",)) if found[0] not in WALKTHROUGHS]
DOCUMENTED_CLI = [found for found in shell_commands(("python", "-m", "pipelines")) if found[0] not in WALKTHROUGHS]
# The commands alone, wherever they are documented (tests/test_usecases.py reads MAKE_COMMANDS).
MAKE_COMMANDS = [command for _, command in DOCUMENTED_MAKE]
CLI_COMMANDS = [command for _, command in DOCUMENTED_CLI]


def where(documented: tuple[str, list[str]]) -> str:
    """The test id: the file a command comes from, then the command."""
    name, command = documented
    return f"{name}: {' '.join(command)}"


def test_the_docs_show_commands_to_check():
    assert len(MAKE_COMMANDS) >= 10 and len(CLI_COMMANDS) >= 5
    in_readme = [command for name, command in DOCUMENTED_MAKE if name == "README.md"]
    assert ["make", "demo"] in in_readme and ["make", "test"] in in_readme, "the quick start left the README"
    assert in_readme.index(["make", "demo"]) < in_readme.index(["make", "test"])
    assert len(DOCUMENTS) > 1, "no docs/*.md pages"


def make(*arguments: str, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *arguments], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("documented", DOCUMENTED_MAKE, ids=where)
def test_every_make_command_has_a_recipe(documented):
    """`make -n` prints the commands it would run: never "Nothing to be done" or "No rule"."""
    _, command = documented
    result = make("-n", *command[1:])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.strip(), f"{' '.join(command)}: no recipe"
    for silent in ("Nothing to be done", "No rule to make target", "is up to date"):
        assert silent not in output, f"{' '.join(command)}: {output.strip()}"


@pytest.mark.parametrize("documented", DOCUMENTED_CLI, ids=where)
def test_every_cli_command_parses_and_resolves(documented):
    """Argument parsing, the use case and every --set override resolve, without training."""
    _, command = documented
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


@pytest.fixture(scope="module")
def listed_names() -> list[str]:
    """`python -m pipelines list --names`, run with `-S`: no site-packages, nothing installed,
    as the Makefile may run it with a bare python3 before .venv/ exists."""
    bare = subprocess.run([sys.executable, "-S", "-m", "pipelines", "list", "--names"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert bare.returncode == 0, bare.stderr
    from pipelines.__main__ import main

    through_argparse = io.StringIO()  # the same verb, parsed like any other (main() is past the shortcut)
    with contextlib.redirect_stdout(through_argparse):
        assert main(["list", "--names"]) == 0
    assert through_argparse.getvalue() == bare.stdout
    names = bare.stdout.split()
    assert set(USECASES) <= set(names) and len(set(names)) == len(names), names
    return names


def test_unknown_train_target_lists_the_use_cases(listed_names):
    result = make("train-nope")
    assert result.returncode != 0
    assert f"error: unknown use case 'nope'; choose one of: {', '.join(listed_names)}" in result.stderr


def test_help_shows_the_train_targets_and_use_cases(listed_names):
    result = make("help")
    assert result.returncode == 0, result.stderr
    assert "train-<usecase>" in result.stdout
    assert f"use cases: {' '.join(listed_names)}" in result.stdout


def test_every_listed_use_case_has_its_targets(listed_names):
    """The Makefile's use cases are the package's: each trains, serves and sweeps, and the demo runs it."""
    for target in ("train", "serve", "sweep"):
        result = make("-n", *(f"{target}-{name}" for name in listed_names), "SWEEP=epochs=1,2")
        assert result.returncode == 0, result.stdout + result.stderr
        for name in listed_names:
            assert re.search(rf" -m pipelines {target} {name}(\s|$)", result.stdout, re.M), (target, name)
    demo = make("-n", "demo")
    assert demo.returncode == 0, demo.stderr
    for name in listed_names:
        has_sample = (REPO / "data" / "samples" / name).is_dir()
        assert (f" train {name} --data sample" in demo.stdout) == has_sample, name


def test_make_list():
    assert ["make", "list"] in MAKE_COMMANDS
    result = make("list")
    assert result.returncode == 0, result.stderr
    for usecase in USECASES:
        assert f"  {usecase} " in result.stdout


# --- The pages themselves ------------------------------------------------------------------

DOCS_PAGES = [name for name in DOCUMENTS if name.startswith("docs/")]
# `pipelines/data/images.py`, `tests/test_pipeline.py::test_same_seed_same_metrics`, `benchmarks/`:
# a path in the checkout, up to a placeholder like `<usecase>`.
NAMED_PATH = re.compile(r"(?<![\w./-])((?:pipelines|tests|benchmarks|scripts|examples)/[\w./-]*)(?:::(\w+))?")


@pytest.mark.parametrize("name", DOCS_PAGES)
def test_every_page_has_a_title_and_the_way_back(name):
    lines = DOCUMENTS[name].splitlines()
    assert re.fullmatch(r"# \S.*", lines[0]), f"{name}: the first line is not a `# Title`"
    assert "](../README.md" in DOCUMENTS[name], f"{name}: no link back to the README"
    assert f"]({name}" in DOCUMENTS["README.md"], f"the README does not link to {name}"


def anchors(markdown: str) -> set[str]:
    """The `#fragment` of each heading, as GitHub makes it: lower case, punctuation dropped, spaces -> -."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_local_link_and_named_path_exists(name):
    """Links between the pages, and every module, test, benchmark or script a page names: a page
    that names a moved module fails here, not in a reader's shell."""
    text = DOCUMENTS[name]
    base = (REPO / name).parent
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (base / path).resolve() if path else REPO / name
        assert linked.exists(), f"{name}: broken link {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text()), f"{name}: {target} names no heading of {path or name}"
    for path, function in NAMED_PATH.findall(text):
        path = path.rstrip(".")
        assert (REPO / path).exists(), f"{name} names {path}, which does not exist"
        if function:
            assert f"def {function}(" in (REPO / path).read_text(), f"{name} names {path}::{function}, which does not exist"


def test_the_folder_map_names_every_folder_and_module():
    """docs/layout.md has a line for every folder and module of pipelines/ (tests/test_layout.py
    checks the order in which they may import each other)."""
    layout = DOCUMENTS.get("docs/layout.md", "")
    package = REPO / "pipelines"
    for path in sorted(package.rglob("*")):
        if "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        if path.is_dir():
            assert re.search(rf"(?<![\w.]){re.escape(path.name)}/", layout), f"docs/layout.md lacks {path.relative_to(REPO)}/"
        elif path.suffix == ".py":
            assert re.search(rf"(?<![\w.]){re.escape(path.name)}", layout), f"docs/layout.md lacks {path.relative_to(REPO)}"


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
    assert command in MAKE_COMMANDS, "the README and docs/ no longer show the smoke-run command"
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
    """The Python blocks of the README and docs/ run as written, from a folder holding `models/`."""
    snippets = code_blocks(lambda language: language == "python")
    assert snippets
    for name, snippet in snippets:
        result = subprocess.run([sys.executable, "-c", snippet], cwd=scratch["root"], capture_output=True, text=True,
                                timeout=120, env={**os.environ, **scratch["env"]})
        assert result.returncode == 0, f"{name}:\n{snippet}\n{result.stderr[-2000:]}"


def test_make_install_answers_when_there_is_nothing_to_install():
    """Run as written: an up-to-date .venv is reported, not met with "Nothing to be done"."""
    assert ["make", "install"] in MAKE_COMMANDS
    result = make("install", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" not in result.stdout + result.stderr
    assert "keras==" in result.stdout and "source .venv/bin/activate" in result.stdout
