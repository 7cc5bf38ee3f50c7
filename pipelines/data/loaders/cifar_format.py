"""32x32 colour image sets in the CIFAR-10 "python" layout: CUCUMBER-9 (cucumber grading).

Reads whichever layout the folder holds, first match wins:
1. the CIFAR-10 python batches as released (`data_batch_1..5`, `test_batch`, `batches.meta`):
   the full CUCUMBER-9 prototype 1 after unpacking `cucumber-9-python.tar.gz`, or prototype 2,
   whose rows hold three views of each cucumber (9 x 32 x 32 bytes, channel-major: views are
   channels 0-2, 3-5 and 6-8); the channel count is read from the row length;
2. `train.npz` + `test.npz` with `x` (N x 32 x 32 x 3, or x 9 for three views, uint8) and `y`;
3. one `.npz` of x/y (the bundled sample: the official test batch only), split here into
   train and test, seeded and stratified (`data.options["test_fraction"]`).

The batches are Python pickles. They are read with an unpickler that only builds dicts,
lists, strings, numbers and NumPy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from pipelines.data.dataset import Dataset, Split, check_label_range, checked_split
from pipelines.core.errors import PipelineError
from pipelines.data.loaders.mnist_format import _read_xy_npz
from pipelines.data.sources import locate, sha256sum
from pipelines.data.splits import stratified_indices

LAYOUTS = "CIFAR python batches (data_batch_*, test_batch), train.npz + test.npz, or one x/y .npz"


class _ArraysOnlyUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path) -> dict:
    """One CIFAR python batch: {'data': N x 3072 uint8 (channel-major), 'labels': [...]}, keys as str."""
    try:
        raw = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise PipelineError(f"{path} is not a readable CIFAR batch ({exc}); re-extract the archive") from None
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


PIXELS = 32 * 32
ROW_CHANNELS = (3, 9)  # prototype 1: one RGB photo a row; prototype 2: three


def _batch_split(paths: list[Path]) -> Split:
    xs, ys = [], []
    for path in paths:
        batch = read_batch(path)
        data = np.asarray(batch.get("data"))
        rows = ", ".join(f"{c * PIXELS} ({c} channels)" for c in ROW_CHANNELS)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] not in [c * PIXELS for c in ROW_CHANNELS]:
            raise PipelineError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, row) with a row of {rows} bytes")
        if xs and data.shape[1] != xs[0].shape[-1] * PIXELS:
            raise PipelineError(f"{path}: rows of {data.shape[1]} bytes, the batches before it have {xs[0].shape[-1] * PIXELS}")
        xs.append(data.reshape(len(data), -1, 32, 32).transpose(0, 2, 3, 1))  # CHW rows -> HWC images
        ys.append(checked_split(xs[-1], np.asarray(batch.get("labels")), f"{path}: 'labels'").y)
    return Split(np.concatenate(xs), np.concatenate(ys))


def load(spec) -> Dataset:
    located = locate(spec.name, spec.data.source, spec.data.data_dir, (), describe=LAYOUTS)
    dataset = read_folder(located.folder, spec.class_names, located.origin, spec.data.options.get("test_fraction", 0.2), spec.train.seed)
    check_views(dataset, spec, located.folder)
    dataset.check_images(spec.input_shape, str(located.folder))
    return dataset


def check_views(dataset: Dataset, spec, folder: Path) -> None:
    """One line when the photos a row holds are not the views the spec reads (`data.views`)."""
    found = dataset.train.x.shape[-1] if dataset.train.x.ndim == 4 else 1
    expected = spec.input_shape[-1]
    if found != expected and found % 3 == 0 and expected % 3 == 0:
        raise PipelineError(f"{folder} holds {found // 3} view(s) of each object ({found} channels) but the spec reads "
                            f"{expected // 3} ({expected} channels): --set data.views={found // 3}")


def read_folder(folder: Path, class_names: tuple, origin: str, test_fraction: float, seed: int) -> Dataset:
    batches = sorted(folder.glob("data_batch_*"))
    if batches and (folder / "test_batch").is_file():
        used = batches + [folder / "test_batch"]
        train, test = _batch_split(batches), _batch_split([folder / "test_batch"])
    elif (folder / "train.npz").is_file() and (folder / "test.npz").is_file():
        used = [folder / "train.npz", folder / "test.npz"]
        train, test = (_read_xy_npz(p) for p in used)
    else:
        used = sorted(folder.glob("*.npz"))
        if len(used) != 1:
            raise PipelineError(f"{folder} holds no CIFAR-format data; expected {LAYOUTS}")

        everything = _read_xy_npz(used[0])
        check_label_range(everything.y, len(class_names), str(used[0]))  # before they are split on
        if len(everything) < 2:
            raise PipelineError(f"{used[0]} holds {len(everything)} image(s); too few to split into train and test")
        keep, held = stratified_indices(everything.y, test_fraction, seed)
        train, test = everything.take(np.sort(keep)), everything.take(np.sort(held))
    return Dataset(
        train=train,
        test=test,
        class_names=tuple(class_names),
        origin=origin,
        files={path.name: sha256sum(path) for path in used},
    )
