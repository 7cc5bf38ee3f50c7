"""Skin lesion images: DermaMNIST (MedMNIST v2) arrays, or the full HAM10000 release.

Reads whichever layout the folder holds at the spec's image size (`data.image_size`, which
sets `input_shape`; DermaMNIST's own is 28), first match wins:
1. MedMNIST's `dermamnist.npz` (or any `*mnist*.npz`) with `train_images`, `train_labels`,
   `val_images`, ... and its official train/val/test split; at another size, MedMNIST+'s
   `dermamnist_<size>.npz` (64, 128, 224), same keys and split;
2. at 28 px, `train.npz`, `val.npz`, `test.npz` with `x`, `y` (the bundled sample, ../shared/data/skin);
3. HAM10000 as released, at any size: `HAM10000_metadata.csv` (`image_id`, `lesion_id`, `dx`)
   beside the JPEGs (`<image_id>.jpg`, in the folder or any subfolder). Images are resized once
   to the spec's size and cached under `data/cache/`, one file per size; the split is **by
   lesion**, so no lesion's images are in two splits (public random splits leak them),
   stratified by `dx`.

A size the folder does not hold (128 px asked of 28x28 DermaMNIST arrays) is a one-line error
naming what would do, before any image is decoded.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import numpy as np

from pipelines.core import paths
from pipelines.data.dataset import Dataset, Split, checked_split
from pipelines.core.errors import PipelineError
from pipelines.data.loaders.mnist_format import _read_npz, _read_xy_npz
from pipelines.data.sources import locate, sha256sum
from pipelines.data.images import read_image

LAYOUTS = "dermamnist.npz (MedMNIST keys), train/val/test.npz (x, y), or HAM10000_metadata.csv with the JPEGs"
METADATA = "HAM10000_metadata.csv"
NATIVE_SIZE = 28  # DermaMNIST (MedMNIST v2); MedMNIST+ names its larger copies dermamnist_<size>.npz


def load(spec) -> Dataset:
    located = locate(spec.name, spec.data.source, spec.data.data_dir, (), describe=LAYOUTS)
    dataset = read_folder(located.folder, spec, located.origin)
    dataset.check_images(spec.input_shape, str(located.folder))
    return dataset


def read_folder(folder: Path, spec, origin: str) -> Dataset:
    size = spec.input_shape[0]
    medmnist = medmnist_files(folder)
    arrays_xy = [folder / f"{s}.npz" for s in ("train", "val", "test")]
    has_xy = all(p.is_file() for p in arrays_xy)
    if size in medmnist:
        arrays = _read_npz(medmnist[size], tuple(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")))
        splits = {s: checked_split(arrays[f"{s}_images"], arrays[f"{s}_labels"], f"{medmnist[size]} ({s}_images, {s}_labels)")
                  for s in ("train", "val", "test")}
        used = [medmnist[size]]
    elif size == NATIVE_SIZE and has_xy:
        used = arrays_xy
        splits = {p.stem: _read_xy_npz(p) for p in used}
    elif (folder / METADATA).is_file():
        splits, used = read_ham10000(folder, spec)
    elif medmnist or has_xy:
        held = {**{s: p.name for s, p in medmnist.items()}, **({NATIVE_SIZE: "train/val/test.npz"} if has_xy else {})}
        what = ", ".join(f"{name} ({s}x{s})" for s, name in sorted(held.items()))
        raise PipelineError(f"data.image_size={size}: {folder} holds DermaMNIST arrays of another size only ({what}); "
                            f"{size} px needs the HAM10000 JPEGs ({METADATA} beside them) or MedMNIST+'s dermamnist_{size}.npz, "
                            f"or --set data.image_size={' or '.join(map(str, sorted(held)))}")
    else:
        raise PipelineError(f"{folder} holds no skin lesion data; expected {LAYOUTS}")
    return Dataset(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        class_names=tuple(spec.class_names),
        origin=origin,
        files={path.name: sha256sum(path) for path in used},
    )


def medmnist_files(folder: Path) -> dict[int, Path]:
    """MedMNIST archives in `folder` by image side: `dermamnist.npz` is 28, MedMNIST+'s
    `dermamnist_128.npz` 128 (read from the name; the arrays are checked once loaded)."""
    found: dict[int, Path] = {}
    for path in sorted(folder.glob("*mnist*.npz")):
        side = re.search(r"_(\d+)\.npz$", path.name)
        found.setdefault(int(side[1]) if side else NATIVE_SIZE, path)
    return found


def lesion_grouped_split(groups: np.ndarray, labels: np.ndarray, fractions: tuple[float, float], seed: int):
    """(train, val, test) index arrays: every group (lesion) in exactly one split, each split
    stratified by label as far as whole groups allow. `fractions` = (val, test)."""
    from sklearn.model_selection import StratifiedGroupKFold

    def carve(indices: np.ndarray, fraction: float, salt: int):
        folds = max(2, round(1 / fraction))
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + salt)
        with warnings.catch_warnings():  # rare classes (df, vasc) cannot reach every fold: expected
            warnings.filterwarnings("ignore", message="The least populated class")
            keep, held = next(splitter.split(indices, labels[indices], groups[indices]))
        return indices[keep], indices[held]

    everything = np.arange(len(labels))
    rest, test = carve(everything, fractions[1], 0)
    train, val = carve(rest, fractions[0] / (1 - fractions[1]), 1)
    return np.sort(train), np.sort(val), np.sort(test)


def read_ham10000(folder: Path, spec) -> tuple[dict[str, Split], list[Path]]:
    import pandas as pd

    metadata_path = folder / METADATA
    try:
        table = pd.read_csv(metadata_path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PipelineError(f"{metadata_path} is not a readable CSV ({exc})") from None
    missing = [c for c in ("image_id", "lesion_id", "dx") if c not in table.columns]
    if missing:
        raise PipelineError(f"{metadata_path} lacks column(s) {', '.join(missing)}; it needs image_id, lesion_id, dx")
    index = {name: i for i, name in enumerate(spec.class_names)}
    unknown = sorted(set(table["dx"]) - set(index))
    if unknown:
        raise PipelineError(f"{metadata_path}: unknown dx value(s) {', '.join(map(str, unknown))}; expected {', '.join(index)}")
    labels = table["dx"].map(index).to_numpy(np.int64)
    images = _resized_images(folder, table["image_id"].tolist(), tuple(spec.input_shape), sha256sum(metadata_path))
    fractions = (spec.data.options.get("val_fraction", 0.1), spec.data.options.get("test_fraction", 0.2))
    train, val, test = lesion_grouped_split(table["lesion_id"].astype(str).to_numpy(), labels, fractions, spec.train.seed)
    splits = {name: Split(images[idx], labels[idx]) for name, idx in (("train", train), ("val", val), ("test", test))}
    return splits, [metadata_path]


def _resized_images(folder: Path, image_ids: list[str], shape: tuple, metadata_sha: str) -> np.ndarray:
    """Decode and resize every image once; later runs read the cached array. The cache file is
    keyed by the metadata's sha256 and the size, so every size has its own."""
    key = hashlib.sha256(f"{metadata_sha} {shape}".encode()).hexdigest()[:16]
    cache = paths.data_root() / "cache" / f"ham10000-{'x'.join(map(str, shape))}-{key}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as archive:
            return archive["x"]

    files = {p.stem: p for p in folder.rglob("*.jpg")}
    absent = [i for i in image_ids if i not in files]
    if absent:
        raise PipelineError(f"{len(absent)} image(s) listed in {METADATA} are not under {folder} (first: {absent[0]}.jpg)")
    images = np.empty((len(image_ids), *shape), np.uint8)  # filled in place: 10,015 x 224 x 224 x 3 is 1.5 GB
    for row, image_id in enumerate(image_ids):
        images[row] = read_image(files[image_id], shape)  # names a corrupt file in its error
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.stem + ".part.npz")
    np.savez(partial, x=images)
    partial.replace(cache)
    return images
