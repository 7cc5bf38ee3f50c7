"""Every test runs against its own MLflow store, models folder and download cache (under
pytest's tmp_path), so tests never touch the user's mlflow.db or models/."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point tracking, models and downloads at tmp_path; returns that folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("PIPELINES_MODELS_ROOT", str(tmp_path / "models"))
    monkeypatch.setenv("PIPELINES_DATA_ROOT", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


def run_cli(*args, env=None, timeout=600):
    """Run `python -m pipelines ARGS` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@contextlib.contextmanager
def trained_once(tmp_path_factory, usecase: str, overrides: dict):
    """Train `usecase` with `overrides` once, in its own MLflow store and models folder; for
    module-scoped fixtures, so a module's tests share one real run."""
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    root = tmp_path_factory.mktemp(usecase)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PIPELINES_MODELS_ROOT": str(root / "models"),
           "PIPELINES_DATA_ROOT": str(root / "data")}  # caches (HAM10000's resized images) too
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        from pipelines.pipeline import run_train

        spec = apply_overrides(get_spec(usecase), overrides)
        yield {"root": root, "env": env, "spec": spec, "summary": run_train(spec, run_name="test")}


def write_cifar_batch(path, x, y, protocol=2):
    """A CIFAR python batch of HWC images `x`: rows channel-major, as CIFAR-10 and CUCUMBER-9 store them."""
    import pickle

    data = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # HWC images -> CHW rows
    with open(path, "wb") as handle:
        pickle.dump({b"data": data, b"labels": [int(v) for v in y], b"batch_label": b"x"}, handle, protocol=protocol)


def three_views(x, y):
    """CUCUMBER-9 prototype 2's shape from real prototype-1 photos: view 1 the photo, view 2 its
    mirror image, view 3 another photo of the same grade (the next one), stacked as 9 channels."""
    import numpy as np

    other = np.empty_like(x)
    for grade in np.unique(y):
        same = np.flatnonzero(y == grade)
        other[same] = x[np.roll(same, -1)]
    return np.concatenate([x, x[:, :, ::-1], other], axis=-1)


def prototype_2_folder(folder, x, y, test_size: int = 99):
    """data_batch_1, data_batch_2 and test_batch with 9 x 32 x 32-byte rows; returns the 9-channel images."""
    views = three_views(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    train = len(views) - test_size
    write_cifar_batch(folder / "data_batch_1", views[: train // 2], y[: train // 2])
    write_cifar_batch(folder / "data_batch_2", views[train // 2 : train], y[train // 2 : train])
    write_cifar_batch(folder / "test_batch", views[train:], y[train:])
    return views


def make_ham10000(folder: Path, count: int = 140, size: tuple[int, int] = (60, 45)) -> list[dict]:
    """A folder in the HAM10000 layout, built from real DermaMNIST images (the bundled sample's
    first `count` training images): `HAM10000_metadata.csv` (lesion_id, image_id, dx) and JPEGs
    of `size` (width, height) in a subfolder, as released. Like HAM10000, a lesion has one to
    three images, all of one diagnosis. Returns the metadata rows, in file order."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from pipelines.core import paths
    from pipelines.usecases import get_spec

    classes = get_spec("skin").class_names
    with np.load(paths.samples_dir("skin") / "train.npz") as sample:
        x, y = sample["x"][:count], sample["y"][:count]
    images = folder / "HAM10000_images_part_1"
    images.mkdir(parents=True)
    rows, lesion = [], 0
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        start = 0
        while start < len(members):
            size_of_lesion = 1 + lesion % 3
            for i in members[start : start + size_of_lesion]:
                image_id = f"ISIC_{i:07d}"
                Image.fromarray(x[i]).resize(size, Image.Resampling.BICUBIC).save(images / f"{image_id}.jpg", quality=90)
                rows.append({"lesion_id": f"HAM_{lesion:07d}", "image_id": image_id, "dx": classes[int(label)]})
            start += size_of_lesion
            lesion += 1
    pd.DataFrame(rows).to_csv(folder / "HAM10000_metadata.csv", index=False)
    return rows
