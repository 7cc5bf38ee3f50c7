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


def sample_idx(source: Path, target: Path, sizes: dict[str, int]) -> None:
    """Subsets of the four IDX files, written in the same (gzip) format as the originals."""
    import gzip
    import struct

    sys.path.insert(0, str(ROOT))
    from pipelines.data.loaders.mnist_format import read_idx

    target.mkdir(parents=True, exist_ok=True)
    for prefix, count in sizes.items():
        x = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")
        keep = stratified_subset(y, count)
        for kind, array in (("images-idx3", x[keep]), ("labels-idx1", y[keep])):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
            with open(target / f"{prefix}-{kind}-ubyte.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
                out.write(header + array.tobytes())
    shutil.copy(source / "classes.json", target / "classes.json")


def copy_files(source: Path, target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(source / name, target / name)


SAMPLERS = {
    "digits": lambda src: sample_xy_npz(src / "digits", SAMPLES / "digits", {"train": 5000, "test": 1000}),
    "clothing": lambda src: sample_idx(src / "clothing", SAMPLES / "clothing", {"train": 5000, "t10k": 1000}),
    "skin": lambda src: sample_xy_npz(src / "skin", SAMPLES / "skin", {"train": 2000, "val": 300, "test": 600}),
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
