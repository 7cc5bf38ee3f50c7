"""Train a use case on its full data with the default spec and print the figures beside
published references (the heart run also trains its logistic-regression baseline on the
same folds, in the same run). Writes bench-results/<usecase>.{json,md}.

Usage: python benchmarks/bench_usecase.py clothing|heart [--data-dir DIR]   (skin: bench_skin.py)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from results import record  # noqa: E402 - benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results"
SHARED = REPO.parent / "shared" / "data"

# Published figures quoted by the issues (test split unless stated).
REFERENCES = {
    "clothing": [("2-conv + 3-FC CNN (Fashion-MNIST benchmark)", {"accuracy": 0.932}),
                 ("ResNet18 with augmentation", {"accuracy": 0.949}), ("best published", {"accuracy": 0.967})],
    "heart": [("logistic-regression repositories", {"accuracy": 0.86, "roc_auc": 0.92}),
              ("keras-io FeatureSpace example (validation)", {"accuracy": 0.80})],
}


def full_data_spec(usecase: str, data_dir: str | None):
    """The default spec on its full data (`data_dir`, else ../shared/data/<usecase> when there),
    tracked in bench-results/ (its own MLflow store and models folder), not the user's."""
    RESULTS.mkdir(exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{RESULTS / 'mlflow.db'}")
    os.environ.setdefault("PIPELINES_MODELS_ROOT", str(RESULTS / "models"))
    sys.path.insert(0, str(REPO))
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    spec = get_spec(usecase)
    data_dir = data_dir or (str(SHARED / usecase) if (SHARED / usecase).is_dir() and usecase != "heart" else None)
    return apply_overrides(spec, {"data.data_dir": data_dir}) if data_dir else spec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("usecase", choices=sorted(REFERENCES))
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    spec = full_data_spec(args.usecase, args.data_dir)
    from pipelines.pipeline import run_train

    started = time.perf_counter()
    summary = run_train(spec, run_name="bench")
    seconds = time.perf_counter() - started
    if args.usecase == "heart":
        ours = {f"{k} ({m})": f"{v['mean']:.3f} +- {v['sd']:.3f}" for m, s in summary["cv"].items() for k, v in s.items()}
    else:
        ours = {k: f"{v:.4f}" for k, v in summary["test"].items()}
    lines = [f"# {args.usecase} benchmark, {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"This pipeline (default spec): wall time {seconds:.0f} s (fit {summary.get('fit_seconds', seconds):.0f} s)", "",
             "| metric | this pipeline |", "|---|---|"] + [f"| {k} | {v} |" for k, v in ours.items()]
    lines += ["", "| published reference | figures |", "|---|---|"]
    lines += [f"| {name} | " + ", ".join(f"{k} {v}" for k, v in figures.items()) + " |" for name, figures in REFERENCES[args.usecase]]
    report = "\n".join(lines) + "\n"
    print("\n" + report)
    (RESULTS / f"{args.usecase}.md").write_text(report)
    record(args.usecase, f"{args.usecase}: full data, default spec, beside published figures", f"make bench-{args.usecase}",
           report, {"seconds": seconds, "ours": ours, "references": REFERENCES[args.usecase]})
    (RESULTS / f"{args.usecase}.json").write_text(json.dumps({"seconds": seconds, "ours": ours, "references": REFERENCES[args.usecase]},
                                                             indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
