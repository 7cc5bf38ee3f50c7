"""The skin lesion loader: MedMNIST npz (and MedMNIST+'s larger copies), the bundled x/y splits,
and the HAM10000 layout (built here from real DermaMNIST images) with its lesion-grouped split
and its resize cache, one per `data.image_size`."""

import numpy as np
import pandas as pd
import pytest
from conftest import make_ham10000

from pipelines.core import paths
from pipelines.core.errors import PipelineError
from pipelines.data.images import resize_images
from pipelines.data.loaders.medmnist_format import lesion_grouped_split, read_folder
from pipelines.tasks.image_classification import sized
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

SPEC = get_spec("skin")


@pytest.fixture
def bundled():
    return read_folder(paths.samples_dir("skin"), SPEC, "sample")


def test_bundled_sample_keeps_the_official_split(bundled):
    assert (len(bundled.train), len(bundled.val), len(bundled.test)) == (2000, 300, 600)
    assert bundled.train.x.shape[1:] == (28, 28, 3)
    assert np.bincount(bundled.train.y).argmax() == SPEC.class_names.index("nv")


def test_medmnist_npz_layout(bundled, tmp_path):
    np.savez(
        tmp_path / "dermamnist.npz",
        **{f"{s}_images": getattr(bundled, s).x for s in ("train", "val", "test")},
        **{f"{s}_labels": getattr(bundled, s).y.reshape(-1, 1) for s in ("train", "val", "test")},  # MedMNIST's (N, 1)
    )
    loaded = read_folder(tmp_path, SPEC, "data_dir")
    np.testing.assert_array_equal(loaded.val.y, bundled.val.y)


def test_lesion_grouped_split_never_shares_a_lesion():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(400), rng.integers(1, 4, size=400))
    labels = (groups % 7 == 0).astype(int) + (groups % 5 == 0)
    train, val, test = lesion_grouped_split(groups, labels, (0.1, 0.2), seed=0)
    assert len(train) + len(val) + len(test) == len(groups)
    assert not (set(groups[train]) & set(groups[test])) and not (set(groups[train]) & set(groups[val]))
    assert not set(groups[val]) & set(groups[test])
    assert 0.15 < len(test) / len(groups) < 0.25
    for split in (train, test):  # stratified: label shares close to the whole set's
        assert abs(np.mean(labels[split] == 0) - np.mean(labels == 0)) < 0.05


def at_size(size: int):
    """The skin spec at `data.image_size=size`, as the image task runs it."""
    return sized(apply_overrides(SPEC, {"data.image_size": size}))


def test_ham10000_layout_is_resized_cached_and_lesion_grouped(tmp_path, isolated):
    rows = make_ham10000(tmp_path / "ham")
    lesion_ids = np.array([r["lesion_id"] for r in rows])
    assert len(set(lesion_ids)) < len(rows) - 20  # several lesions have several images
    spec = apply_overrides(SPEC, {"data.data_dir": str(tmp_path / "ham")})
    first = read_folder(tmp_path / "ham", spec, "data_dir")
    assert first.train.x.shape[1:] == (28, 28, 3) and len(first.train) + len(first.val) + len(first.test) == len(rows)
    assert list(first.files) == ["HAM10000_metadata.csv"]
    (cache,) = (paths.data_root() / "cache").glob("ham10000-28x28x3-*.npz")
    everything = np.load(cache)["x"]  # every row's image, resized, in metadata order
    labels = np.array([SPEC.class_names.index(r["dx"]) for r in rows])
    train, val, test = lesion_grouped_split(lesion_ids, labels, (0.1, 0.2), spec.train.seed)
    np.testing.assert_array_equal(first.train.x, everything[train])
    np.testing.assert_array_equal(first.test.y, labels[test])
    assert not set(lesion_ids[train]) & set(lesion_ids[test]) and not set(lesion_ids[val]) & set(lesion_ids[test])
    assert not set(lesion_ids[train]) & set(lesion_ids[val])
    # The second read comes from the cache: the JPEGs are no longer needed.
    for jpg in (tmp_path / "ham").rglob("*.jpg"):
        jpg.unlink()
    second = read_folder(tmp_path / "ham", spec, "data_dir")
    np.testing.assert_array_equal(second.train.x, first.train.x)


def test_ham10000_is_read_at_the_chosen_size_with_a_cache_per_size(tmp_path, isolated):
    """DermaMNIST images upsampled to 4:3 JPEGs (HAM10000's 600x450 shape), read at 28 and 128 px:
    one cache file per size, the same lesion-grouped split at both, and a size that was never
    cached needs the JPEGs again."""
    folder = tmp_path / "ham"
    make_ham10000(folder, count=60, size=(160, 120))
    small = read_folder(folder, at_size(28), "data_dir")
    large = read_folder(folder, at_size(128), "data_dir")
    assert large.train.x.shape[1:] == (128, 128, 3) and large.train.x.dtype == np.uint8
    np.testing.assert_array_equal(large.test.y, small.test.y)  # the split does not depend on the size
    caches = sorted(p.name for p in (paths.data_root() / "cache").glob("ham10000-*.npz"))
    assert [name.split("-")[1] for name in caches] == ["128x128x3", "28x28x3"]
    assert len({name.split("-")[2] for name in caches}) == 2  # the key holds the size too
    # Upsampled, not a blur of something else: 128 px shrunk back to 28 is close to the 28 px read.
    difference = np.abs(resize_images(large.train.x[:8], (28, 28, 3)).astype(int) - small.train.x[:8].astype(int))
    assert difference.mean() < 12
    for jpg in folder.rglob("*.jpg"):
        jpg.unlink()
    np.testing.assert_array_equal(read_folder(folder, at_size(128), "data_dir").train.x, large.train.x)  # from its cache
    with pytest.raises(PipelineError, match="image\\(s\\) listed in HAM10000_metadata.csv are not under"):
        read_folder(folder, at_size(64), "data_dir")  # no 64 px cache: the JPEGs would be needed


def test_another_size_of_dermamnist_arrays_needs_medmnist_plus_or_the_jpegs(bundled, tmp_path):
    with pytest.raises(PipelineError) as error:
        read_folder(paths.samples_dir("skin"), at_size(128), "sample")
    assert "data.image_size=128" in str(error.value) and "train/val/test.npz (28x28)" in str(error.value)
    assert "HAM10000 JPEGs" in str(error.value) and "dermamnist_128.npz" in str(error.value)
    # MedMNIST+ names its larger copies dermamnist_<size>.npz: each size reads its own file.
    for name, side in (("dermamnist.npz", 28), ("dermamnist_64.npz", 64)):
        np.savez(tmp_path / name,
                 **{f"{s}_images": resize_images(getattr(bundled, s).x[:20], (side, side, 3)) for s in ("train", "val", "test")},
                 **{f"{s}_labels": getattr(bundled, s).y[:20].reshape(-1, 1) for s in ("train", "val", "test")})
    assert read_folder(tmp_path, at_size(28), "data_dir").train.x.shape[1:] == (28, 28, 3)
    at_64 = read_folder(tmp_path, at_size(64), "data_dir")
    assert at_64.train.x.shape[1:] == (64, 64, 3) and list(at_64.files) == ["dermamnist_64.npz"]
    with pytest.raises(PipelineError, match="or --set data.image_size=28 or 64$"):
        read_folder(tmp_path, at_size(224), "data_dir")


def test_ham10000_errors_name_the_problem(tmp_path, isolated):
    folder = tmp_path / "ham"
    make_ham10000(folder, count=10)
    (folder / "HAM10000_images_part_1" / "ISIC_0000003.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(PipelineError, match="ISIC_0000003.jpg: not a readable image"):
        read_folder(folder, SPEC, "data_dir")
    table = pd.read_csv(folder / "HAM10000_metadata.csv")
    table.drop(columns="lesion_id").to_csv(folder / "HAM10000_metadata.csv", index=False)
    with pytest.raises(PipelineError, match="lacks column\\(s\\) lesion_id"):
        read_folder(folder, SPEC, "data_dir")
    table.assign(dx="mole").to_csv(folder / "HAM10000_metadata.csv", index=False)
    with pytest.raises(PipelineError, match="unknown dx value\\(s\\) mole"):
        read_folder(folder, SPEC, "data_dir")


def test_empty_folder(tmp_path):
    with pytest.raises(PipelineError, match="holds no skin lesion data"):
        read_folder(tmp_path, SPEC, "data_dir")
