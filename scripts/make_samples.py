"""Draw the bundled samples in data/samples/ from full copies of the data sets.

Usage: python scripts/make_samples.py SOURCE_DIR [usecase ...]
SOURCE_DIR holds the full data sets in the layout of data/README.md (one folder per use
case). Samples are stratified, seeded and keep the original order, so re-running this
script reproduces the committed files byte for byte (np.savez_compressed is deterministic).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"


def stratified_subset(y: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Exactly `count` indices with class proportions as in `y` (largest-remainder rounding,
    at least one per class), sorted so the original order is kept."""
    rng = np.random.default_rng(seed)
    labels, sizes = np.unique(y, return_counts=True)
    exact = count * sizes / len(y)
    shares = np.maximum(1, np.floor(exact).astype(int))
    for i in np.argsort(exact - np.floor(exact))[::-1][: max(0, count - shares.sum())]:
        shares[i] += 1
    chosen = [rng.choice(np.flatnonzero(y == label), size=min(share, size), replace=False)
              for label, share, size in zip(labels, shares, sizes)]
    return np.sort(np.concatenate(chosen))


def sample_xy_npz(source: Path, target: Path, sizes: dict[str, int]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for split, count in sizes.items():
        with np.load(source / f"{split}.npz", allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
        keep = stratified_subset(y, count)
        np.savez_compressed(target / f"{split}.npz", x=x[keep], y=y[keep])
    shutil.copy(source / "classes.json", target / "classes.json")


def copy_files(source: Path, target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / name, target / name)


SAMPLERS = {
    "digits": lambda src: sample_xy_npz(src / "digits", SAMPLES / "digits", {"train": 5000, "test": 1000}),
    # The whole official test batch of CUCUMBER-9 prototype 1 (1.1 MB): all there is offline.
    "cucumber": lambda src: copy_files(src / "cucumber", SAMPLES / "cucumber", ["p1_test.npz", "classes.json"]),
}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    source = Path(argv[0])
    for name in argv[1:] or list(SAMPLERS):
        SAMPLERS[name](source)
        files = sorted((SAMPLES / name).iterdir())
        print(name, json.dumps({f.name: f.stat().st_size for f in files}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
