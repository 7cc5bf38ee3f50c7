"""One place for measured figures: `benchmarks/RESULTS.md`.

Each benchmark replaces its own section there (between `<!-- name -->` markers) and writes its
raw numbers to `benchmarks/results/<name>.json`, so a re-run updates the figures where people
read them; the README and spec comments point here instead of copying numbers that go stale.
Commit the two files after a run you want to keep.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
RESULTS_MD = FOLDER / "RESULTS.md"
HEADER = "# Measured results\n\nWritten by the benchmarks (`make bench-*`); each section is replaced when its benchmark runs again.\n"


def shown_path(path) -> str:
    """A path as the results show it: relative to the checkout (`../shared/...` beside it), so the
    figures name no machine's folders."""
    resolved = Path(path).expanduser().resolve()
    for base, prefix in ((FOLDER.parent, ""), (FOLDER.parent.parent, "../")):
        if resolved.is_relative_to(base):
            return prefix + str(resolved.relative_to(base))
    return str(path)


def machine() -> str:
    return f"{os.cpu_count()} CPU cores, {platform.machine()}, Python {platform.python_version()}"


def record(name: str, title: str, command: str, markdown: str, data) -> Path:
    """Replace section `name` of RESULTS.md with `markdown`; write results/<name>.json."""
    stamp = time.strftime("%Y-%m-%d")
    section = (f"<!-- {name} -->\n## {title}\n\n`{command}`, {stamp}, {machine()}\n\n{markdown.strip()}\n<!-- /{name} -->")
    text = RESULTS_MD.read_text() if RESULTS_MD.is_file() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    RESULTS_MD.write_text(text)
    (FOLDER / "results").mkdir(exist_ok=True)
    path = FOLDER / "results" / f"{name}.json"
    path.write_text(json.dumps({"date": stamp, "machine": machine(), "command": command, "data": data}, indent=2, default=str))
    return path
