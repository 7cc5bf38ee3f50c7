"""The package's folders are its stages, and data flows one way through them: a module imports
only from its own stage, the stages upstream of it, and `core/`. This test is the layout's
contract; `docs/layout.md` (and the README's data-flow table) describe the same order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipelines"

# Upstream first. `pipeline` is the run envelope (`pipelines/pipeline.py`), which every verb
# around a run (sweep, rerun) calls; `__main__` is the command line over all of it.
STAGES = ("core", "data", "modeling", "training", "evaluation", "tasks", "usecases", "export", "tracking", "serving",
          "pipeline", "experiments", "__main__")
TOP_LEVEL = {"__init__.py", "__main__.py", "pipeline.py"}


def stage_of(module: str) -> str:
    """`pipelines.data.loaders.mnist_format` -> `data`."""
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    """Every `pipelines.*` module the file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "pipelines":
            found.update(f"pipelines.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pipelines."))
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def test_no_loose_modules_beside_the_stages():
    loose = {path.name for path in PACKAGE.glob("*.py")} - TOP_LEVEL
    assert not loose, f"modules outside a stage folder: {sorted(loose)}"
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and not path.name.startswith("__")}
    assert folders == set(STAGES) - {"pipeline", "__main__"}


@pytest.mark.parametrize("module,path", list(modules()), ids=lambda value: value if isinstance(value, str) else "")
def test_imports_flow_downstream_only(module, path):
    if module == "pipelines":
        return  # the package's docstring only
    own = STAGES.index(stage_of(module))
    upward = sorted(other for other in imported_modules(path) if STAGES.index(stage_of(other)) > own)
    assert not upward, f"{module} ({STAGES[own]}) imports from downstream stages: {upward}"
