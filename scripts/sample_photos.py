"""Write the bundled samples as a folder of photo files, as a user's photos come: one folder per class.

Usage:
    python scripts/sample_photos.py cucumber DIR                 # DIR/<grade>/0000.png, the 495 cucumber photos
    python scripts/sample_photos.py skin DIR [--limit N]        # DIR/train/<dx>/*.jpg and DIR/test/<dx>/*.jpg (DermaMNIST)
    python scripts/sample_photos.py cucumber DIR --size 96 --copies 4   # larger photos, each 4 times (benchmarks)

What `python -m pipelines init NAME --images DIR` is tried on (docs/your-own-data.md), and what
the tests and `make bench-image-folder` build their folders with. `--copies k` writes each
photo k times, turned by 0, 90, 180, 270 degrees (then mirrored), so the copies are distinct
files of the same content size: k times the images of one folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"


def cucumber_folder(folder: Path, size: int = 0, copies: int = 1, limit: int = 0) -> dict[str, int]:
    """The CUCUMBER-9 sample as PNG files, one folder per grade; returns the count per grade."""
    with np.load(SAMPLES / "cucumber" / "p1_test.npz") as sample:
        x, y = sample["x"], sample["y"]
    names = json.loads((SAMPLES / "cucumber" / "classes.json").read_text())
    if limit:
        x, y = _at_most(x, y, limit)
    return _write(folder, x, y, names, "png", size, copies)


def _at_most(x: np.ndarray, y: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` images of each class, in their order."""
    keep = np.sort(np.concatenate([np.flatnonzero(y == label)[:limit] for label in np.unique(y)]))
    return x[keep], y[keep]


def skin_folder(folder: Path, limit: int = 0, size: int = 0) -> dict[str, dict[str, int]]:
    """The DermaMNIST sample's train and test splits as JPEGs in train/<dx>/ and test/<dx>/."""
    from pipelines.usecases import get_spec

    names = list(get_spec("skin").class_names)
    counts = {}
    for split in ("train", "test"):
        with np.load(SAMPLES / "skin" / f"{split}.npz") as sample:
            x, y = sample["x"], sample["y"]
        if limit:
            x, y = _at_most(x, y, limit)
        counts[split] = _write(folder / split, x, y, names, "jpg", size, 1)
    return counts


def _write(folder: Path, x: np.ndarray, y: np.ndarray, names: list[str], suffix: str, size: int, copies: int) -> dict[str, int]:
    from PIL import Image

    counts: dict[str, int] = {}
    for index, (image, label) in enumerate(zip(x, y)):
        name = names[int(label)]
        (folder / name).mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image)
        if size:
            picture = picture.resize((size, size), Image.Resampling.BICUBIC)
        for copy in range(copies):
            turned = picture.rotate(90 * (copy % 4))
            if copy // 4 % 2:
                turned = turned.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            turned.save(folder / name / f"{index:04d}{'' if copy == 0 else f'-{copy}'}.{suffix}",
                        **({"quality": 92} if suffix == "jpg" else {}))
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sample", choices=("cucumber", "skin"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", type=int, default=0, help="resize every photo to SIZE x SIZE (default: as stored)")
    parser.add_argument("--copies", type=int, default=1, help="cucumber: write each photo this many times, turned")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos of each class (skin: in each split)")
    args = parser.parse_args(argv)
    folder = args.folder.expanduser()
    if folder.exists() and any(folder.iterdir()):
        print(f"error: {folder} is not empty; name a new folder", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    if args.sample == "cucumber":
        counts = cucumber_folder(folder, args.size, args.copies, args.limit)
    else:
        counts = skin_folder(folder, args.limit, args.size)
    print(f"wrote {folder}: {json.dumps(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
