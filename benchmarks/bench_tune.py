"""A tuned run against the spec's default, on the full data of one use case, same training budget.

1. the default: `train` with the use case's own spec (its epochs), scored on the test split;
2. the search: `tune` with --trials trials of --trial-epochs epochs each (a short budget per
   trial, the usual protocol: rank settings cheaply on validation data, then train the chosen
   one fully), chosen on validation data only;
3. the tuned run: `train` with the best trial's settings and the spec's own epochs, so that it and
   the default differ only in the searched settings, scored on the same test split.

Both final runs are ranked once on the test split, which chose neither. The search's cost is
reported on top, beside the default's. Everything goes to its own store under
bench-results/tune/ (MLflow, models, the Optuna study); run again with the same settings, the
search continues its study (finished trials are not rerun), the two final runs train again.

Usage: python benchmarks/bench_tune.py [--usecase digits] [--trials 8] [--trial-epochs 2] [--space "..."] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from results import record, shown_path  # noqa: E402 - benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SCRATCH = REPO / "bench-results" / "tune"
SPACE = "learning_rate=log(1e-4,1e-2) model.dropout=float(0,0.5) batch_size=choice(64,128,256)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--usecase", default="digits")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--space", default=SPACE)
    parser.add_argument("--data-dir", help="the full data (default: ../shared/data/<usecase>)")
    arguments = parser.parse_args()
    data_dir = arguments.data_dir or str(SHARED / arguments.usecase)
    if not Path(data_dir).is_dir():
        parser.error(f"no full data at {data_dir}: give --data-dir")
    SCRATCH.mkdir(parents=True, exist_ok=True)  # the same settings again continue the study there (tune's rule)
    os.environ.update({"MLFLOW_TRACKING_URI": f"sqlite:///{SCRATCH / 'mlflow.db'}", "PIPELINES_MODELS_ROOT": str(SCRATCH / "models"),
                       "PIPELINES_REPORTS_ROOT": str(SCRATCH / "reports")})
    sys.path.insert(0, str(REPO))
    from pipelines.experiments.tune import Space, label, run_tune
    from pipelines.pipeline import run_train
    from pipelines.tasks import get_task
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    # No SavedModel export: the figures are the subject, and each export costs its verification.
    spec = apply_overrides(get_spec(arguments.usecase), {"data.data_dir": data_dir, "export.enabled": False})
    task = get_task(spec.task)
    ranking, selection = task.prepare(spec).ranking_metric, task.selection_metric(task.prepare(spec))
    space = Space.parse(spec, arguments.space)

    started = time.perf_counter()
    default = run_train(spec, run_name="default")
    default_seconds = time.perf_counter() - started

    searched = run_tune(apply_overrides(spec, {"train.epochs": arguments.trial_epochs}), space, arguments.trials,
                        out_dir=SCRATCH / "reports" / "study")
    search_seconds = trials_seconds(searched["study"])  # from the study: a continued one ran them earlier

    started = time.perf_counter()
    tuned = run_train(space.apply(spec, searched["best_params"]), run_name=f"tuned: {label(searched['best_params'])}")
    tuned_seconds = time.perf_counter() - started

    import mlflow

    client = mlflow.MlflowClient()
    rows = []
    for name, summary, seconds in (("default spec", default, default_seconds), ("tuned", tuned, tuned_seconds)):
        run = client.get_run(summary["run_id"])
        rows.append({"run": name, "params": {key: run.data.params.get(key) for key in space.keys()},
                     "validation": run.data.metrics.get(selection, float("nan")),
                     "test": run.data.metrics.get(ranking, float("nan")), "seconds": seconds,
                     "fit_seconds": run.data.metrics.get("fit_seconds")})
    states = searched["counts"]
    lines = [f"{arguments.usecase} on its full data ({shown_path(data_dir)}), {spec.train.epochs} epochs for both final runs; "
             f"the search: {arguments.trials} trials of {arguments.trial_epochs} epochs, Optuna TPE with the median pruner, chosen "
             f"on validation data ({states['COMPLETE']} complete, {states['PRUNED']} pruned, {states['FAIL']} failed), "
             f"space `{space.describe()}`.", "",
             f"| run | {' | '.join(key.rsplit('.', 1)[-1] for key in space.keys())} | validation ({selection}) "
             f"| test ({ranking}) | wall time |",
             "|---|" + "---|" * len(space.keys()) + "---|---|---|"]
    for row in rows:
        values = " | ".join(_shown(row["params"][key]) for key in space.keys())
        lines.append(f"| {row['run']} | {values} | {row['validation']:.4f} | **{row['test']:.4f}** | {row['seconds']:.0f} s |")
    retrained = client.get_run(searched["parent_run_id"]).data.metrics.get(f"best_trial_{ranking}", float("nan"))
    lines += ["", f"The search itself: {search_seconds:.0f} s of trials ({search_seconds / default_seconds:.1f}x the default "
              f"run), best trial {searched['best_trial']} at {searched['best_value']:.4f} on validation data after "
              f"{arguments.trial_epochs} epochs (its {arguments.trial_epochs}-epoch retrain on test: {retrained:.4f})."]
    markdown = "\n".join(lines)
    print("\n" + markdown)
    command = "make bench-tune" + (f" TUNE_USECASE={arguments.usecase}" if arguments.usecase != "digits" else "")
    record("tune", "Tuned against the spec's default, full data, same training budget", command, markdown,
           {"rows": rows, "search_seconds": search_seconds, "search": {**searched, "storage": shown_storage(searched["storage"])}})
    return 0


def shown_storage(url: str) -> str:
    """A SQLite storage URL with its file relative to the checkout (results name no machine's folders)."""
    prefix = "sqlite:///"
    return prefix + shown_path(url[len(prefix):]) if url.startswith(prefix) else url


def trials_seconds(study_name: str) -> float:
    """The trials' wall time, summed from the study's own start and end times."""
    import optuna

    from pipelines.experiments.tune import default_storage

    study = optuna.load_study(study_name=study_name, storage=default_storage())
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials
               if t.datetime_start and t.datetime_complete)


def _shown(value) -> str:
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)


if __name__ == "__main__":
    sys.exit(main())
