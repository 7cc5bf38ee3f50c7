"""Sweeps: every point of a grid, once, as a study on Optuna's grid sampler (`tune`'s mechanism).

    python -m pipelines sweep skin --data sample --grid "class_weights=0,0.25,0.5 model.dropout=0.2,0.4"

The grid is space-separated `KEY=V1,V2,...`; keys and values mean what they mean to
`--set` (`epochs` or `train.epochs`), and every point is resolved before anything trains,
so a typo fails in a second. A value that is itself a tuple goes in brackets, one bracket
per point: `model.stages=[32,64,128],[48,96,192]` is two points (commas outside brackets
separate points, commas inside separate a tuple's items).

A sweep is `tune` with every key a `choice(...)` and Optuna's GridSampler: one waiting trial
per point, trial n takes point n, so the points run exactly once over any number of workers
(`--storage`), a killed worker's point is queued again, and running the command again
continues the study (its use case, base settings and grid) and never reruns a finished point.
Points are trials: fitted and ranked on validation data (`Task.selection_metric`, the
cross-validated mean where the task cross-validates), never on the test split; the best point
alone is then trained again, scored on test, exported and gated (pipelines/experiments/tune.py).
"""

from __future__ import annotations

import dataclasses
import itertools

from pipelines.core import paths
from pipelines.core.errors import UsageError
from pipelines.experiments.tune import DEFAULT_HEARTBEAT, Dimension, Space, default_study_name, run_tune, split_values
from pipelines.usecases.settings import apply_overrides, flatten, resolve_key


@dataclasses.dataclass(frozen=True)
class Point:
    """One setting of the swept keys: its overrides and the spec they give."""

    overrides: dict  # resolved key (`train.class_weights`) -> raw text as given
    spec: object  # pipelines.core.spec.Spec with the overrides applied

    @property
    def values(self) -> dict:
        """Resolved key -> the parsed value in the spec (so `0` and `0.0` are one point)."""

        flat = flatten(self.spec)
        return {key: flat[key] for key in self.overrides}

    @property
    def key(self) -> tuple:
        """What makes two points one (`0` and `0.0` are the same value)."""
        return tuple(sorted((k, str(v)) for k, v in self.values.items()))

    @property
    def label(self) -> str:
        """The child run's name, e.g. `class_weights=0.5 dropout=0.2`."""
        return " ".join(f"{key.rsplit('.', 1)[-1]}={_show(value)}" for key, value in self.values.items())


def _show(value) -> str:
    return "[" + ",".join(map(str, value)) + "]" if isinstance(value, tuple) else str(value)


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

    def space(self) -> Space:
        """The grid as `tune`'s space: each key a choice of its distinct values, stored as Optuna
        stores them (numbers as numbers, a tuple as its `--set` text). Built here, not parsed by
        Space.parse: the points above were resolved whole, so a builder may change with its
        parameters."""
        dimensions = {}
        for point in self.points():
            for key, value in point.values.items():
                stored = ",".join(map(str, value)) if isinstance(value, tuple) else value
                choices = dimensions.setdefault(key, [])
                if stored not in choices:
                    choices.append(stored)
        return Space(tuple(Dimension(key, "choice", choices=tuple(choices)) for key, choices in sorted(dimensions.items())))


def run_sweep(spec, grid_text: str, out_dir=None, study_name: str | None = None, storage_url: str | None = None,
              heartbeat: int = DEFAULT_HEARTBEAT, timeout: float | None = None) -> dict:
    """The `sweep` verb, one worker: parse and validate the grid, then run it as a grid study."""
    grid = Grid.parse(spec, grid_text)
    space = grid.space()
    if space.grid_size() != len(grid.points()):  # e.g. `false` and `0` given for one key: one value to Optuna
        raise UsageError(f"--grid {grid.describe()}: two values of one key are the same setting; list each once")
    name = study_name or default_study_name(spec, space)
    folder = out_dir or paths.reports_root() / "sweeps" / name
    return run_tune(spec, space, space.grid_size(), study_name=name, storage_url=storage_url, sampler="grid", pruner="none",
                    heartbeat=heartbeat, timeout=timeout, out_dir=folder,
                    parent={"name": f"sweep {grid.describe()}", "tags": {"sweep_grid": grid.describe()}})
