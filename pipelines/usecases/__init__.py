"""The use cases: one TOML file each (`pipelines.usecases.spec_file` reads them).

The five built-in ones ship in this folder; a user's live in `usecases/` at the checkout's
root (or the folder `PIPELINES_USECASES_DIR` names) and work the same way: `make
train-grapes` finds `usecases/grapes.toml`. A path to a file works wherever a name does
(`python -m pipelines train path/to/grapes.toml`). Adding a use case is adding a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.core import paths
from pipelines.core.errors import UsageError

BUILTIN_DIR = Path(__file__).resolve().parent
# The built-in use cases, as `make` and the tests list them.
USECASES = tuple(sorted(path.stem for path in BUILTIN_DIR.glob("*.toml")))

# Files named by path in this process, by use-case name: `train path/to/grapes.toml` and
# later `get_spec("grapes")` (export, evaluation) in the same run mean the same file.
_NAMED_FILES: dict[str, Path] = {}


def user_dir() -> Path:
    """Where a user's use-case files live: `usecases/` beside `data/` and `models/`."""
    value = os.environ.get("PIPELINES_USECASES_DIR")
    return Path(value).expanduser().resolve() if value else paths.REPO_ROOT / "usecases"


def user_files() -> dict[str, Path]:
    folder = user_dir()
    return {path.stem: path for path in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def names() -> tuple[str, ...]:
    """Every use case this checkout knows: the built-in ones, then the user's."""
    return USECASES + tuple(name for name in user_files() if name not in USECASES)


def spec_path(name_or_path: str) -> Path:
    """The file of a use case given by name (the user's folder, then the built-ins) or by path."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise UsageError(f"{text}: no such use-case file")
        _NAMED_FILES[path.stem] = path.resolve()
        return path
    users = user_files()
    if text in users and text in USECASES:
        raise UsageError(f"{users[text]} has the name of the built-in use case '{text}': rename the file "
                         f"(a use case's name is its file's)")
    found = users.get(text) or _NAMED_FILES.get(text) or (BUILTIN_DIR / f"{text}.toml")
    if not found.is_file():
        raise UsageError(f"unknown use case '{text}'; choose one of: {', '.join(names())}, "
                         f"or write {user_dir() / (text + '.toml')} (python -m pipelines init {text} --images DIR)")
    return found


def name_of(name_or_path: str) -> str:
    """The use case's name, from a name or a file's path (which this process then knows by name)."""
    return spec_path(name_or_path).stem


def get_spec(name_or_path: str):
    """The use case's spec, its model parameters completed with the builder's defaults: a file
    lists only what it changes, yet every parameter shows in `show`, in MLflow and to `--set`."""
    # Reading a file needs the registries the schema checks against (builders, tasks,
    # loaders: NumPy and up); listing names above does not, so `make` can ask for them cheaply.
    from pipelines.usecases.spec_file import read_spec_file

    return read_spec_file(spec_path(name_or_path))


def all_specs():
    return [get_spec(name) for name in names()]
