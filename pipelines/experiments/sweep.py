"""Sweeps: train every point of a grid as a child run of one MLflow parent run, then compare.

    python -m pipelines sweep skin --data sample --grid "class_weights=0,0.25,0.5 model.dropout=0.2,0.4"

The grid is space-separated `KEY=V1,V2,...`; keys and values mean what they mean to
`--set` (`epochs` or `train.epochs`), and every point is resolved before anything trains,
so a typo fails in a second. A value that is itself a tuple goes in brackets, one bracket
per point: `model.stages=[32,64,128],[48,96,192]` is two points (commas outside brackets
separate points, commas inside separate a tuple's items).

A sweep is identified by its use case, its base settings (`--data`, `--set`) and its grid
keys. Running it again reopens the same parent run and skips every point whose child run
FINISHED; an interrupted point resumes from its backup (`train`'s resume mechanism) or is
rerun. Adding values to a key continues the same sweep with the new points only.

Points are ranked by the use case's ranking metric on validation data (`Task.selection_metric`,
e.g. `validation_accuracy`; the cross-validated mean where the task cross-validates), never by
the test split. A search over ranges, on many workers, is `tune` (pipelines/experiments/tune.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterable
from pathlib import Path

from pipelines.core import paths
from pipelines.core.errors import UsageError
from pipelines.experiments.compare import build_comparison, render_terminal, write_outputs
from pipelines.pipeline import run_train, say
from pipelines.tasks import get_task
from pipelines.tracking.tracker import Tracker, configured_mlflow, git_commit, tracking_uri
from pipelines.usecases.settings import apply_overrides, flatten, resolve_key


@dataclasses.dataclass(frozen=True)
class Point:
    """One setting of the swept keys: its overrides, the spec they give, and its identity."""

    overrides: dict  # resolved key (`train.class_weights`) -> raw text as given
    spec: object  # pipelines.core.spec.Spec with the overrides applied

    @property
    def values(self) -> dict:
        """Resolved key -> the parsed value in the spec (so `0` and `0.0` are one point)."""

        flat = flatten(self.spec)
        return {key: flat[key] for key in self.overrides}

    @property
    def key(self) -> str:
        """What identifies the point across reruns: tagged on its child run as `sweep_point`."""
        return json.dumps({k: str(v) for k, v in sorted(self.values.items())}, sort_keys=True)

    @property
    def label(self) -> str:
        """The child run's name, e.g. `class_weights=0.5 dropout=0.2`."""
        return " ".join(f"{key.rsplit('.', 1)[-1]}={_show(value)}" for key, value in self.values.items())


def _show(value) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)


def split_values(text: str) -> list[str]:
    """`0,0.25` -> ['0', '0.25']; `[32,64],[48,96]` -> ['32,64', '48,96'] (a bracket is one tuple)."""
    values, depth, current = [], 0, ""
    for character in text:
        if character == "[":
            depth += 1
            if depth == 1:
                continue
        elif character == "]":
            depth -= 1
            if depth < 0:
                raise UsageError(f"--grid value '{text}': ']' without '['")
            if depth == 0:
                continue
        if character == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += character
    if depth:
        raise UsageError(f"--grid value '{text}': '[' without ']'")
    values.append(current)
    return [value.strip() for value in values]


@dataclasses.dataclass(frozen=True)
class Grid:
    """Every combination of each key's values (the only point source built in)."""

    base: object  # the Spec the points start from (after --data / --set)
    axes: tuple  # ((key as given, (raw value, ...)), ...)

    @classmethod
    def parse(cls, base, text: str) -> Grid:
        axes = []
        for token in text.split():
            key, sep, values = token.partition("=")
            if not sep or not key or not values:
                raise UsageError(f"--grid expects KEY=V1,V2,... separated by spaces, got '{token}'")
            axes.append((key, tuple(split_values(values))))
        given = [key for key, _ in axes]
        if len(set(given)) < len(given):
            raise UsageError(f"--grid names a key twice: {' '.join(given)}")
        if not axes:
            raise UsageError('--grid is empty: give e.g. --grid "class_weights=0,0.5 model.dropout=0.2,0.4"')
        grid = cls(base, tuple(axes))
        grid.points()  # resolve and validate every point now, before anything trains
        return grid

    def points(self) -> list[Point]:
        # A builder change resets the model params: apply it before any param of the new builder.
        axes = sorted(self.axes, key=lambda axis: axis[0] not in ("builder", "model.builder"))
        points, seen_keys = [], {}
        for combination in itertools.product(*(values for _, values in axes)):
            raw = dict(zip((key for key, _ in axes), combination))
            try:
                spec = apply_overrides(self.base, raw)
                resolved = {resolve_key(spec, key): value for key, value in raw.items()}
            except UsageError as error:
                raise UsageError(f"--grid point {' '.join(f'{k}={v}' for k, v in raw.items())}: {error}") from None
            if len(resolved) < len(raw):
                raise UsageError(f"--grid names one setting twice: {', '.join(raw)}")
            point = Point(resolved, spec)
            if point.key not in seen_keys:  # `0` and `0.0` are the same point: train it once
                seen_keys[point.key] = True
                points.append(point)
        return points

    def keys(self) -> list[str]:
        return sorted(resolve_key(self.points()[0].spec, key) for key, _ in self.axes)

    def describe(self) -> str:
        return " ".join(f"{key}={','.join(f'[{v}]' if ',' in v else v for v in values)}" for key, values in self.axes)


def sweep_id(base, keys: list[str]) -> str:
    """Same use case, same base settings, same keys: the same sweep (and parent run)."""

    base_settings = {k: str(v) for k, v in flatten(base).items() if k not in keys}
    identity = json.dumps({"usecase": base.name, "base": base_settings, "keys": keys}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _find_runs(experiment: str, filter_string: str):
    mlflow = configured_mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return None
    return mlflow.search_runs(experiment_ids=[found.experiment_id], filter_string=filter_string,
                              order_by=["attributes.start_time ASC"])


def find_parent(experiment: str, identity: str) -> str | None:
    """The oldest parent run of this sweep, or None the first time."""
    runs = _find_runs(experiment, f"tags.verb = 'sweep' and tags.sweep_id = '{identity}'")
    return None if runs is None or not len(runs) else runs["run_id"].iloc[0]


def finished_points(experiment: str, parent_run_id: str) -> dict[str, str]:
    """`sweep_point` -> run id of the parent's FINISHED children."""
    runs = _find_runs(experiment, f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'")
    if runs is None or not len(runs) or "tags.sweep_point" not in runs:
        return {}
    return dict(zip(runs["tags.sweep_point"], runs["run_id"]))


def run_sweep(spec, grid_text: str, out_dir: str | Path | None = None):
    """The `sweep` verb: parse and validate the grid, then train its points (`run_points`)."""
    grid = Grid.parse(spec, grid_text)
    return run_points(spec, grid.points(), sweep_id(spec, grid.keys()), grid.describe(), out_dir)


def run_points(spec, points: Iterable[Point], identity: str, description: str, out_dir: str | Path | None = None):
    """Train each point not yet finished as a child of the sweep's parent run; end with the
    comparison of the children (printed, written, and logged to the parent run)."""

    points = list(points)
    parent_id = find_parent(spec.name, identity)
    tags = {"verb": "sweep", "sweep_id": identity, "sweep_grid": description, "usecase": spec.name,
            "data_source": spec.data.source, "git_commit": git_commit()}
    with Tracker(spec.name, run_name=f"sweep {description}", resume_run_id=parent_id, tags=tags) as parent:
        done = finished_points(spec.name, parent.run_id) if parent_id else {}
        verb = "continuing" if parent_id else "starting"
        say(f"[{spec.name}] {verb} sweep {identity} ({len(points)} points, MLflow parent run {parent.run_id}): {description}")
        for number, point in enumerate(points, 1):
            if point.key in done:
                say(f"[{spec.name}] point {number}/{len(points)} {point.label}: finished in run {done[point.key][:8]}, skipped")
                continue
            say(f"[{spec.name}] point {number}/{len(points)} {point.label}")
            run_train(point.spec, run_name=point.label, tags={"sweep_id": identity, "sweep_point": point.key})
        # Points are ranked on validation data (`Task.selection_metric`), never on the test split:
        # choosing by test would make every test figure of the chosen point optimistic.
        task = get_task(spec.task)
        selection = task.selection_metric(task.prepare(spec))
        comparison = build_comparison([spec.name], metric=selection, filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
        print()
        print(render_terminal(comparison))
        folder = Path(out_dir) if out_dir else paths.reports_root() / "sweeps" / f"{spec.name}-{identity}"
        for path in write_outputs(comparison, folder):
            parent.log_artifact(path, "comparison")
        say(f"\n[{spec.name}] sweep {identity}: comparison in {folder}/ and on the parent run {parent.run_id}")
    return {"parent_run_id": parent.run_id, "sweep_id": identity, "comparison": comparison}
