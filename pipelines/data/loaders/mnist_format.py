"""28x28 grey image sets in the MNIST formats: digits (MNIST) and clothing (Fashion-MNIST).

Reads whichever layout the folder holds, first match wins:
1. `train.npz` + `test.npz` with arrays `x`, `y` (the bundled samples);
2. Keras' `mnist.npz` with `x_train`, `y_train`, `x_test`, `y_test`;
3. the original IDX files (`train-images-idx3-ubyte[.gz]`, ...), as Zalando, LeCun and
   Debian's `dataset-fashion-mnist` ship them.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np

from pipelines.data.dataset import Dataset, Split, checked_split
from pipelines.core.errors import PipelineError
from pipelines.data.sources import RemoteFile, locate, sha256sum

IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
LAYOUTS = "train.npz + test.npz (x, y), mnist.npz (x_train, ...), or the four IDX files"


def load(spec) -> Dataset:
    options = spec.data.options
    remote = tuple(RemoteFile(**f) for f in options.get("remote_files", ()))
    located = locate(
        spec.name,
        spec.data.source,
        spec.data.data_dir,
        remote,
        system_dirs=tuple(options.get("system_dirs", ())),
        describe=LAYOUTS,
    )
    dataset = read_folder(located.folder, spec.class_names, located.origin)
    dataset.check_images(spec.input_shape, str(located.folder))
    return dataset


def read_folder(folder: Path, class_names: tuple, origin: str) -> Dataset:
    if (folder / "train.npz").is_file() and (folder / "test.npz").is_file():
        train = _read_xy_npz(folder / "train.npz")
        test = _read_xy_npz(folder / "test.npz")
        used = [folder / "train.npz", folder / "test.npz"]
    elif (folder / "mnist.npz").is_file():
        arrays = _read_npz(folder / "mnist.npz", ("x_train", "y_train", "x_test", "y_test"))
        train = checked_split(arrays["x_train"], arrays["y_train"], f"{folder / 'mnist.npz'} (x_train, y_train)")
        test = checked_split(arrays["x_test"], arrays["y_test"], f"{folder / 'mnist.npz'} (x_test, y_test)")
        used = [folder / "mnist.npz"]
    else:
        found = {key: _find_idx(folder, name) for key, name in IDX_NAMES.items()}
        missing = [IDX_NAMES[key] for key, path in found.items() if path is None]
        if missing:
            raise PipelineError(f"{folder} holds no MNIST-format data (missing {', '.join(missing)}); expected {LAYOUTS}")
        train = checked_split(read_idx(found["train_x"]), read_idx(found["train_y"]), f"{found['train_x']} + {found['train_y'].name}")
        test = checked_split(read_idx(found["test_x"]), read_idx(found["test_y"]), f"{found['test_x']} + {found['test_y'].name}")
        used = list(found.values())
    files = {path.name: sha256sum(path) for path in used}
    return Dataset(
        train=train,
        test=test,
        class_names=tuple(class_names),
        origin=origin,
        files=files,
    )


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _read_xy_npz(path: Path) -> Split:
    arrays = _read_npz(path, ("x", "y"))
    return checked_split(arrays["x"], arrays["y"], str(path))


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise PipelineError(f"{path} lacks arrays {', '.join(missing)} (has {', '.join(archive.files)})")
            return {key: archive[key] for key in keys}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise PipelineError(f"{path} is not a readable .npz archive ({exc}); re-copy or re-download it") from None


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (http://yann.lecun.com/exdb/mnist/ format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise PipelineError(f"{path} is truncated or not gzip ({exc}); re-copy or re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise PipelineError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise PipelineError(f"{path} holds {len(raw)} bytes, its header promises {expected}: the file is truncated")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
