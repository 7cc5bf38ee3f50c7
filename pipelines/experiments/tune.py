"""Hyperparameter search on Optuna, shared by any number of workers through the study's storage.

    python -m pipelines tune digits --data sample --trials 8 \\
        --space "learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5) batch_size=choice(64,128,256)"

The space is space-separated `KEY=KIND(...)`: `float(a,b)`, `log(a,b)` (a float drawn on a log
scale), `int(a,b)`, `choice(v1,v2,...)` (a tuple value in brackets, as in `sweep`). Keys mean what
they mean to `--set`; every range is checked against the key's declared domain (both ends, and
the rules across keys) before any trial runs, so `dropout=float(0,1.5)` fails in a second.

**Chosen on validation data only.** A trial is fitted and scored on validation data
(`Task.selection_metric`: `validation_accuracy` for digits, the cross-validated mean where the
task cross-validates); the test split is never scored for a trial. When the study is done the
best trial's settings are trained once more as an ordinary run (same seed: the same model),
scored on the test split, exported, registered and gated like any run: that test figure is the
search's only one, reported as the best trial's. Trials report the per-epoch validation metric
(`spec.primary_metric`) to Optuna's pruner (median by default); a pruned trial's MLflow run ends
KILLED, tagged `trial_state=PRUNED`.

**One study, many workers.** The study lives in an RDB storage (`--storage`, default a SQLite
file beside the models; `postgresql+psycopg://...` for several hosts). Its first worker creates
it with the whole budget queued as `--trials` waiting trials, and one MLflow parent run; any
worker started with the same command (here or on another host) takes waiting trials one at a
time, which Optuna's storage hands out atomically: together they run exactly `--trials`
trials. Each trial's worker keeps a heartbeat; a trial whose worker died goes stale, Optuna
marks it failed and queues it again with the same params (its MLflow run is marked FAILED).
Restarting the command continues the study and never reruns a finished trial.

Each trial samples with its own seed (`--seed` + trial number), so two workers never draw the
same point from the same history, and a study replayed in the same order draws the same points.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket
import threading
import time
import warnings
from pathlib import Path

from pipelines.core import paths
from pipelines.core.console import say
from pipelines.core.errors import PipelineError, UsageError
from pipelines.core.runtime import many_models_in_one_process
from pipelines.evaluation.plots import _pyplot
from pipelines.experiments.compare import build_comparison, render_terminal, write_outputs
from pipelines.pipeline import run_train
from pipelines.tasks import get_task
from pipelines.tracking.tracker import Tracker, git_commit, mlflow_client, tracking_uri
from pipelines.usecases.settings import apply_overrides, domain_of_key, flatten, resolve_key

KINDS = ("float", "log", "int", "choice")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
DEFAULT_HEARTBEAT = 30  # seconds; a trial is stale (its worker dead) after two missed beats
JOIN_WAIT_SECONDS = 120  # how long a second worker waits for the first to set the study up


class PrunedTrial(PipelineError):
    """Raised from the epoch hook when Optuna's pruner stops a trial: its run ends KILLED."""

    run_status = "KILLED"


# --- the space ---------------------------------------------------------------------------------


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
                raise UsageError(f"value list '{text}': ']' without '['")
            if depth == 0:
                continue
        if character == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += character
    if depth:
        raise UsageError(f"value list '{text}': '[' without ']'")
    values.append(current)
    return [value.strip() for value in values]


@dataclasses.dataclass(frozen=True)
class Dimension:
    key: str  # resolved, e.g. `train.learning_rate`: also the Optuna param name
    kind: str  # float, log, int, choice
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()  # Optuna-storable values (numbers parsed; tuples and names as their text)

    def suggest(self, trial):
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.kind == "log")

    def describe(self) -> str:
        inside = ",".join(f"[{c}]" if "," in str(c) else str(c) for c in self.choices) if self.kind == "choice" \
            else f"{self.low:g},{self.high:g}"
        return f"{self.key}={self.kind}({inside})"


@dataclasses.dataclass(frozen=True)
class Space:
    dimensions: tuple

    @classmethod
    def parse(cls, base, text: str) -> Space:
        dimensions = []
        for token in text.split():
            dimensions.append(_parse_dimension(base, token))
        if not dimensions:
            raise UsageError('--space is empty: give e.g. --space "learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5)"')
        keys = [d.key for d in dimensions]
        if len(set(keys)) < len(keys):
            raise UsageError(f"--space names one setting twice: {' '.join(keys)}")
        if "model.builder" in keys and any(k.startswith("model.") and k != "model.builder" for k in keys):
            raise UsageError("--space searches model.builder together with model parameters: search one builder at a time")
        return cls(tuple(dimensions))

    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    def apply(self, base, params: dict):
        """The spec of one point; a builder first, so its parameters apply to it."""
        return apply_overrides(base, dict(sorted(params.items(), key=lambda item: item[0] != "model.builder")))

    def describe(self) -> str:
        return " ".join(d.describe() for d in self.dimensions)

    def grid(self) -> dict:
        """The space as Optuna's GridSampler takes it: every dimension a choice."""
        ranges = [d.describe() for d in self.dimensions if d.kind != "choice"]
        if ranges:
            raise UsageError(f"--sampler grid takes choice(...) dimensions only, not {' '.join(ranges)}")
        return {d.key: list(d.choices) for d in self.dimensions}

    def grid_size(self) -> int:
        size = 1
        for choices in self.grid().values():
            size *= len(choices)
        return size


def _parse_dimension(base, token: str) -> Dimension:
    key, sep, value = token.partition("=")
    match = re.fullmatch(r"(\w+)\((.*)\)", value.strip())
    if not sep or not key or not match:
        raise UsageError(f"--space expects KEY=KIND(...) (KIND: {', '.join(KINDS)}) separated by spaces, got '{token}'")
    kind, inside = match.group(1), match.group(2)
    if kind not in KINDS:
        raise UsageError(f"--space {token}: unknown kind '{kind}'; use one of {', '.join(KINDS)}")
    try:
        path = resolve_key(base, key)
    except UsageError as error:
        raise UsageError(f"--space {token}: {error}") from None
    current = flatten(base)[path]
    domain = domain_of_key(base, path)

    def check(value, shown) -> None:
        if domain is not None and not isinstance(value, str) and not domain.admits(value):
            raise UsageError(f"--space {token}: {shown} is outside {path}'s domain ({domain.allowed()})")
        try:
            apply_overrides(base, {path: value})  # the rules across keys (warmup < epochs, ...)
        except UsageError as error:
            raise UsageError(f"--space {token}: {error}") from None

    if kind == "choice":
        raws = split_values(inside)
        if not all(raws):
            raise UsageError(f"--space {token}: an empty choice")
        choices = []
        for raw in raws:
            storable = raw
            if isinstance(current, (int, float)) and not isinstance(current, bool):
                try:
                    storable = type(current)(raw)
                except ValueError:
                    raise UsageError(f"--space {token}: '{raw}' is not a{'n integer' if isinstance(current, int) else ' number'}") from None
            check(storable, raw)
            choices.append(storable)
        if len(set(map(str, choices))) < len(choices):
            raise UsageError(f"--space {token}: a choice is listed twice")
        return Dimension(path, kind, choices=tuple(choices))

    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise UsageError(f"--space {token}: {path} is not a number; use choice(...)")
    if kind in ("float", "log") and isinstance(current, int):
        raise UsageError(f"--space {token}: {path} is an integer; use int(a,b) or choice(...)")
    if kind == "int" and not isinstance(current, int):
        raise UsageError(f"--space {token}: {path} is a float; use float(a,b) or log(a,b)")
    ends = [part.strip() for part in inside.split(",")]
    try:
        low, high = (int(e) if kind == "int" else float(e) for e in ends) if len(ends) == 2 else (None, None)
    except ValueError:
        low = high = None
    if low is None:
        raise UsageError(f"--space {token}: {kind}(a,b) takes two {'integers' if kind == 'int' else 'numbers'}")
    if not low < high:
        raise UsageError(f"--space {token}: the range is empty (a must be below b)")
    if kind == "log" and low <= 0:
        raise UsageError(f"--space {token}: log(a,b) needs a > 0")
    check(low, f"{low:g}")
    check(high, f"{high:g}")
    return Dimension(path, kind, low, high)


def label(params: dict) -> str:
    """A trial's run name: `learning_rate=0.0031 dropout=0.27`."""
    shown = (f"{v:.3g}" if isinstance(v, float) else str(v) for v in params.values())
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(params, shown))


# --- the study and its storage -----------------------------------------------------------------


def default_storage() -> str:
    """One machine: a SQLite file beside the models (workers on this machine share it)."""
    return f"sqlite:///{paths.models_root() / 'optuna.db'}"


def default_study_name(spec, space: Space) -> str:
    """Same use case, base settings and space: the same study (so rerunning continues it)."""
    keys = space.keys()
    base = {k: str(v) for k, v in flatten(spec).items() if k not in keys}
    identity = json.dumps({"usecase": spec.name, "base": base, "space": space.describe()}, sort_keys=True)
    return f"{spec.name}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


def shown_url(url: str) -> str:
    """The storage URL without its password, for tags and messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: RDBStorage will say so
        return url


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module prints what a trial did
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_storage(url: str, heartbeat: int):
    """Optuna's RDB storage with a heartbeat; a stale trial is queued again with its params."""
    optuna = _optuna()
    if url.startswith("postgresql://"):  # SQLAlchemy's default driver for it (psycopg2) is not installed
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # several workers on one file wait for its lock
    else:
        engine = {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        except Exception as exc:  # a URL it cannot read, a server not there: one line
            # Workers started together on a new database all create Optuna's tables; all but one
            # collide (PostgreSQL: a unique violation on the new type): the tables exist, try again.
            if type(exc).__name__ == "IntegrityError" and attempt < 4:
                time.sleep(1 + attempt)
                continue
            raise PipelineError(f"Optuna storage {shown_url(url)}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None


def make_sampler(name: str, seed: int, number: int, trials: int, space: Space):
    optuna = _optuna()
    if name == "grid":
        return _queued_grid_sampler()(space.grid(), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed + number)
    # TPE's default of 10 random trials first would make a budget of 8 a random search.
    return optuna.samplers.TPESampler(seed=seed + number, n_startup_trials=max(2, min(10, trials // 3)))


def _queued_grid_sampler():
    """Optuna's GridSampler, minus its `study.stop()` after the last point: the study's queued
    budget (one waiting trial per point) ends it, and `stop` outside `optimize` raises. Trial n
    takes grid point n (GridSampler's rule for the first len(grid) trials): with trials claimed
    atomically, every point runs exactly once over any number of workers."""
    optuna = _optuna()

    class QueuedGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            return None

    return QueuedGridSampler


def make_pruner(name: str):
    optuna = _optuna()
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


@dataclasses.dataclass
class Study:
    name: str
    storage: object  # optuna.storages.RDBStorage
    url: str
    parent_run_id: str
    study_id: int


def join_study(spec, space: Space, trials: int, name: str, url: str, storage, settings: dict, parent: dict) -> Study:
    """Create the study with its queued budget and MLflow parent run, or join the one that
    exists. Creation is atomic in the storage (a unique study name): of two workers started
    together one creates, the other waits until the study is set up."""
    optuna = _optuna()
    identity = {"usecase": spec.name, "space": space.describe(), "trials": trials,
                "base": json.dumps({k: str(v) for k, v in flatten(spec).items() if k not in space.keys()}, sort_keys=True)}
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=storage), False
    if created:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        for _ in range(trials):  # the budget: waiting trials, their params drawn when a worker takes one
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING))
        parent_run_id = _create_parent(spec, space, trials, name, url, settings, parent)
        study.set_user_attr("mlflow_parent_run_id", parent_run_id)  # set last: the study is ready
        say(f"[{spec.name}] study {name} created in {shown_url(url)}: {trials} trials, MLflow parent run {parent_run_id}")
    else:
        deadline = time.monotonic() + JOIN_WAIT_SECONDS
        while "mlflow_parent_run_id" not in study.user_attrs:
            if time.monotonic() > deadline:
                raise PipelineError(f"study {name} in {shown_url(url)} exists but was never set up (its first worker died "
                                    "while creating it): name another --study")
            time.sleep(0.5)
        attrs = study.user_attrs
        for key, value in identity.items():
            if attrs.get(key) != value:
                shown = {"trials": "--trials", "space": "--space", "base": "--data/--set", "usecase": "use case"}[key]
                raise UsageError(f"study {name} was created with another {shown} ({str(attrs.get(key))[:200]}): "
                                 "run it as it was created, or name another --study")
        say(f"[{spec.name}] joining study {name} in {shown_url(url)} (MLflow parent run {attrs['mlflow_parent_run_id']})")
    return Study(name, storage, url, study.user_attrs["mlflow_parent_run_id"], storage.get_study_id_from_name(name))


def _create_parent(spec, space: Space, trials: int, name: str, url: str, settings: dict, parent: dict) -> str:
    """The study's MLflow run, left RUNNING until its best trial is scored."""
    Tracker(spec.name)  # opens (or creates, with its artifact location) the use case's experiment
    client = mlflow_client()
    experiment = client.get_experiment_by_name(spec.name)
    tags = {"verb": "tune", "usecase": spec.name, "data_source": spec.data.source, "git_commit": git_commit(),
            "tune_study": name, "tune_storage": shown_url(url), "tune_space": space.describe(), "tune_trials": str(trials),
            **{f"tune_{k}": str(v) for k, v in settings.items()}, **parent.get("tags", {})}
    return client.create_run(experiment.experiment_id, run_name=parent.get("name", f"tune {name}"), tags=tags).info.run_id


def claim_trial(study: Study):
    """A waiting trial of the study, now RUNNING and this worker's; None when none is waiting.
    The storage's WAITING -> RUNNING update succeeds for one worker only (a row lock)."""
    optuna = _optuna()
    TrialState = optuna.trial.TrialState
    for trial in study.storage.get_all_trials(study.study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = study.storage.get_trial_id_from_study_id_trial_number(study.study_id, trial.number)
        try:
            if study.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                study.storage.record_heartbeat(trial_id)  # alive from the start, before the first beat of its thread
                return trial_id, trial
        except (optuna.exceptions.UpdateFinishedTrialError, optuna.exceptions.StorageInternalError):
            continue  # another worker took it (SQLite: its write lock won)
    return None


def counts(study: Study) -> dict:
    optuna = _optuna()
    states = [t.state.name for t in study.storage.get_all_trials(study.study_id, deepcopy=False)]
    return {state.name: states.count(state.name) for state in optuna.trial.TrialState}


class Heartbeat:
    """Records the trial's heartbeat in the storage while it runs (a thread: TensorFlow
    releases the GIL while it trains)."""

    def __init__(self, storage, trial_id: int, interval: int):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a missed beat; the next one may get through
                pass
            if self.stop.wait(self.interval):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


class TrialHooks:
    """What `run_train` calls for a trial: the MLflow run's id kept on the Optuna trial, and the
    per-epoch validation metric reported to the pruner."""

    def __init__(self, trial, metric: str | None):
        self.trial, self.metric, self.run_id = trial, metric, None

    def started(self, run_id: str) -> None:
        self.run_id = run_id
        self.trial.set_user_attr("mlflow_run_id", run_id)

    def epoch_end(self, epoch: int, logs: dict) -> None:
        if self.metric is None or self.metric not in logs:
            return
        self.trial.report(float(logs[self.metric]), epoch)
        if self.trial.should_prune():
            raise PrunedTrial(f"trial {self.trial.number} pruned after epoch {epoch + 1}: {self.metric} {logs[self.metric]:.4f}")


# --- the worker ----------------------------------------------------------------------------------


def run_tune(spec, space: str | Space, trials: int, study_name: str | None = None, storage_url: str | None = None,
             sampler: str = "tpe", pruner: str = "median", seed: int | None = None, timeout: float | None = None,
             heartbeat: int = DEFAULT_HEARTBEAT, out_dir: str | Path | None = None, parent: dict | None = None) -> dict:
    """The `tune` verb, one worker: check the space, join (or create) the study, run waiting
    trials until none is left, and score the best trial on test data once the study is done.
    `space` is the `--space` text or a Space (`sweep` builds its grid's); `parent` holds the
    MLflow parent run's `name` and extra `tags` (a sweep's)."""
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler {sampler}: use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UsageError(f"--pruner {pruner}: use one of {', '.join(PRUNERS)}")
    if heartbeat < 1:
        raise UsageError(f"--heartbeat must be at least 1 second, got {heartbeat}")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {timeout}")
    if not isinstance(space, Space):
        space = Space.parse(spec, space)  # before anything is created or trained
    if sampler == "grid" and trials != space.grid_size():
        raise UsageError(f"--sampler grid runs each of the grid's {space.grid_size()} points once: give --trials {space.grid_size()}")
    task = get_task(spec.task)
    metric = task.selection_metric(task.prepare(spec))
    seed = spec.train.seed if seed is None else seed
    name = study_name or default_study_name(spec, space)
    url = storage_url or default_storage()
    storage = open_storage(url, heartbeat)
    study = join_study(spec, space, trials, name, url, storage,
                       {"sampler": sampler, "pruner": pruner, "seed": seed, "selection_metric": metric}, parent or {})
    prune_on = spec.primary_metric if spec.primary_metric.startswith("val_") else None
    many_models_in_one_process()  # a model per trial, and the best's retrain
    started, ran, told_last, timed_out = time.monotonic(), 0, False, False
    optuna = _optuna()
    while True:
        if timeout is not None and time.monotonic() - started > timeout:
            timed_out = True
            say(f"[{spec.name}] --timeout {timeout:g} s reached: this worker takes no more trials")
            break
        optuna.storages.fail_stale_trials(optuna.load_study(study_name=name, storage=storage))
        claimed = claim_trial(study)
        if claimed is None:
            if not counts(study)["RUNNING"]:
                break
            time.sleep(min(heartbeat, 5))  # other workers' trials: they finish, or go stale and come back
            continue
        trial_id, frozen = claimed
        left = _run_trial(spec, space, study, trial_id, frozen, metric, prune_on, sampler, pruner, seed, trials)
        ran += 1
        told_last = not left["WAITING"] and not left["RUNNING"]
    state = counts(study)
    say(f"[{spec.name}] study {name}: {state['COMPLETE']} complete, {state['PRUNED']} pruned, {state['FAIL']} failed, "
        f"{state['RUNNING']} running, {state['WAITING']} waiting; this worker ran {ran}")
    result = {"study": name, "storage": shown_url(url), "parent_run_id": study.parent_run_id, "ran": ran, "counts": state}
    # The worker that finished the study's last trial scores its best (or one that found it done,
    # or stopped by --timeout with nothing running): once, not by every worker.
    if not state["RUNNING"] and (told_last or ran == 0 or timed_out) and (not state["WAITING"] or timed_out):
        result.update(score_best(spec, space, study, metric, out_dir))
    elif not state["RUNNING"] and not state["WAITING"]:
        say(f"[{spec.name}] study {name} done; the worker that ran its last trial scores the best one")
    return result


def _run_trial(spec, space: Space, study: Study, trial_id: int, frozen, metric: str, prune_on, sampler: str,
               pruner: str, seed: int, trials: int) -> dict:
    """One trial, start to `tell`; returns the study's trial counts after it."""
    optuna = _optuna()
    TrialState = optuna.trial.TrialState
    number = frozen.number
    handle = optuna.load_study(study_name=study.name, storage=study.storage,
                               sampler=make_sampler(sampler, seed, number, trials, space), pruner=make_pruner(pruner))
    handle.get_trials(deepcopy=False)  # the handle's cache learns this trial
    handle.sampler.before_trial(handle, study.storage.get_trial(trial_id))  # what study.ask() does: the grid's point
    trial = optuna.trial.Trial(handle, trial_id)
    client = mlflow_client()
    with Heartbeat(study.storage, trial_id, study.storage.get_heartbeat_interval()):
        params = {d.key: d.suggest(trial) for d in space.dimensions}
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        retried = frozen.system_attrs.get("failed_trial")
        if retried is not None and frozen.user_attrs.get("mlflow_run_id"):
            dead = frozen.user_attrs["mlflow_run_id"]  # the run of the worker that died, still RUNNING
            client.set_tag(dead, "trial_state", "FAIL")
            client.set_tag(dead, "tune_retried_as", str(number))
            client.set_terminated(dead, "FAILED")
        shown = label(params)
        say(f"[{spec.name}] trial {number}{f' (retry of trial {retried})' if retried is not None else ''}: {shown}")
        try:
            trial_spec = get_task(spec.task).for_selection(space.apply(spec, params))
        except UsageError as error:  # a point of the space breaks a rule across keys: this trial only
            trial.set_user_attr("error", str(error))
            handle.tell(trial, state=TrialState.FAIL)
            say(f"[{spec.name}] trial {number} failed: {error}")
            return counts(study)
        hooks = TrialHooks(trial, prune_on)
        tags = {"mlflow.parentRunId": study.parent_run_id, "tune_study": study.name, "tune_trial": number,
                "trial_state": "RUNNING"}
        try:
            summary = run_train(trial_spec, run_name=f"trial {number}: {shown}", tags=tags, trial=hooks)
        except PrunedTrial as pruned:
            handle.tell(trial, state=TrialState.PRUNED)
            _tag(client, hooks.run_id, "PRUNED")
            say(f"[{spec.name}] {pruned}")
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another worker took this one for dead (its heartbeats came late: an overloaded
            # machine) and queued it again: that copy counts, this run does not.
            _tag(client, hooks.run_id, "FAIL")
            say(f"warning: [{spec.name}] trial {number} was failed by another worker (heartbeat older than the grace period "
                f"of {2 * study.storage.get_heartbeat_interval()} s) and queued again; raise --heartbeat on a loaded machine")
        except KeyboardInterrupt:
            # Queued again now, not after the heartbeat's grace period.
            handle.tell(trial, state=TrialState.FAIL)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(handle, study.storage.get_trial(trial_id))
            _tag(client, hooks.run_id, "FAIL")
            raise
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:1000])
            handle.tell(trial, state=TrialState.FAIL)
            _tag(client, hooks.run_id, "FAIL")
            raise
        else:
            handle.tell(trial, summary["value"])
            _tag(client, hooks.run_id, "COMPLETE")
    return counts(study)


def _tag(client, run_id: str | None, state: str) -> None:
    if run_id:
        client.set_tag(run_id, "trial_state", state)


# --- the end of a study --------------------------------------------------------------------------


def score_best(spec, space: Space, study: Study, metric: str, out_dir=None) -> dict:
    """Train the best trial's settings once more as an ordinary run (test scored, exported,
    registered and gated), put the study's outcome and Optuna's plots on the parent run, and
    print the trials ranked by `metric` (validation data)."""
    optuna = _optuna()
    handle = optuna.load_study(study_name=study.name, storage=study.storage)
    client = mlflow_client()
    parent = client.get_run(study.parent_run_id)
    complete = handle.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    result = {}
    if not complete:
        say(f"[{spec.name}] study {study.name}: no trial completed, nothing to score")
        return result
    best = handle.best_trial
    result.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                  best_trial_run_id=best.user_attrs.get("mlflow_run_id"))
    say(f"[{spec.name}] best trial {best.number}: {metric} {best.value:.4f} on validation data ({label(best.params)})")
    if parent.data.tags.get("tune_scored_trial") == str(best.number):
        say(f"[{spec.name}] its test score is on run {parent.data.tags.get('tune_scored_run_id')} already")
        result["scored_run_id"] = parent.data.tags.get("tune_scored_run_id")
    else:
        say(f"[{spec.name}] training the best trial's settings once more, scored on the test split this once")
        summary = run_train(space.apply(spec, best.params), run_name=f"best trial {best.number}: {label(best.params)}",
                            tags={"mlflow.parentRunId": study.parent_run_id, "tune_study": study.name,
                                  "tune_role": "best", "tune_trial": best.number})
        ranking = get_task(spec.task).prepare(spec).ranking_metric
        tested = client.get_run(summary["run_id"]).data.metrics.get(ranking)
        result.update(scored_run_id=summary["run_id"], test_metric=ranking, test_value=tested)
        client.set_tag(study.parent_run_id, "tune_scored_trial", str(best.number))
        client.set_tag(study.parent_run_id, "tune_scored_run_id", summary["run_id"])
        if tested is not None:
            client.log_metric(study.parent_run_id, f"best_trial_{ranking}", tested)
            say(f"[{spec.name}] best trial {best.number} on the test split: {ranking} {tested:.4f} "
                "(the search's only test figure: trials were chosen on validation data)")
    client.set_tag(study.parent_run_id, "tune_best_trial", str(best.number))
    client.set_tag(study.parent_run_id, "tune_best_run_id", str(best.user_attrs.get("mlflow_run_id")))
    client.set_tag(study.parent_run_id, "tune_best_params", json.dumps(best.params))
    for key, value in best.params.items():
        client.set_tag(study.parent_run_id, f"best.{key}", str(value))  # tags: a continued study may find another best
    client.log_metric(study.parent_run_id, f"best_{metric}", best.value)
    state = counts(study)
    for name in ("COMPLETE", "PRUNED", "FAIL"):
        client.log_metric(study.parent_run_id, f"trials_{name.lower()}", state[name])

    comparison = build_comparison([spec.name], filter_string=f"tags.mlflow.parentRunId = '{study.parent_run_id}'")
    print()
    print(render_terminal(comparison))
    folder = Path(out_dir) if out_dir else paths.reports_root() / "tunes" / study.name
    files = write_outputs(comparison, folder) + _study_files(handle, folder)
    for path in files:
        client.log_artifact(study.parent_run_id, str(path), "study" if path.parent.name == "study" else "comparison")
    client.set_terminated(study.parent_run_id, "FINISHED")
    say(f"\n[{spec.name}] study {study.name}: trials, comparison and Optuna's plots in {folder}/ and on the parent run "
        f"{study.parent_run_id} ({tracking_uri()})")
    return result


def _study_files(handle, folder: Path) -> list[Path]:
    """trials.csv and Optuna's optimisation-history and parameter-importance plots (matplotlib)."""

    plt = _pyplot()
    import optuna.visualization.matplotlib as plots

    out = folder / "study"
    out.mkdir(parents=True, exist_ok=True)
    handle.trials_dataframe().to_csv(out / "trials.csv", index=False)
    files = [out / "trials.csv"]
    for name, plot in (("optimization_history.png", plots.plot_optimization_history),
                       ("param_importances.png", plots.plot_param_importances)):
        try:
            axes = plot(handle)
        except Exception as exc:  # noqa: BLE001 - e.g. importances need two completed trials that differ
            say(f"note: {name} not drawn ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        files.append(out / name)
    return files
