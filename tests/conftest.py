"""Every test runs against its own MLflow store, models, reports and data folders (under
pytest's tmp folders), so the suite never reads or writes the checkout's mlflow.db, mlruns/,
mlartifacts/, models/ or reports/: `make demo` then `make test` gives the same answers as
`make test` in a fresh clone. The session checks at its end that those stores are untouched."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


# What a run writes in a checkout (the defaults of pipelines.core.paths and the tracker): no
# test may read or write any of it. models/pretrained/ is committed and only read.
CHECKOUT_STORES = ("mlflow.db", "mlflow.db.lock", "mlruns", "mlartifacts", "models", "reports", "data/raw", "data/cache",
                   "usecases")


def store_environment(root: Path) -> dict[str, str]:
    """The variables that move every store a run touches into `root`."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PIPELINES_MODELS_ROOT": str(root / "models"),
            "PIPELINES_DATA_ROOT": str(root / "data"), "PIPELINES_REPORTS_ROOT": str(root / "reports"),
            "PIPELINES_USECASES_DIR": str(root / "usecases")}


def checkout_snapshot() -> dict[str, tuple[int, int]]:
    """Size and mtime of everything under the checkout's stores (a folder's mtime changes when
    an entry is added or removed in it)."""
    seen = {}
    for name in CHECKOUT_STORES:
        top = REPO / name
        if not top.exists():
            continue
        for path in [top, *(top.rglob("*") if top.is_dir() else [])]:
            stat = path.lstat()
            seen[str(path.relative_to(REPO))] = (stat.st_size, stat.st_mtime_ns)
    return seen


@pytest.fixture(scope="session", autouse=True)
def session_stores(tmp_path_factory):
    """The session's stores, in place of the checkout's and of whatever the shell points at (a
    user's MLFLOW_TRACKING_URI may be the team's server); then: were the checkout's touched?"""
    before = checkout_snapshot()
    environment = store_environment(tmp_path_factory.mktemp("session-stores"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        yield environment
    after = checkout_snapshot()
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, (f"the suite touched the checkout's stores (a test without its own store, or something else "
                         f"writing there meanwhile): {', '.join(changed[:20])}")


@pytest.fixture(autouse=True)
def own_stores(session_stores, tmp_path_factory, monkeypatch):
    """A fresh store of each kind for every test. A variable that a wider fixture already moved
    (`trained_once`: a module's shared run) is left as that fixture set it."""
    root = tmp_path_factory.mktemp("stores")
    for name, value in store_environment(root).items():
        if os.environ.get(name) == session_stores[name]:
            monkeypatch.setenv(name, value)
    return root


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Point tracking, models, reports and downloads at tmp_path itself (for a test that looks
    there, e.g. at tmp_path / "models"); returns that folder."""
    for name, value in store_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    return tmp_path


def wait_until_healthy(server, uri: str, log_path: Path, seconds: float) -> None:
    """Until the tracking server at `uri` answers /health with 200; its log's end if it dies or
    stays silent for `seconds`."""
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"tracking server did not answer /health in {seconds:g} s"
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


# Lines a user can do nothing about (issue 24): TensorFlow's C++ start-up banner, MLflow's advice
# to type-hint the served model's predict, setuptools' editable-install notice; MLflow's own
# registration lines and download bars, which say again what the run's summary says.
KNOWN_NOISE = ("oneDNN custom operations are on", "absl::InitializeLog", "Add type hints to the `predict` method",
               "Please be careful with folders in your working directory", "Successfully registered model",
               "Created version '", "Downloading artifacts")


def assert_quiet(stderr: str) -> None:
    """No known-harmless noise and no Python warning at all in a command's stderr."""
    for noise in KNOWN_NOISE:
        assert noise not in stderr, f"{noise!r} in:\n{stderr[-3000:]}"
    assert "Warning:" not in stderr and "WARNING:" not in stderr, stderr[-3000:]


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
    env = store_environment(root)  # caches (HAM10000's resized images) and reports too
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
