"""What a run could not send while its tracking server was away: kept on disk, sent later.

A training run outlives a tracking server that restarts, loses its network or runs out of
disk: the run goes on, every metric, param, tag and artifact it could not send is appended to
`models/<usecase>/unsent/<run_id>/` (artifacts copied there, since they may be temporary), and
the next run of the use case that reaches the server sends them into the same MLflow run and
closes it with the status it ended with.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from pipelines.core import paths

JOURNAL_FILE = "journal.jsonl"


def unsent_dir(usecase: str) -> Path:
    return paths.usecase_models_dir(usecase) / "unsent"


def is_unreachable(exc: BaseException) -> bool:
    """A server that cannot be reached (refused, reset, timed out), not a request it rejected."""
    signs = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
             "Read timed out", "Connection aborted", "RemoteDisconnected", "Connection reset")
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(sign in str(exc) for sign in signs)


class Journal:
    """An append-only record of one run's tracking calls, replayable in order."""

    def __init__(self, usecase: str, run_id: str):
        self.run_id = run_id
        self.folder = unsent_dir(usecase) / run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def add(self, kind: str, **payload: Any) -> None:
        for key in ("path",):  # artifacts: keep a copy, the original may be a temporary file
            if key in payload:
                source = Path(payload[key])
                copy = self.folder / "artifacts" / uuid.uuid4().hex / source.name
                copy.parent.mkdir(parents=True)
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
                payload[key] = str(copy.relative_to(self.folder))
        record = {"kind": kind, "time_ms": int(time.time() * 1000), **payload}
        with open(self.folder / JOURNAL_FILE, "a") as journal:
            journal.write(json.dumps(record, default=str) + "\n")
        self.count += 1


def replay(client, folder: Path) -> int:
    """Send one journal to its run, in order, and delete it; returns how many records were sent.
    Raises (leaving the journal in place) if the server is still away."""
    from mlflow.entities import Metric, Param, RunTag

    run_id = folder.name
    lines = (folder / JOURNAL_FILE).read_text().splitlines() if (folder / JOURNAL_FILE).is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    existing_params = client.get_run(run_id).data.params
    for record in records:
        kind = record["kind"]
        if kind == "metrics":
            metrics = [Metric(k, float(v), record["time_ms"], record.get("step") or 0) for k, v in record["values"].items()]
            client.log_batch(run_id, metrics=metrics)
        elif kind == "params":
            fresh = [Param(k, str(v)) for k, v in record["values"].items() if k not in existing_params]
            client.log_batch(run_id, params=fresh)
        elif kind == "tags":
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in record["values"].items()])
        elif kind == "artifact":
            path = folder / record["path"]
            (client.log_artifacts if path.is_dir() else client.log_artifact)(run_id, str(path), record.get("folder"))
        elif kind == "dict":
            client.log_dict(run_id, record["data"], record["name"])
        elif kind == "table":
            client.log_table(run_id, record["data"], record["name"])
        elif kind == "text":
            client.log_text(run_id, record["text"], record["name"])
        elif kind == "end":
            client.set_terminated(run_id, record["status"])
    shutil.rmtree(folder)
    return len(records)


def replay_pending(client, usecase: str, say) -> None:
    """Send every journal kept for `usecase`; a server still away leaves them for next time."""
    root = unsent_dir(usecase)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            sent = replay(client, folder)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the journal stays for next time
            say(f"note: could not yet send the tracking kept in {folder} ({type(exc).__name__}); it stays there")
            continue
        say(f"[{usecase}] sent {sent} tracking records kept while the server was away to MLflow run {folder.name}")
