"""The skin lesion loader: MedMNIST npz, the bundled x/y splits, and the HAM10000 layout
(built here from real DermaMNIST images) with its lesion-grouped split and resize cache."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines import paths
from pipelines.config import apply_overrides
from pipelines.errors import PipelineError
from pipelines.loaders.medmnist_format import lesion_grouped_split, read_folder
from pipelines.usecases import get_spec

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


def make_ham10000(folder, bundled, count=140):
    """A HAM10000-layout folder: real DermaMNIST images as JPEGs, two images per lesion."""
    images = folder / "HAM10000_images_part_1"
    images.mkdir(parents=True)
    rows = []
    for i in range(count):
        image_id = f"ISIC_{i:07d}"
        Image.fromarray(bundled.train.x[i]).resize((60, 45)).save(images / f"{image_id}.jpg", quality=90)
        rows.append({"lesion_id": f"HAM_{i // 2:07d}", "image_id": image_id, "dx": SPEC.class_names[bundled.train.y[i]]})
    pd.DataFrame(rows).to_csv(folder / "HAM10000_metadata.csv", index=False)
    return rows


def test_ham10000_layout_is_resized_cached_and_lesion_grouped(bundled, tmp_path, isolated):
    rows = make_ham10000(tmp_path / "ham", bundled)
    spec = apply_overrides(SPEC, {"data.data_dir": str(tmp_path / "ham")})
    first = read_folder(tmp_path / "ham", spec, "data_dir")
    assert first.train.x.shape[1:] == (28, 28, 3) and len(first.train) + len(first.val) + len(first.test) == len(rows)
    assert list(first.files) == ["HAM10000_metadata.csv"]
    (cache,) = (paths.data_root() / "cache").glob("ham10000-28x28x3-*.npz")
    everything = np.load(cache)["x"]  # every row's image, resized, in metadata order
    lesion_ids = np.array([r["lesion_id"] for r in rows])
    labels = np.array([SPEC.class_names.index(r["dx"]) for r in rows])
    train, val, test = lesion_grouped_split(lesion_ids, labels, (0.1, 0.2), spec.train.seed)
    np.testing.assert_array_equal(first.train.x, everything[train])
    np.testing.assert_array_equal(first.test.y, labels[test])
    assert not set(lesion_ids[train]) & set(lesion_ids[test]) and not set(lesion_ids[val]) & set(lesion_ids[test])
    # The second read comes from the cache: the JPEGs are no longer needed.
    for jpg in (tmp_path / "ham").rglob("*.jpg"):
        jpg.unlink()
    second = read_folder(tmp_path / "ham", spec, "data_dir")
    np.testing.assert_array_equal(second.train.x, first.train.x)


def test_ham10000_errors_name_the_problem(bundled, tmp_path, isolated):
    folder = tmp_path / "ham"
    make_ham10000(folder, bundled, count=10)
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
