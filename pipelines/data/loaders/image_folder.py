"""A user's photos, one folder per class: `DIR/<class>/*.jpg`, as Keras'
`image_dataset_from_directory` reads them.

    grapes/                      or   grapes/train/<class>/...
      healthy/  a.jpg b.png ...         grapes/val/<class>/...     (optional)
      mildew/   c.JPG d.webp ...        grapes/test/<class>/...    (optional)

- **Classes** are the sorted folder names, exactly as `image_dataset_from_directory` orders
  them (Python's `sorted`: upper case before lower case), hidden folders left out; with split
  folders, the classes of `train/`. The use case's `class_names` must be those names in that
  order (`python -m pipelines init` writes them), so class i means the same folder everywhere.
- **Images** are files ending .jpg, .jpeg, .png, .bmp, .gif or .webp in any letter case, in
  the class folder or below it. Everything else (`.DS_Store`, `Thumbs.db`, a `.txt`, macOS'
  `._` files) is ignored and counted. A zero-byte, truncated or otherwise unreadable image is
  named: the run refuses with one line saying how many and which, unless the use case says
  `on_corrupt = "skip"` (then `Dataset.skipped` lists them and the run logs the list).
- **Splits**: the `train/`, `val/`, `test/` folders when there are; what is missing is carved
  from training data, seeded and stratified: `test_fraction` (an option, default 0.2) of all
  the images, then `data.val_fraction` of them for validation. `groups = "file.csv"` with
  `group_column` and `file_column` (as `lesion_id` and `image_id` are for HAM10000) keeps all
  images of one group in one split, so one object's photos never straddle train and test.
- **Decoded once**: every image is decoded (`pipelines.data.images.read_image`: upright, RGB or
  grey, transparency on black, CMYK, 16-bit, palette and animations settled) and fitted to the
  spec's size by `data.image_fit` (resize, pad or crop) into one `.npy` under
  `data/cache/image_folder/`, keyed by every file's name, size and modification time with the
  size, channels and fit: a changed folder is decoded again, an unchanged one never is.
- **Memory does not grow with the data**: the cache is read memory-mapped
  (`np.load(mmap_mode="r")`), each split is a memory-mapped array (a slice of the cache, or a
  gathered copy on disk when the split was carved), and `pipelines.data.input_pipeline` draws
  batches from it instead of loading it into a tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.core import paths
from pipelines.core.console import say
from pipelines.core.errors import PipelineError, UsageError
from pipelines.data.dataset import Dataset, Split
from pipelines.data.images import FITS, read_image
from pipelines.data.sources import locate

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "val", "test")
# What decoding a file means; bump it when `read_image` changes its pixels, so old caches are left behind.
DECODER_VERSION = 1
OPTIONS = {
    "folder": "the folder of class folders (--data-dir overrides it)",
    "test_fraction": "share of the images held out for testing when there is no test/ folder (default 0.2)",
    "groups": "a CSV mapping each image to the object it shows (e.g. HAM10000_metadata.csv)",
    "group_column": "the CSV column naming the object (e.g. lesion_id)",
    "file_column": "the CSV column naming the image: its file name, with or without extension, or path",
    "on_corrupt": "refuse (default) or skip unreadable images",
}
ON_CORRUPT = ("refuse", "skip")
_SHOWN = 5  # files named in a one-line error before "and N more"


@dataclass
class Found:
    """What is in the folder, before anything is decoded."""

    folder: Path
    class_names: tuple[str, ...]
    files: list[str]  # relative paths, split folder first (when there are), then class, then name
    labels: np.ndarray
    split_of: list[str | None]  # the split folder of each file, None without split folders
    ignored: list[str] = field(default_factory=list)  # relative paths of files that are not images

    @property
    def has_split_folders(self) -> bool:
        return self.split_of[0] is not None if self.split_of else False


def check_options(options: dict) -> None:
    """The loader's own settings, checked when the use-case file is read: one UsageError a mistake."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"data.options.{unknown[0]}: unknown option of loader image_folder; it takes "
                         f"{', '.join(OPTIONS)}")
    fraction = options.get("test_fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise UsageError(f"data.options.test_fraction={fraction}: must be a number > 0 and < 1")
    if options.get("on_corrupt", "refuse") not in ON_CORRUPT:
        raise UsageError(f"data.options.on_corrupt={options['on_corrupt']}: must be one of {', '.join(ON_CORRUPT)}")
    if "groups" in options and not {"group_column", "file_column"} <= set(options):
        raise UsageError("data.options.groups needs group_column and file_column beside it (which column names the "
                         "object, which the image)")
    for key in ("folder", "groups", "group_column", "file_column"):
        if key in options and not isinstance(options[key], str):
            raise UsageError(f"data.options.{key}: must be a string")


def load(spec) -> Dataset:
    options = dict(spec.data.options)
    check_options(options)
    if spec.data.views != 1:
        raise UsageError(f"data.views={spec.data.views}: the image_folder loader reads one photo a file; use views = 1")
    if len(spec.input_shape) == 3 and spec.input_shape[-1] != 3 or len(spec.input_shape) not in (2, 3):
        raise UsageError(f"input_shape={list(spec.input_shape)}: photos are read grey as [height, width] or in colour as "
                         f"[height, width, 3]")
    folder_option = spec.data.data_dir or options.get("folder")
    if not folder_option:
        raise UsageError(f"{spec.name}: say where the photos are: [data.options] folder = \"DIR\", or --data-dir DIR")
    if spec.data.source == "sample":
        raise UsageError(f"{spec.name}: an image folder has no bundled sample; drop --data sample")
    if not Path(folder_option).expanduser().exists():
        raise PipelineError(f"image folder {folder_option} does not exist")
    located = locate(spec.name, "full", str(folder_option), (), describe="one folder of photos per class")
    found = scan(located.folder)
    if tuple(spec.class_names) != found.class_names:
        raise PipelineError(f"{located.folder} has the classes {', '.join(found.class_names)} (sorted folder names); the use case "
                            f"lists {', '.join(spec.class_names)}: set class_names to the folder names in that order")
    if found.ignored:
        shown = sorted({Path(name).name for name in found.ignored})
        say(f"[{spec.name}] ignored {len(found.ignored)} file(s) that are not images: {_listed(shown)}")
    shape = tuple(spec.input_shape)
    decoded = decode(found, shape, spec.data.image_fit)
    usable = _usable(found, decoded, options.get("on_corrupt", "refuse"))
    groups = _groups(found, options) if "groups" in options else None
    parts, val_origin = _split_indices(found, usable, groups, spec)
    images = decoded.images()
    dataset = Dataset(
        train=_split(images, found.labels, parts["train"], decoded.folder),
        # None when there is none: `finalize_splits` then says so (val_fraction=0).
        val=_split(images, found.labels, parts["val"], decoded.folder) if len(parts["val"]) else None,
        test=_split(images, found.labels, parts["test"], decoded.folder),
        class_names=found.class_names,
        origin=located.origin,
        files={found.files[i]: decoded.sha256[i] for i in usable},
        val_origin=val_origin,
        skipped=[f"{found.files[i]}: {decoded.failed[i]}" for i in sorted(decoded.failed)],
        ignored=len(found.ignored),
    )
    dataset.check_images(shape, str(located.folder))
    return dataset


# --- what is in the folder --------------------------------------------------------------------


def scan(folder: Path) -> Found:
    """The classes and image files of `folder`, or one PipelineError saying what is wrong with it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"image folder {folder} does not exist" if not folder.exists() else f"{folder} is a file, not a folder of class folders")
    subfolders = _subfolders(folder)
    split_folders = [name for name in subfolders if name in SPLITS]
    if "train" in split_folders:
        others = [name for name in subfolders if name not in SPLITS]
        if others:
            raise PipelineError(f"{folder} holds train/ beside the folder(s) {', '.join(others)}: put every class folder inside "
                                f"train/ (and val/, test/), or use no split folders at all")
        class_names = _class_names(folder / "train")
        layout = [(split, folder / split) for split in SPLITS if split in split_folders]
    elif split_folders and set(subfolders) <= set(SPLITS):
        raise PipelineError(f"{folder} has {', '.join(f + '/' for f in split_folders)} but no train/ folder: the training images "
                            f"go in {folder / 'train'}/<class>/")
    else:
        class_names = _class_names(folder)
        layout = [(None, folder)]
    files, labels, split_of, ignored, empty = [], [], [], [], []
    for split, root in layout:
        present = _subfolders(root)
        strangers = sorted(set(present) - set(class_names))
        if strangers:
            raise PipelineError(f"{root} has class folder(s) {', '.join(strangers)} that train/ does not have; the classes are "
                                f"{', '.join(class_names)}")
        for label, name in enumerate(class_names):
            if name not in present:
                continue
            images, others = _files_in(root / name, folder)
            ignored += others
            if not images:
                empty.append(str((root / name).relative_to(folder)))
            files += images
            labels += [label] * len(images)
            split_of += [split] * len(images)
    if empty:
        raise PipelineError(f"{folder}: no images in the class folder(s) {', '.join(empty)} (images end {', '.join(IMAGE_SUFFIXES)}); "
                            f"add photos or remove the folder")
    return Found(folder, class_names, files, np.asarray(labels, np.int64), split_of, ignored)


def _subfolders(folder: Path) -> list[str]:
    # Sorted and without hidden folders, as keras.utils.image_dataset_from_directory lists classes.
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _class_names(folder: Path) -> tuple[str, ...]:
    names = tuple(_subfolders(folder))
    if not names:
        raise PipelineError(f"{folder} holds no class folders: put each class's photos in a folder named after the class "
                            f"({folder}/<class>/*.jpg)")
    if len(names) == 1:
        raise PipelineError(f"{folder} has one class folder ({names[0]}); a classifier needs at least two")
    return names


def _files_in(class_folder: Path, root: Path) -> tuple[list[str], list[str]]:
    """(image files, other files) under `class_folder`, as sorted paths relative to `root`;
    followed into subfolders as Keras follows them. Hidden files (`.DS_Store`, macOS' `._a.jpg`
    resource forks, which end .jpg but hold no image) are never images."""
    images, others = [], []
    for current, folders, names in os.walk(class_folder, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(names):
            relative = (Path(current) / name).relative_to(root).as_posix()
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                images.append(relative)
            else:
                others.append(relative)
    return images, others


# --- decoding, once ---------------------------------------------------------------------------


@dataclass
class Decoded:
    """The cache of one folder at one size: `images.npy` (every file, in `Found.files` order; an
    unreadable one's row is black) and `index.json` (each file's sha256, the unreadable ones)."""

    folder: Path
    sha256: list[str]
    failed: dict[int, str]  # file index -> why it could not be decoded

    def images(self) -> np.ndarray:
        return np.load(self.folder / "images.npy", mmap_mode="r")


def cache_key(found: Found, shape: tuple, fit: str) -> str:
    """Names, sizes and modification times of every image, with what they are decoded to: a
    changed, added or removed file changes it; reading the folder again does not."""
    digest = hashlib.sha256(f"v{DECODER_VERSION} {shape} {fit}\n".encode())
    for name in found.files:
        stat = (found.folder / name).stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decode(found: Found, shape: tuple, fit: str) -> Decoded:
    """Every image decoded to `shape` once; later runs on the unchanged folder read the cache."""
    if fit not in FITS:
        raise UsageError(f"data.image_fit={fit}: must be one of {', '.join(FITS)}")
    key = cache_key(found, shape, fit)
    target = paths.data_root() / "cache" / "image_folder" / f"{found.folder.name}-{key[:16]}"
    if not (target / "index.json").is_file():
        _decode_into(found, shape, fit, target)
    index = json.loads((target / "index.json").read_text())
    return Decoded(target, index["sha256"], {int(i): reason for i, reason in index["failed"].items()})


def _decode_into(found: Found, shape: tuple, fit: str, target: Path) -> None:
    """Decode into a hidden folder renamed into place at the end: an interrupted run never leaves
    a cache that looks complete. Rows are written into a memory-mapped `.npy`, so decoding
    10,000 photos holds one of them in memory, not all."""
    say(f"decoding {len(found.files)} images of {found.folder} to {'x'.join(map(str, shape))} ({fit}), once: "
        f"later runs read {target}")
    staging = target.with_name(f".{target.name}.{os.getpid()}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        images = np.lib.format.open_memmap(staging / "images.npy", mode="w+", dtype=np.uint8, shape=(len(found.files), *shape))
        digests, failed = [], {}
        for row, name in enumerate(found.files):
            path = found.folder / name
            content = path.read_bytes()
            digests.append(hashlib.sha256(content).hexdigest())
            if not content:
                failed[row] = "zero bytes"
                continue
            try:
                images[row] = read_image(path, shape, fit)
            except PipelineError as exc:
                failed[row] = str(exc).removeprefix(f"{path}: ")
        images.flush()
        del images
        (staging / "index.json").write_text(json.dumps({"folder": str(found.folder), "files": found.files, "sha256": digests,
                                                        "failed": failed, "shape": list(shape), "fit": fit}))
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "index.json").is_file():  # not a concurrent run that decoded the same folder first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _usable(found: Found, decoded: Decoded, on_corrupt: str) -> np.ndarray:
    """Indices of the images to use; unreadable ones refuse the run unless `on_corrupt = "skip"`."""
    if decoded.failed and on_corrupt != "skip":
        named = [f"{found.files[i]} ({reason})" for i, reason in sorted(decoded.failed.items())]
        raise PipelineError(f"{found.folder}: {len(named)} of {len(found.files)} images cannot be read: {_listed(named)}; "
                            f"replace or remove them, or set on_corrupt = \"skip\" in [data.options]")
    if decoded.failed:
        say(f"warning: skipped {len(decoded.failed)} unreadable image(s) of {found.folder}: "
            f"{_listed([found.files[i] for i in sorted(decoded.failed)])}")
    return np.asarray([i for i in range(len(found.files)) if i not in decoded.failed], np.int64)


def _listed(names: list[str]) -> str:
    more = len(names) - _SHOWN
    return ", ".join(names[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


# --- splits -----------------------------------------------------------------------------------


def _groups(found: Found, options: dict) -> np.ndarray:
    """The group (object) of every image, from the CSV: matched by the image's path relative to
    the folder, its file name, or its name without the extension."""
    import pandas as pd

    path = Path(options["groups"]).expanduser()
    path = path if path.is_absolute() else found.folder / path
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise PipelineError(f"data.options.groups: {path} is not a readable CSV ({exc})") from None
    columns = (options["file_column"], options["group_column"])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PipelineError(f"{path} has no column {missing[0]}; its columns: {', '.join(table.columns)}")
    group_of = dict(zip(table[columns[0]], table[columns[1]]))
    groups, unmatched = [], []
    for name in found.files:
        relative = Path(name)
        keys = (name, relative.name, relative.stem)
        group = next((group_of[key] for key in keys if key in group_of), None)
        groups.append(group if group is not None else "")
        if group is None:
            unmatched.append(name)
    if unmatched:
        raise PipelineError(f"{path}: {len(unmatched)} image(s) have no row (no {columns[0]} equal to the file's name): "
                            f"{_listed(unmatched)}")
    return np.asarray(groups, dtype=object)


def _split_indices(found: Found, usable: np.ndarray, groups, spec) -> tuple[dict[str, np.ndarray], str]:
    """Indices into `found.files` of each split: the split folders, then what is missing carved
    (seeded, stratified by class, whole groups only when there are groups)."""
    seed, val_fraction = spec.train.seed, spec.data.val_fraction
    test_fraction = spec.data.options.get("test_fraction", 0.2)
    split_of = np.asarray([found.split_of[i] for i in usable], dtype=object)
    grouped = f", whole {spec.data.options.get('group_column')} groups" if groups is not None else ""
    if found.has_split_folders:
        parts = {split: usable[split_of == split] for split in SPLITS}
    else:
        parts = {"train": usable, "val": usable[:0], "test": usable[:0]}
    if not len(parts["train"]):
        raise PipelineError(f"{found.folder}: no readable training images")
    if not len(parts["test"]):
        parts["train"], parts["test"] = _carve(parts["train"], found.labels, groups, test_fraction, seed, found.folder)
    if len(parts["val"]):
        origin = "the val/ folder"
    elif val_fraction == 0:
        origin = "none (val_fraction=0: trained on all of train)"
    else:
        share = val_fraction if found.has_split_folders and (found.folder / "test").is_dir() else val_fraction / (1 - test_fraction)
        parts["train"], parts["val"] = _carve(parts["train"], found.labels, groups, share, seed + 1, found.folder)
        origin = f"a seeded stratified {val_fraction:.0%} of the images{grouped}"
    return parts, origin


def _carve(indices: np.ndarray, labels: np.ndarray, groups, fraction: float, seed: int, folder: Path):
    """(kept, held out): `fraction` of `indices` held out, stratified by label; with groups, whole
    groups only (scikit-learn's StratifiedGroupKFold, one fold held out: as near the fraction
    as whole groups allow)."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    try:
        with warnings.catch_warnings():  # a rare class cannot reach every fold: expected, not news
            warnings.filterwarnings("ignore", message="The least populated class")
            if groups is None:
                y = labels[indices]
                counts = np.bincount(y)
                stratify = y if counts[counts > 0].min() >= 2 and round(fraction * len(y)) >= len(counts[counts > 0]) else None
                kept, held = train_test_split(indices, test_size=fraction, random_state=seed, stratify=stratify)
            else:
                splitter = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
                keep, hold = next(splitter.split(indices, labels[indices], groups[indices]))
                kept, held = indices[keep], indices[hold]
    except ValueError as exc:
        raise PipelineError(f"{folder}: {len(indices)} images are too few to hold out {fraction:.0%} of them ({exc})") from None
    if not len(kept) or not len(held):
        raise PipelineError(f"{folder}: {len(indices)} images are too few to hold out {fraction:.0%} of them")
    return np.sort(kept), np.sort(held)


def _split(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, cache: Path) -> Split:
    """The split's images as a memory-mapped array: a slice of the cache when the split is
    contiguous in it (split folders), else its rows gathered once into a file beside it."""
    if not len(indices):
        return Split(images[:0], labels[:0])
    start, stop = int(indices[0]), int(indices[-1]) + 1
    if stop - start == len(indices):
        return Split(images[start:stop], labels[start:stop])
    path = cache / f"split-{hashlib.sha256(indices.tobytes()).hexdigest()[:16]}.npy"
    if not path.is_file():
        staging = path.with_name(f".{path.name}.{os.getpid()}.part")
        rows = np.lib.format.open_memmap(staging, mode="w+", dtype=np.uint8, shape=(len(indices), *images.shape[1:]))
        for begin in range(0, len(indices), 256):  # a chunk at a time: memory stays flat
            rows[begin : begin + 256] = images[indices[begin : begin + 256]]
        rows.flush()
        del rows
        os.replace(staging, path)
    return Split(np.load(path, mmap_mode="r"), labels[indices])
