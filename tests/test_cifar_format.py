"""The CIFAR-format loader (CUCUMBER-9) on the real bundled batch."""

import os
import pickle

import numpy as np
import pytest
from conftest import prototype_2_folder, write_cifar_batch

from pipelines.core import paths
from pipelines.core.errors import PipelineError
from pipelines.data.loaders.cifar_format import read_batch, read_folder

CLASSES = tuple(f"c{i}" for i in range(9))


@pytest.fixture
def bundled():
    return read_folder(paths.samples_dir("cucumber"), CLASSES, "sample", 0.2, 42)


def test_single_batch_is_split_stratified(bundled):
    assert (len(bundled.train), len(bundled.test)) == (396, 99)
    assert bundled.train.x.shape[1:] == (32, 32, 3) and bundled.train.x.dtype == np.uint8
    assert set(np.unique(bundled.test.y)) == set(range(9))
    assert not set(map(bytes, bundled.train.x)) & set(map(bytes, bundled.test.x))


write_batch = write_cifar_batch


def test_cifar_python_batches_round_trip(bundled, tmp_path):
    x, y = bundled.train.x, bundled.train.y
    write_batch(tmp_path / "data_batch_1", x[:200], y[:200])
    write_batch(tmp_path / "data_batch_2", x[200:], y[200:])
    write_batch(tmp_path / "test_batch", bundled.test.x, bundled.test.y)
    loaded = read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)
    np.testing.assert_array_equal(loaded.train.x, x)
    np.testing.assert_array_equal(loaded.test.y, bundled.test.y)
    assert sorted(loaded.files) == ["data_batch_1", "data_batch_2", "test_batch"]


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": Exploit()}))
    with pytest.raises(PipelineError, match="refusing to load"):
        read_batch(tmp_path / "data_batch_1")
    assert not (tmp_path / "pwned").exists()


def test_truncated_batch_is_named(bundled, tmp_path):
    write_batch(tmp_path / "data_batch_1", bundled.train.x[:10], bundled.train.y[:10])
    (tmp_path / "data_batch_1").write_bytes((tmp_path / "data_batch_1").read_bytes()[:1000])
    with pytest.raises(PipelineError, match="data_batch_1 is not a readable CIFAR batch"):
        read_batch(tmp_path / "data_batch_1")


def test_empty_folder(tmp_path):
    with pytest.raises(PipelineError, match="holds no CIFAR-format data"):
        read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)


def test_bad_labels_are_named_before_the_split(bundled, tmp_path):
    """The one-npz layout is split here: its labels are checked first (a stratified split of
    label -1 or 12 used to be a traceback from numpy)."""
    np.savez(tmp_path / "cucumber.npz", x=bundled.test.x, y=np.where(bundled.test.y == 8, 12, bundled.test.y))
    with pytest.raises(PipelineError, match=r"cucumber.npz labels span 0..12, expected 0..8"):
        read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)
    np.savez(tmp_path / "cucumber.npz", x=bundled.test.x[:1], y=bundled.test.y[:1])
    with pytest.raises(PipelineError, match=r"cucumber.npz holds 1 image\(s\); too few to split"):
        read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)


def test_batch_of_floats_is_refused_not_cast(bundled, tmp_path):
    write_batch(tmp_path / "data_batch_1", bundled.train.x[:20].astype(np.float32) / 255, bundled.train.y[:20])
    write_batch(tmp_path / "test_batch", bundled.test.x[:20], bundled.test.y[:20])
    with pytest.raises(PipelineError, match=r"data_batch_1: 'data' is float32 \(20, 3072\), expected uint8"):
        read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)


def test_the_archive_as_downloaded_is_unpacked_and_loaded(bundled, tmp_path, isolated):
    """`--data-dir cucumber-9-python.tar.gz`: CIFAR python batches in one top folder, as the
    CUCUMBER-9 release ships them, read through the spec's loader."""
    import tarfile

    from pipelines.data.loaders.cifar_format import load
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    batches = tmp_path / "cucumber-9-python"
    batches.mkdir()
    x, y = bundled.train.x, bundled.train.y
    write_batch(batches / "data_batch_1", x[:200], y[:200])
    write_batch(batches / "data_batch_2", x[200:], y[200:])
    write_batch(batches / "test_batch", bundled.test.x, bundled.test.y)
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"2L", b"BL"]}))
    archive = tmp_path / "cucumber-9-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cucumber-9-python")
    spec = apply_overrides(get_spec("cucumber"), {"data.data_dir": str(archive)})
    loaded = load(spec)
    np.testing.assert_array_equal(loaded.train.x, x)
    np.testing.assert_array_equal(loaded.test.y, bundled.test.y)
    assert loaded.origin == "data_dir" and sorted(loaded.files) == ["data_batch_1", "data_batch_2", "test_batch"]
    (unpacked,) = (paths.data_root() / "cache" / "archives").iterdir()
    assert unpacked.name.startswith("cucumber-9-python-") and (unpacked / "cucumber-9-python" / "test_batch").is_file()


def test_prototype_2_rows_of_three_views_are_read_as_9_channels(bundled, tmp_path):
    """9 x 32 x 32-byte rows, channel-major: view k is channels 3k to 3k+2, each an RGB photo."""
    x = np.concatenate([bundled.train.x, bundled.test.x])
    y = np.concatenate([bundled.train.y, bundled.test.y])
    views = prototype_2_folder(tmp_path, x, y)
    loaded = read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)
    assert loaded.train.x.shape == (396, 32, 32, 9) and loaded.test.x.shape == (99, 32, 32, 9)
    np.testing.assert_array_equal(loaded.train.x[..., 0:3], x[:396])  # the photo
    np.testing.assert_array_equal(loaded.train.x[..., 3:6], x[:396, :, ::-1])  # its mirror image
    np.testing.assert_array_equal(loaded.test.x, views[396:])
    np.testing.assert_array_equal(loaded.test.y, y[396:])


def test_views_the_spec_does_not_read_are_one_line(bundled, tmp_path, isolated):
    from pipelines.data.loaders.cifar_format import load
    from pipelines.tasks.image_classification import stacked_views
    from pipelines.usecases import get_spec
    from pipelines.usecases.settings import apply_overrides

    x, y = bundled.test.x, bundled.test.y
    prototype_2_folder(tmp_path / "p2", x, y, test_size=30)
    spec = apply_overrides(get_spec("cucumber"), {"data.data_dir": str(tmp_path / "p2")})
    with pytest.raises(PipelineError) as error:
        load(stacked_views(spec))
    assert str(error.value) == (f"{tmp_path / 'p2'} holds 3 view(s) of each object (9 channels) "
                                "but the spec reads 1 (3 channels): --set data.views=3")
    assert load(stacked_views(apply_overrides(spec, {"data.views": 3}))).train.x.shape == (69, 32, 32, 9)
    with pytest.raises(PipelineError, match=r"holds 1 view\(s\) of each object \(3 channels\) but the spec reads 3 \(9 channels\)"):
        load(stacked_views(apply_overrides(get_spec("cucumber"), {"data.source": "sample", "data.views": 3})))


def test_rows_of_another_length_or_mixed_batches_are_refused(bundled, tmp_path):
    write_batch(tmp_path / "data_batch_1", bundled.train.x[:20], bundled.train.y[:20])
    write_batch(tmp_path / "data_batch_2", np.concatenate([bundled.train.x[20:40]] * 3, axis=-1), bundled.train.y[20:40])
    write_batch(tmp_path / "test_batch", bundled.test.x[:20], bundled.test.y[:20])
    with pytest.raises(PipelineError, match=r"data_batch_2: rows of 9216 bytes, the batches before it have 3072"):
        read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)
    write_batch(tmp_path / "data_batch_2", np.concatenate([bundled.train.x[20:40]] * 2, axis=-1), bundled.train.y[20:40])
    with pytest.raises(PipelineError, match=r"data_batch_2: 'data' is uint8 \(20, 6144\), expected uint8 \(N, row\) with a row of 3072 "
                                            r"\(3 channels\), 9216 \(9 channels\) bytes"):
        read_folder(tmp_path, CLASSES, "data_dir", 0.2, 0)
