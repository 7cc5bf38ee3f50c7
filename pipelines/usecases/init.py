"""`python -m pipelines init NAME ...`: write a user's use-case file, never over another.

The inspection that fills it in is per kind of data (`pipelines.usecases.init_table` for a
CSV); writing, printing and the next command are the same for every kind.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.core.errors import UsageError
from pipelines.usecases import USECASES, user_dir
from pipelines.usecases.spec_file import NAME


def write_usecase_file(name: str, text: str, folder: Path | None = None) -> Path:
    """Write `text` as `<folder>/<name>.toml` (default: the user's use-case folder), print it and
    the command that trains it; an existing file or a built-in name is a UsageError, never
    overwritten."""
    if not NAME.fullmatch(name):
        raise UsageError(f"'{name}': a use case's name is lower-case letters, digits, - and _ (e.g. grapes)")
    if name in USECASES:
        raise UsageError(f"'{name}' is a built-in use case; choose another name")
    folder = Path(folder) if folder is not None else user_dir()
    path = folder / f"{name}.toml"
    if path.exists():
        raise UsageError(f"{path} exists; init never overwrites a use-case file (edit it, or choose another name)")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as handle:  # "x": another init at the same moment cannot be overwritten
            handle.write(text)
    except FileExistsError:
        raise UsageError(f"{path} exists; init never overwrites a use-case file (edit it, or choose another name)") from None
    print(text, end="" if text.endswith("\n") else "\n")
    print(f"# wrote {path}\n# next: make train-{name}    (or: python -m pipelines train {name})")
    return path
