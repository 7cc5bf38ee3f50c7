"""`python -m pipelines init NAME --images DIR` (photos; a CSV: `--table`, whose inspection is
`pipelines.usecases.init_table`): look at a user's data and write the use-case file that trains
on it, commented with what was found and why each default was chosen.

The file is an ordinary use-case file (`pipelines.usecases.spec_file`): the user reads it, edits
what they know better (a title, what the model is for, its limits) and runs `make train-NAME`.
Nothing is guessed that the data can say (classes, their order, counts, sizes, channels); what
the data cannot say (the grade names' meaning, whether a mirrored photo is the same class) is a
comment for the user to settle.

Defaults, and why:
- up to a few hundred images per class (a median of at most `TRANSFER_UP_TO` per class): the
  pretrained `transfer` builder (ImageNet MobileNet, alpha 0.25: the weights ship in
  `models/pretrained/`, so a fresh clone trains with no network) and a fine-tuning phase; too
  few photos to learn features from scratch, and cucumber's 495 photos measured it
  (benchmarks/RESULTS.md, `make bench-cucumber`);
- more than that: `small_cnn` from scratch: enough data to learn its own features, at a
  fraction of a pretrained backbone's cost an epoch on a CPU;
- fewer than `CROSS_VALIDATE_BELOW` images in all (and no test/ folder of the user's): 5-fold
  cross-validation, since a 20% test split of them would score too few images to tell settings
  apart (cucumber: 99 test images, +-5 points);
- the image side: the typical photo's shorter side, rounded down to a common size and capped
  at `MAX_SIDE` (the cache and every epoch grow with its square); grey when every photo is grey;
- classes more than 3:1 apart: the `balanced` operating point and ranking by balanced accuracy.

`write_usecase_file` is the shared end of every `init` (photos here, tables beside it): never
overwrite, check the file reads back, print it, say the next command.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from pathlib import Path

from pipelines.core.errors import UsageError
from pipelines.data.loaders.image_folder import scan
from pipelines.modeling.builders.transfer import find_local_weights
from pipelines.usecases import USECASES, user_dir
from pipelines.usecases.spec_file import NAME, read_spec_file

TRANSFER_UP_TO = 1000  # median images per class up to which the pretrained backbone is the default
CROSS_VALIDATE_BELOW = 1000  # images in all below which cross-validation replaces the test split
SIDES = (28, 32, 48, 64, 96, 128, 160)  # image sides init picks from
MAX_SIDE = 128
HEADERS_READ = 2000  # image headers read to describe sizes and channels (spread over the folder)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def write_usecase_file(name: str, text: str, folder: Path | None = None) -> Path:
    """Write `text` as the use case `name` in `folder` (default: the user's use-case folder), never
    over an existing file; the file must read back as a valid use case. Prints the file and the
    next command; returns its path."""

    if not NAME.fullmatch(name):
        raise UsageError(f"init {name}: a use case's name is lower-case letters, digits, - and _, starting with a letter (e.g. grapes)")
    if name in USECASES:
        raise UsageError(f"init {name}: '{name}' is a built-in use case; choose another name")
    folder = Path(folder).expanduser().resolve() if folder else user_dir()
    path = folder / f"{name}.toml"
    if path.exists():
        raise UsageError(f"{path} already exists; init never overwrites a use-case file: choose another name or remove it")
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{name}.{os.getpid()}.init"
    staging.mkdir()
    try:
        draft = staging / f"{name}.toml"
        draft.write_text(text, encoding="utf-8")
        read_spec_file(draft)  # a file init writes must be one the pipeline reads
        try:
            os.link(draft, path)  # fails if the name appeared meanwhile: still never an overwrite
        except FileExistsError:
            raise UsageError(f"{path} already exists; init never overwrites a use-case file") from None
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    print(text, end="" if text.endswith("\n") else "\n")
    print(f"\nwrote {path}")
    in_user_dir = folder == user_dir()
    print(f"next: make train-{name}" if in_user_dir else f"next: python -m pipelines train {path}")
    return path


# --- photos in folders ------------------------------------------------------------------------


def init_images(name: str, images: str, folder: Path | None = None) -> Path:
    """Look at the photo folder `images` and write the use case `name` that trains on it."""
    return write_usecase_file(name, images_usecase_text(name, Path(images).expanduser().resolve()), folder)


def images_usecase_text(name: str, root: Path) -> str:
    """The commented TOML of a use case over the photo folder `root`."""

    found = scan(root)  # every problem with the folder is a one-line error here, before anything is written
    classes = found.class_names
    counts = Counter(int(label) for label in found.labels)
    per_class = [counts.get(i, 0) for i in range(len(classes))]
    sizes, modes, unreadable = _headers(found)
    grey = bool(modes) and all(mode in GREY_MODES for mode in modes)
    side = _side(sizes)
    shape = [side, side] if grey else [side, side, 3]
    median = statistics.median(per_class)
    transfer = median <= TRANSFER_UP_TO
    split_counts = Counter(found.split_of)
    has_test = "test" in split_counts
    cross_validate = len(found.files) < CROSS_VALIDATE_BELOW and not has_test
    imbalance = max(per_class) / max(min(per_class), 1)
    local_weights = find_local_weights("mobilenet", 0.25)

    q = _toml
    limitations = (f"Trained on {len(found.files)} photos of {root.name}/ only; photos from other cameras, places or lighting "
                   "are out of distribution.")
    description = f"Classifies a photo into one of {len(classes)} classes: {', '.join(classes)}."
    lines = [
        f"# {name}: written by `python -m pipelines init {name} --images {root}`. Edit freely; `make train-{name}` reads it.",
        f"# Found in {root}:",
        f"#   {len(found.files)} images in {len(classes)} classes (class i is the i-th sorted folder name, as",
        "#   keras.utils.image_dataset_from_directory orders them):",
    ]
    lines += [f"#     {cls:<24} {count:>6} images{_split_note(found, i)}" for i, (cls, count) in enumerate(zip(classes, per_class))]
    lines += [f"#   class balance: the largest class has {imbalance:.1f}x the images of the smallest"
              + (" (imbalanced: see operating_point below)" if imbalance > 3 else "")]
    if split_counts.get(None) is None:
        lines += [f"#   split folders: {', '.join(f'{s}/ {split_counts[s]}' for s in ('train', 'val', 'test') if s in split_counts)}"]
    if sizes:
        widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
        lines += [f"#   sizes (width x height, of {len(sizes)} read): {min(widths)}x{min(heights)} smallest, "
                  f"{int(statistics.median(widths))}x{int(statistics.median(heights))} median, {max(widths)}x{max(heights)} largest",
                  f"#   colour modes: {', '.join(f'{m} {c}' for m, c in modes.most_common())}"
                  + (" (all grey: the model reads grey)" if grey else " (read as RGB)")]
    if found.ignored:
        shown = sorted({Path(f).name for f in found.ignored})
        lines += [f"#   ignored: {len(found.ignored)} file(s) that are not images "
                  f"({', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''})"]
    if unreadable:
        lines += [f"#   {len(unreadable)} file(s) could not be opened "
                  f"({', '.join(unreadable[:3])}{', ...' if len(unreadable) > 3 else ''}):",
                  "#   training refuses them by name unless on_corrupt = \"skip\" below"]
    lines += [
        "",
        f"title = {q(name.replace('_', ' ').replace('-', ' ').capitalize() + ' (photos)')}",
        'task = "image_classification"',
        "# The photos are decoded once to this size ([data] image_size, image_fit) and served at it:",
        "# a client sends uint8 pixels of this shape; `predict` fits photo files to it itself.",
        f"input_shape = {json.dumps(shape)}",
        f"class_names = {json.dumps(list(classes), ensure_ascii=False)}",
        f"description = {q(description)}",
        "# Say what the model is for and where it must not be used: both go into the model card.",
        f"intended_use = {q('TODO: what the model is for, and who uses its answers.')}",
        f"limitations = {q(limitations)}",
    ]
    if imbalance > 3:
        lines += [
            "# Classes more than 3:1 apart: serve the logit-adjusted rule tuned for balanced accuracy, and rank",
            "# runs by it (accuracy would reward always answering the largest class).",
            'operating_point = "balanced"',
            'ranking_metric = "test_balanced_accuracy"',
        ]
    lines += [
        "",
        "[data]",
        'loader = "image_folder"',
        f"image_size = {side}  # the side of the square the photos are fitted to; the cache and every epoch grow with its square",
        '# resize stretches a photo to the square; pad letterboxes it on black; crop cuts the centre square.',
        'image_fit = "resize"',
    ]
    if not cross_validate and "val" not in split_counts:
        lines += ["val_fraction = 0.1  # of the images, for validation curves and the balanced point's tau"]
    lines += [
        "",
        "[data.options]",
        f"folder = {q(str(root))}",
    ]
    if not has_test:
        lines += ["test_fraction = 0.2  # held out, seeded and stratified, when there is no test/ folder"
                  + (" (pooled into the folds while cv_folds > 0)" if cross_validate else "")]
    lines += [
        "# Several photos of one object? Keep them in one split: a CSV mapping each file to its object:",
        '# groups = "objects.csv"   group_column = "object_id"   file_column = "file"',
        '# Unreadable images (zero bytes, truncated) refuse the run, naming them; "skip" leaves them out and logs the list.',
        'on_corrupt = "refuse"',
        "",
        "[model]",
    ]
    if transfer:
        lines += [
            f"# {int(median)} images per class (median): too few to learn features from scratch; a MobileNet pretrained on",
            "# ImageNet (alpha 0.25, 0.2M parameters) with a new head, then its top fine-tuned.",
            'builder = "transfer"',
            'backbone = "mobilenet"',
            "alpha = 0.25",
            f"image_size = {max(side, 128)}  # the backbone's input side; the photos are upsampled to it inside the model",
            "# imagenet: the local copy in models/pretrained/ (shipped, no network needed)"
            + ("" if local_weights else " -- NOT FOUND here: the first run downloads it"),
            'weights = "imagenet"',
            "dropout = 0.3",
        ]
    else:
        lines += [
            f"# {int(median)} images per class (median): enough to learn features from scratch, and far cheaper an epoch",
            "# than a pretrained backbone (model.builder=transfer is a --set away).",
            'builder = "small_cnn"',
        ]
    lines += [
        "# Mirrored photos are the same class for most objects; remove it if not (text, digits, left/right).",
        'augmentation = ["flip_horizontal"]',
        "",
        "[train]",
    ]
    if transfer:
        lines += ["epochs = 15", "batch_size = 32", "learning_rate = 0.002",
                  "fine_tune_epochs = 5  # then the top 30 backbone layers learn at a tenth of the rate",
                  "fine_tune_layers = 30", "fine_tune_learning_rate = 0.0002"]
    else:
        lines += ["epochs = 20", "batch_size = 64"]
    lines += ["", "[validation]"]
    if cross_validate:
        lines += [
            f"# {len(found.files)} images: a 20% test split would score ~{len(found.files) // 5}, too few to tell settings apart;",
            "# 5-fold cross-validation scores every image once (5 fits, then the exported model on all of them).",
            "cv_folds = 5",
        ]
    else:
        lines += ["# Judged on the held-out test split" + (" (the test/ folder)." if has_test else "."), "cv_folds = 0"]
    return "\n".join(lines) + "\n"


def _split_note(found, label: int) -> str:
    if not found.has_split_folders:
        return ""
    per_split = Counter(split for split, y in zip(found.split_of, found.labels) if y == label)
    return " (" + ", ".join(f"{s} {per_split[s]}" for s in ("train", "val", "test") if per_split.get(s)) + ")"


def _headers(found) -> tuple[list[tuple[int, int]], Counter, list[str]]:
    """Sizes and colour modes from image headers (no pixel decoded), of up to `HEADERS_READ`
    files spread over the folder; the files that do not open as images."""
    from PIL import Image, UnidentifiedImageError

    step = max(1, len(found.files) // HEADERS_READ)
    sizes, modes, unreadable = [], Counter(), []
    for name in found.files[::step]:
        try:
            with Image.open(found.folder / name) as image:
                sizes.append(image.size)
                modes[image.mode] += 1
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            unreadable.append(name)
    return sizes, modes, unreadable


def _side(sizes: list[tuple[int, int]]) -> int:
    """The typical shorter side, rounded down to one of `SIDES`, at most `MAX_SIDE`."""
    if not sizes:
        return 64
    typical = statistics.median(min(w, h) for w, h in sizes)
    fitting = [side for side in SIDES if side <= min(typical, MAX_SIDE)]
    return fitting[-1] if fitting else SIDES[0]


def _toml(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)
