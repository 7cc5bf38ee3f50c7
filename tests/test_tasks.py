"""The task registry: every use case's task resolves, and a key a task never reads is refused
like an unknown one (a heart run would silently ignore it)."""

import ast
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from pipelines.core.errors import UsageError
from pipelines.tasks import TASKS, Task, get_task
from pipelines.usecases import all_specs


def test_every_use_case_has_a_registered_task():
    for spec in all_specs():
        assert isinstance(get_task(spec.task), Task)
    with pytest.raises(UsageError, match="unknown task 'video'"):
        get_task("video")


def test_heart_refuses_the_keys_its_task_never_reads():
    result = run_cli("show", "heart", "--set", "precision=mixed_bfloat16")
    assert result.returncode == 2 and result.stderr.startswith("error: unknown --set key 'precision' for heart")
    for key in ("augmentation=flip", "early_stopping_patience=3", "train_limit=50", "fine_tune_epochs=4"):
        result = run_cli("show", "heart", "--set", key)
        assert result.returncode == 2 and "unknown --set key" in result.stderr, key
    assert run_cli("show", "heart", "--set", "cv_repeats=1").returncode == 0


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_tasks_never_import_the_envelope():
    """The envelope (pipelines.pipeline) calls the tasks; a task importing it back is a cycle."""
    for module in TASKS.values():
        path = REPO / (module.partition(":")[0].replace(".", "/") + ".py")
        assert "pipelines.pipeline" not in imports_of(path), path
