"""The data checks (`pipelines/data/checks.py`) on the full data of the five built-in use cases:
duplicates within and across the splits, inputs with two labels, and how long it takes.

Each use case is loaded exactly as `train` loads it (its task's `load`, the spec's splits; the
validation slice carved from train where the data set has none) from `<data-root>/<usecase>/`,
and checked with the spec's settings. DermaMNIST is also checked at other near-copy settings,
since the published concern is its duplicates across the official splits. Nothing is trained.

Usage: python benchmarks/bench_checks.py [--data-root ../shared/data] [--only skin]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from results import record  # noqa: E402 - benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO.parent / "shared" / "data"
USECASES = ("digits", "clothing", "skin", "heart", "cucumber")
# (pHash distance, mean grey difference) beside the default, for DermaMNIST.
SKIN_SETTINGS = ((0, 255.0), (4, 255.0), (4, 4.0), (4, 8.0), (8, 8.0), (8, 16.0))


def loaded(usecase: str, folder: Path):
    from pipelines.tasks import get_task
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    spec = apply_overrides(get_spec(usecase), {"data.source": "full", "data.data_dir": str(folder)})
    task = get_task(spec.task)
    spec = task.prepare(spec)
    return spec, task, task.load(spec)


def measure(usecase: str, folder: Path) -> dict:
    from pipelines.data import checks

    started = time.perf_counter()
    spec, task, data = loaded(usecase, folder)
    load_seconds = time.perf_counter() - started
    found = checks.check(task.check_splits(spec, data), spec.class_names, spec.checks.near_duplicate_distance,
                         spec.checks.near_duplicate_difference)
    for line in found.lines():
        print(f"[{usecase}] {line}", flush=True)
    return {"usecase": usecase, "load_seconds": load_seconds, "found": found, **found.to_dict()}


def skin_sensitivity(folder: Path) -> list[dict]:
    """DermaMNIST's test and validation images with a copy in train, at several near-copy settings."""
    from pipelines.data import checks

    spec, task, data = loaded("skin", folder)
    splits = task.check_splits(spec, data)
    rows = []
    for distance, difference in SKIN_SETTINGS:
        found = checks.check(splits, spec.class_names, distance, difference)
        rows.append({"distance": distance, "difference": difference, "seconds": found.seconds,
                     **{f"{name}_{kind}": found.count(split, other, kind)
                        for name, split, other in (("test", "test", "train"), ("val", "val", "train"), ("test_val", "test", "val"))
                        for kind in ("exact", "near")},
                     "train_within_exact": found.count("train", "train", "exact"),
                     "train_within_near": found.count("train", "train", "near")})
        print(f"[skin] distance {distance}, difference {difference:g}: {rows[-1]}", flush=True)
    return rows


def markdown(results: list[dict], sensitivity: list[dict]) -> str:
    lines = ["Exact: the same decoded pixels (or row); near: not exact, pHash within 4 bits and 32x32 grey thumbnails within "
             "4 grey levels RMS (the spec defaults, `checks.near_duplicate_*`). \"Held out in training\": held-out "
             "examples (test; heart: the other sites) with a copy in train or validation, which "
             "`checks.drop_test_duplicates=true` removes from the training side. Cross-validated use cases (heart, cucumber) "
             "pool their examples into one set of folds: copies within it may straddle folds.", "",
             "| use case | splits | held out in training: exact + near | copies within the training side: exact + near | "
             "inputs with two labels (groups) | check time | load time |", "|---|---|---|---|---|---|---|"]
    for result in results:
        found = result["found"]
        splits = ", ".join(f"{name} {count:,}" for name, count in found.splits.items())
        held = "; ".join(f"{split}: {both(found, exact, near)}" for split, (exact, near) in found.held_out_in_training().items())
        within = "; ".join(f"{split}: {both(found, found.count(split, split, 'exact'), found.count(split, split, 'near'))}"
                           for split in found.splits if split not in found.held_out)
        conflicts = found.label_conflicts
        lines.append(f"| {result['usecase']} | {splits} | {held or 'none held out'} | {within} | "
                     f"{conflicts['items']} ({conflicts['groups']}) | {found.seconds:.1f} s | {result['load_seconds']:.1f} s |")
    if sensitivity:
        lines += ["", "DermaMNIST (full, official splits) at other near-copy settings: examples with a copy, exact + near "
                  "(distance: pHash bits; difference: RMS grey levels of the 32x32 thumbnails, 255 = pHash alone).", "",
                  "| pHash distance | difference | test in train | val in train | test in val | copies within train |",
                  "|---|---|---|---|---|---|"]
        for row in sensitivity:
            lines.append(f"| {row['distance']} | {row['difference']:g} | {row['test_exact']} + {row['test_near']} | "
                         f"{row['val_exact']} + {row['val_near']} | {row['test_val_exact']} + {row['test_val_near']} | "
                         f"{row['train_within_exact']} + {row['train_within_near']} |")
        lines += ["", "Looked at by eye: at the defaults, the 7 test images with a near copy in train are each the same lesion "
                  "in nearly the same picture; at 8 bits and 16 grey levels RMS, about 5 of 14 pairs are one lesion photographed again, "
                  "the rest different small dark spots (docs/data-checks.md)."]
    lines += ["", f"Times on a machine shared with other jobs (load average {os.getloadavg()[0]:.0f} on {os.cpu_count()} cores "
                  "at the end)."]
    if sensitivity:
        lines += ["", "The skin figures trained without the training copies of its test images are not measured here (a full "
                  "skin run, 15-30 minutes on 2 quiet cores): `make train-skin DATA_DIR=../shared/data/skin "
                  "SET=\"checks.drop_test_duplicates=true\"` (docs/data-checks.md)."]
    return "\n".join(lines) + "\n"


def both(found, exact: int, near: int) -> str:
    """"exact + near" for images; rows have exact copies only."""
    return f"{exact} + {near}" if found.kind == "images" else str(exact)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="a folder with one subfolder per use case")
    parser.add_argument("--only", choices=USECASES, help="check this use case only (RESULTS.md is then not written)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    usecases = [args.only] if args.only else list(USECASES)
    missing = [u for u in usecases if not (args.data_root / u).is_dir()]
    if missing:
        parser.error(f"no {', '.join(missing)} under {args.data_root}: pass --data-root DIR")
    results = [measure(usecase, args.data_root / usecase) for usecase in usecases]
    sensitivity = skin_sensitivity(args.data_root / "skin") if "skin" in usecases else []
    report = markdown(results, sensitivity)
    print("\n" + report)
    if not args.only:
        data = {"results": [{k: v for k, v in r.items() if k != "found"} for r in results], "skin_sensitivity": sensitivity}
        record("checks", "Data checks: duplicates within and across the splits of the five full data sets",
               "make bench-checks", report, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
