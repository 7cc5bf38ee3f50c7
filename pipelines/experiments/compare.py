"""Compare MLflow runs across use cases: which run is best, on which data, and what differs.

`python -m pipelines compare [usecase ...]` reads the runs of the configured store with
`mlflow.search_runs` (one experiment per use case) and the registry (versions, aliases), and
builds one table: a row per run, the params that differ between a use case's runs, the use
case's ranking metric (`Spec.ranking_metric`, higher is better) and its other headline metrics.

Runs are ranked only against runs on the same data, by the same metric: a group is (use case,
data sha256, ranking metric), so a run on the bundled sample never outranks, or is outranked by,
a run on the full data set, nor a cross-validated run (ranked by a CV mean, its run's tag
`ranking_metric`) a run scored on a held-out split.
The best FINISHED run of each group is marked. The table is printed (fits 100 columns), and
written as CSV, Markdown and a PNG chart; `--log` logs those files to an MLflow run of the
experiment `comparisons`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipelines.core import paths as locations
from pipelines.core.errors import PipelineError, UsageError
from pipelines.evaluation.plots import _pyplot
from pipelines.tasks import TASKS, get_task
from pipelines.tracking.tracker import Tracker, configured_mlflow, git_commit, store_exists, tracking_uri
from pipelines.usecases import USECASES, get_spec

FIT_TIME_METRICS = ("fit_seconds",)
THROUGHPUT_METRIC = "train_examples_per_second"
# Not compared as params: the data column (source + sha256) and the builder column show these,
# and split sizes follow from settings (train_limit, val_fraction) and data shown already.
PARAMS_SHOWN_ELSEWHERE = {"data.source", "data.data_dir", "model.builder",
                          "train_examples", "val_examples", "test_examples", "train_rows"}
# Terminal headers: short names so a table fits 100 columns.
SHORT_NAMES = {
    "test_accuracy": "acc", "test_balanced_accuracy": "bal_acc", "test_macro_auc_ovr": "auc",
    "test_macro_f1": "f1", "test_log_loss": "log_loss", "cv_keras_roc_auc_mean": "cv_auc",
    "cv_keras_accuracy_mean": "cv_acc", "cv_baseline_roc_auc_mean": "lr_auc", "cv_accuracy_mean": "cv_acc",
    "cv_balanced_accuracy_mean": "cv_bal_acc", "cv_macro_auc_ovr_mean": "cv_auc",
    "fit_seconds": "fit_s", "examples_per_second": "ex/s",
    "test_balanced_point_balanced_accuracy": "bal_acc@bal",  # skin's ranking metric (pipelines/evaluation/operating_points.py)
    # What sweeps and tuning trials are ranked by (`Task.selection_metric`): the same metrics on validation data.
    "validation_accuracy": "val_acc", "validation_balanced_point_balanced_accuracy": "val_bal_acc@bal",
}
TERMINAL_WIDTH = 100
CELL_WIDTH = 14  # a wider cell (a path, a long tuple) is trimmed with "~"
RUN_NAME_WIDTH = 28  # a sweep names its children after their point: `class_weights=0.5 dropout=0.2`
# Columns given up, in this order, when a group's table is wider than the terminal.
DROP_ORDER = ("started", "ex/s", "builder", "fit_s", "version", "status")
COMPARISONS_EXPERIMENT = "comparisons"
GROUP = ["usecase", "data", "ranking_metric"]  # what is ranked together


@dataclasses.dataclass
class Comparison:
    """The runs compared, one row each (`table`), and what the renderers need to know."""

    table: pandas.DataFrame  # noqa: F821  (pandas is imported when a comparison is built)
    params: list[str]  # the params that differ between runs of a use case (union over use cases)
    metrics: list[str]  # headline metric columns, ranking metrics first
    source: str  # the tracking URI read

    @property
    def groups(self):
        """(use case, data label, ranking metric) -> rows, in table order: what is ranked together."""
        return self.table.groupby(GROUP, sort=False)

    def separate_data_notes(self) -> list[str]:
        """One line per use case whose runs used more than one data set, or more than one ranking metric."""
        notes = []
        for usecase, rows in self.table.groupby("usecase", sort=False):
            datasets = list(dict.fromkeys(rows["data"]))
            if len(datasets) > 1:
                notes.append(f"{usecase}: runs on {len(datasets)} data sets are ranked separately, never against each other")
            metrics = list(dict.fromkeys(rows["ranking_metric"]))
            if len(metrics) > 1:
                notes.append(f"{usecase}: runs ranked by {' and by '.join(metrics)} (cross-validated, validation or test data) "
                             "are ranked separately")
        return notes


# --- reading the store -----------------------------------------------------------------------


def _registry(client, usecases: list[str]) -> dict[str, tuple[str, str]]:
    """run id -> (registered version, its aliases) for the models named after the use cases."""
    from mlflow.exceptions import MlflowException

    found: dict[str, tuple[str, str]] = {}
    for usecase in usecases:
        try:
            aliases_by_version: dict[str, list[str]] = {}
            for model in client.search_registered_models(filter_string=f"name='{usecase}'"):
                for alias, version in model.aliases.items():
                    aliases_by_version.setdefault(str(version), []).append(alias)
            versions = client.search_model_versions(f"name='{usecase}'")
        except MlflowException:
            continue  # a store without a registry (or none registered): no versions to show
        for version in sorted(versions, key=lambda v: int(v.version)):  # the newest version wins
            if version.run_id:
                found[version.run_id] = (str(version.version), ",".join(sorted(aliases_by_version.get(str(version.version), []))))
    return found


def search_runs(usecases: list[str], last: int | None = None, filter_string: str | None = None):
    """The training runs of these use cases' experiments, newest first, as one DataFrame
    (`mlflow.search_runs` columns plus `usecase`, `version` and `aliases`)."""
    import pandas as pd

    uri = tracking_uri()
    if not store_exists():  # say so instead of creating an empty store
        raise PipelineError(f"no MLflow runs yet ({uri} does not exist): train first, e.g. `make demo`")
    mlflow = configured_mlflow()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    # Only training runs: a sweep's parent run and `comparisons` runs have no test metrics.
    query = "tags.verb = 'train'" + (f" and {filter_string}" if filter_string else "")
    frames = []
    for usecase in usecases:
        experiment = client.get_experiment_by_name(usecase)
        if experiment is None:
            continue
        runs = mlflow.search_runs(
            experiment_ids=[experiment.experiment_id], filter_string=query,
            order_by=["attributes.start_time DESC"], max_results=last or 100_000,
        )
        if len(runs):
            frames.append(runs.assign(usecase=usecase))
    if not frames:
        raise PipelineError(f"no training runs of {', '.join(usecases)} in {uri}: train one first, "
                            f"e.g. `make train-{usecases[0]} DATA=sample`")
    runs = pd.concat(frames, ignore_index=True)
    registered = _registry(client, list(dict.fromkeys(runs["usecase"])))
    # Both columns at once: search_runs' frame has a column per param and metric, and adding to it
    # one column at a time makes pandas warn that it is fragmented.
    return runs.assign(version=runs["run_id"].map(lambda run_id: registered.get(run_id, ("", ""))[0]),
                       aliases=runs["run_id"].map(lambda run_id: registered.get(run_id, ("", ""))[1]))


# --- building the table ----------------------------------------------------------------------


def _column(runs, name: str):
    """A column of the search result, or an empty one (no run logged that param/tag/metric)."""
    import numpy as np

    return runs[name] if name in runs else np.full(len(runs), np.nan)


def differing_params(runs) -> dict[str, list[str]]:
    """Per use case, the params whose values differ between its runs (a missing value counts)."""
    differing = {}
    for usecase, rows in runs.groupby("usecase", sort=False):
        differing[usecase] = sorted(
            column[len("params."):] for column in rows.columns
            if column.startswith("params.") and column[len("params."):] not in PARAMS_SHOWN_ELSEWHERE
            and rows[column].nunique(dropna=False) > 1
        )
    return differing


def rank_within_data_groups(table):
    """Rank FINISHED runs with a score within each (use case, data) group; 1 is the best.
    Ties go to the earlier run, which reached the score first."""
    import numpy as np

    table["rank"] = np.nan
    eligible = table[(table["status"] == "FINISHED") & table["score"].notna()]
    ordered = eligible.sort_values(["score", "started"], ascending=[False, True], kind="stable")
    table.loc[ordered.index, "rank"] = ordered.groupby(GROUP, sort=False).cumcount() + 1
    table["rank"] = table["rank"].astype("Int64")
    table["best"] = table["rank"] == 1
    table["best"] = table["best"].fillna(False).astype(bool)
    return table


def build_comparison(usecases: list[str] | None = None, metric: str | None = None, last: int | None = None,
                     filter_string: str | None = None) -> Comparison:
    """Read the runs and build the comparison table (nothing printed or written)."""
    import pandas as pd

    specs = {name: get_spec(name) for name in (usecases or USECASES)}  # unknown names: UsageError
    if last is not None and last < 1:
        raise UsageError(f"--last must be at least 1, got {last}")
    runs = search_runs(list(specs), last, filter_string)
    if metric and f"metrics.{metric}" not in runs:
        logged = sorted(c[len("metrics."):] for c in runs if c.startswith(("metrics.test_", "metrics.cv_")))
        raise UsageError(f"unknown metric '{metric}': no run compared logged it; try one of {', '.join(logged[:12])}")

    # Each run's own ranking metric (its tag; older runs: the use case's), unless --metric names one.
    ranking_of = {name: spec.ranking_metric for name, spec in specs.items()}
    tagged = runs["tags.ranking_metric"] if "tags.ranking_metric" in runs else pd.Series(None, index=runs.index, dtype=object)
    ranking = pd.Series([metric or tag or ranking_of[usecase] for tag, usecase in zip(tagged.fillna(""), runs["usecase"])],
                        index=runs.index)
    shas = runs["tags.data_sha256"] if "tags.data_sha256" in runs else pd.Series("", index=runs.index)
    sources = runs["tags.data_source"] if "tags.data_source" in runs else pd.Series("", index=runs.index)
    table = pd.DataFrame({
        "usecase": runs["usecase"],
        "data": [f"{source or '?'} {(sha or 'unknown')[:12]}" for source, sha in zip(sources.fillna(""), shas.fillna(""))],
        "run_name": runs.get("tags.mlflow.runName", pd.Series("", index=runs.index)).fillna(""),
        "run_id": runs["run_id"],
        "started": runs["start_time"],
        "status": runs["status"],
        "builder": _column(runs, "params.model.builder"),
    })
    differing = differing_params(runs)
    params = list(dict.fromkeys(name for names in differing.values() for name in names))
    for name in params:
        # Blank for a use case whose runs all agree on it: the column is about what differs.
        differs = runs["usecase"].map(lambda usecase, name=name: name in differing[usecase])
        table[name] = runs[f"params.{name}"].where(differs)
    table["ranking_metric"] = ranking
    table["score"] = [runs.at[i, f"metrics.{ranking[i]}"] if f"metrics.{ranking[i]}" in runs else float("nan") for i in runs.index]
    present = list(dict.fromkeys(runs["usecase"]))
    # What a use case reports beside its ranking metric is its task's (`Task.headline_metrics`).
    others = {name: [m for m in get_task(specs[name].task).headline_metrics if m not in set(ranking[runs["usecase"] == name])]
              for name in present}
    known = [m for task in TASKS for m in get_task(task).headline_metrics]
    metrics = sorted({m for name in present for m in others[name]}, key=known.index)
    for headline in metrics:
        # Shown for the use cases that report it beside their ranking metric (`score`), not twice.
        reports = runs["usecase"].map(lambda usecase, headline=headline: headline in others[usecase])
        table[headline] = pd.Series(_column(runs, f"metrics.{headline}"), index=runs.index).where(reports)
    fit = pd.Series(float("nan"), index=runs.index)
    for name in FIT_TIME_METRICS:
        fit = fit.fillna(pd.Series(_column(runs, f"metrics.{name}"), index=runs.index))
    table["fit_seconds"] = fit
    table["examples_per_second"] = _column(runs, f"metrics.{THROUGHPUT_METRIC}")
    table["version"] = runs["version"]
    table["aliases"] = runs["aliases"]
    table["data_sha256"] = shas
    table = rank_within_data_groups(table)
    # Use cases in the order asked, data groups together, newest run first within a group.
    order = {name: i for i, name in enumerate(specs)}
    table = table.sort_values(["usecase", "data", "started"], key=lambda c: c.map(order) if c.name == "usecase" else c,
                              ascending=[True, True, False], kind="stable").reset_index(drop=True)
    return Comparison(table=table, params=params, metrics=metrics, source=tracking_uri())


# --- rendering -------------------------------------------------------------------------------


def _trim(value, width: int = CELL_WIDTH) -> str:
    text = "" if value is None or (isinstance(value, float) and value != value) else str(value)
    if len(text) > width:
        try:  # a search's float param, logged in full (0.17677245162...): its first digits, not a cut
            text = f"{float(text):.4g}"
        except ValueError:
            pass
    return text if len(text) <= width else text[: width - 1] + "~"


def _format_number(value, digits: int = 4) -> str:
    import pandas as pd

    if pd.isna(value):
        return ""
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"


def _group_header(usecase: str, data: str, rows, short: bool = False) -> str:
    """What a group's table is: its data set, its ranking metric; in the terminal also the
    builder and status when every run shares them (their columns are then left out)."""
    metric = rows["ranking_metric"].iloc[0]
    finished = int((rows["status"] == "FINISHED").sum())
    shared = ""
    if short and rows["builder"].nunique(dropna=False) == 1:
        shared += f", {rows['builder'].iloc[0]}"
    runs = f"{len(rows)} run{'s' if len(rows) > 1 else ''}"
    if short and finished == len(rows):
        status = "all finished" if finished > 1 else "finished"
    else:
        status = f"{finished} finished"
    return f"{usecase} on {data}{shared}: {runs}, {status}; ranked by {metric}, * = best"


def display_frame(rows, comparison: Comparison, short: bool):
    """The rows of one group as display strings; `short` uses terminal-sized names and cells."""
    import pandas as pd

    metric = rows["ranking_metric"].iloc[0]
    params = [p for p in comparison.params if rows[p].notna().any()]
    metrics = [m for m in comparison.metrics if rows[m].notna().any()]
    name = (lambda n: SHORT_NAMES.get(n, n.rsplit(".", 1)[-1])) if short else (lambda n: n)
    started = rows["started"].dt.tz_convert(None) if rows["started"].dt.tz is not None else rows["started"]
    frame = pd.DataFrame({
        "": rows["best"].map({True: "*", False: ""}),
        "run": rows["run_name"],
        "id": rows["run_id"].str[:8],
        "started": started.dt.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M UTC"),
        "status": rows["status"],
        "builder": rows["builder"],
    })
    for param in params:
        frame[name(param)] = rows[param]
    frame[name(metric)] = rows["score"].map(_format_number)
    for other in metrics:
        frame[name(other)] = rows[other].map(_format_number)
    frame[name("fit_seconds")] = rows["fit_seconds"].map(lambda v: _format_number(v, 1))
    frame[name("examples_per_second")] = rows["examples_per_second"].map(lambda v: _format_number(v, 0))
    frame["version"] = rows["version"]
    frame["alias"] = rows["aliases"]
    frame = frame.fillna("")
    if short:
        # The group header names a builder or status every run shares.
        if rows["builder"].nunique(dropna=False) == 1:
            frame = frame.drop(columns="builder")
        if (rows["status"] == "FINISHED").all():
            frame = frame.drop(columns="status")
        frame = frame.apply(lambda column: column.map(lambda v: _trim(v, RUN_NAME_WIDTH if column.name == "run" else CELL_WIDTH)))
    return frame


def _fit_width(frame, width: int):
    """Drop low-priority columns until the rendered table fits; returns (text, dropped)."""
    dropped = []
    text = frame.to_string(index=False)
    for column in DROP_ORDER:
        if max(map(len, text.splitlines())) <= width:
            break
        if column in frame:
            frame = frame.drop(columns=column)
            dropped.append(column)
            text = frame.to_string(index=False)
    return text, dropped


def render_terminal(comparison: Comparison, width: int = TERMINAL_WIDTH) -> str:
    lines = [f"Runs in {comparison.source}",
             "ranked within each data set (same use case, same data sha256), higher is better:"]
    lines += [f"note: {note}" for note in comparison.separate_data_notes()]
    for (usecase, data, _), rows in comparison.groups:
        lines += ["", _group_header(usecase, data, rows, short=True)]
        text, dropped = _fit_width(display_frame(rows, comparison, short=True), width)
        lines += [line.rstrip() for line in text.splitlines()]
        if dropped:
            lines.append(f"(not shown to fit {width} columns: {', '.join(dropped)}; see the CSV)")
    return "\n".join(lines)


def _markdown_table(frame) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs `tabulate`, which this project does not ship)."""
    escape = lambda value: str(value).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(escape(c) or "best" for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(escape(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(comparison: Comparison) -> str:
    parts = ["# Run comparison", "",
             f"Runs in `{comparison.source}`. Each table is one data set (use case + data sha256): runs on "
             "different data are never ranked against each other. **\\*** marks the best finished run of a table."]
    parts += [f"- {note}" for note in comparison.separate_data_notes()]
    for (usecase, data, _), rows in comparison.groups:
        parts += ["", f"## {usecase}: {data}", "", _group_header(usecase, data, rows).split(": ", 1)[1], "",
                  _markdown_table(display_frame(rows, comparison, short=False))]
    return "\n".join(parts) + "\n"


def csv_frame(comparison: Comparison):
    """The table as written to CSV: machine-readable values, full run ids, one row per run."""
    frame = comparison.table.copy()
    frame["started"] = frame["started"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    columns = ["usecase", "data", "rank", "best", "run_name", "run_id", "started", "status", "builder",
               *comparison.params, "ranking_metric", "score", *comparison.metrics,
               "fit_seconds", "examples_per_second", "version", "aliases", "data_sha256"]
    return frame[columns]


def plot_comparison(comparison: Comparison, path: Path) -> Path:
    """Write `comparison_figure` to `path` (PNG); returns the path."""
    figure = comparison_figure(comparison)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path


def comparison_figure(comparison: Comparison):
    """Ranking metric per run, a panel per use case, bars coloured by data set; the best run of a
    data set has a thick black edge, the registry's champion a hatched bar.

    Nothing is drawn over anything else, at any score: each bar's value and notes are the tick
    labels of a right-hand axis (outside the bars), the data set is named in the panel's title
    when there is one, and in a legend under the panel when there are several. A metric bounded
    by 1 gets an axis from 0 to 1 (no empty 1.0-1.2 stretch)."""
    import pandas as pd
    from matplotlib.patches import Patch

    plt = _pyplot()
    table = comparison.table
    usecases = list(dict.fromkeys(table["usecase"]))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = []
    for usecase in usecases:
        rows = table[table["usecase"] == usecase].iloc[::-1]  # newest at the top
        several = rows["ranking_metric"].nunique() > 1  # then a colour is a data set and a metric
        keys = rows["data"] + (" by " + rows["ranking_metric"] if several else "")
        panels.append((usecase, rows, keys, list(dict.fromkeys(keys.iloc[::-1]))))
    # A legend row under a panel with several data sets: ~0.3 inch more.
    heights = [max(1.2, 0.35 * len(rows) + 0.8) + (0.3 if len(datasets) > 1 else 0) for _, rows, _, datasets in panels]
    figure, axes = plt.subplots(len(usecases), 1, figsize=(9, sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for axis, (usecase, rows, keys, datasets) in zip(axes[:, 0], panels):
        positions = list(range(len(rows)))
        values = []
        for position, (_, row), key in zip(positions, rows.iterrows(), keys):
            colour = colours[datasets.index(key) % len(colours)]
            champion = "champion" in str(row["aliases"]).split(",")
            finished = row["status"] == "FINISHED"
            score = 0.0 if pd.isna(row["score"]) else row["score"]
            axis.barh(position, score, color=colour, alpha=1.0 if finished else 0.3, edgecolor="black",
                      linewidth=2.5 if row["best"] else 0, hatch="//" if champion else None)
            notes = ["best"] * bool(row["best"]) + ["@champion"] * champion + [f"{row['status']}, not ranked"] * (not finished)
            values.append(" ".join(["no score" if pd.isna(row["score"]) else f"{row['score']:.4f}", *notes]))
        labels = [f"{name[:20]} {run_id[:8]}" for name, run_id in zip(rows["run_name"], rows["run_id"])]
        axis.set_yticks(positions, labels, fontsize=8)
        axis.set_ylim(-0.6, len(rows) - 0.4)
        scores = rows["score"].dropna()
        bounded = scores.empty or (scores.min() >= 0 and scores.max() <= 1)
        axis.set_xlim(0, 1 if bounded else max(scores.max(), 0) * 1.05 or 1)
        right = axis.twinx()  # the values, as tick labels beside the panel: never on a bar or a legend
        right.set_ylim(axis.get_ylim())
        right.set_yticks(positions, values, fontsize=8)
        right.tick_params(axis="y", length=0)
        metric = " / ".join(dict.fromkeys(rows["ranking_metric"]))
        if len(datasets) == 1:
            axis.set_title(f"{usecase}: {metric}  (data: {datasets[0]})", fontsize=10)
        else:
            axis.set_title(f"{usecase}: {metric}  (colours: data sets, ranked apart)", fontsize=10)
            handles = [Patch(color=colours[i % len(colours)], label=data) for i, data in enumerate(datasets)]
            axis.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28),
                        ncol=min(len(datasets), 3), frameon=False)
    figure.tight_layout()
    return figure


def write_outputs(comparison: Comparison, out_dir: Path) -> list[Path]:
    """comparison.csv, comparison.md and comparison.png in `out_dir`; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, markdown_path = out_dir / "comparison.csv", out_dir / "comparison.md"
    csv_frame(comparison).to_csv(csv_path, index=False)
    markdown_path.write_text(render_markdown(comparison))
    return [csv_path, markdown_path, plot_comparison(comparison, out_dir / "comparison.png")]


def log_outputs(paths: list[Path], comparison: Comparison, arguments: dict) -> str:
    """Log the written files to a new run of the `comparisons` experiment; returns its id."""

    with Tracker(COMPARISONS_EXPERIMENT, run_name="compare") as tracker:
        tracker.log_params({k: v for k, v in arguments.items() if v not in (None, [], "")})
        tracker.set_tags({"verb": "compare", "git_commit": git_commit(),
                          "usecases": ",".join(dict.fromkeys(comparison.table["usecase"]))})
        for path in paths:
            tracker.log_artifact(path)
    return tracker.run_id


def run_compare(usecases: list[str] | None = None, metric: str | None = None, last: int | None = None,
                out_dir: str | Path | None = None, log: bool = False, filter_string: str | None = None) -> Comparison:
    """The `compare` verb: build, print, write (and optionally log) the comparison."""
    comparison = build_comparison(usecases, metric, last, filter_string)
    print(render_terminal(comparison))

    paths = write_outputs(comparison, Path(out_dir) if out_dir else locations.reports_root() / "compare")
    print(f"\nwritten to {paths[0].parent}/: {', '.join(p.name for p in paths)}")
    if log:
        arguments = {"usecases": ",".join(usecases or []), "metric": metric, "last": last}
        run_id = log_outputs(paths, comparison, arguments)
        print(f"logged to MLflow experiment '{COMPARISONS_EXPERIMENT}', run {run_id}")
    return comparison
