"""The MNIST-format loader on real data: the bundled sample, Keras' npz and IDX layouts, and
the errors for truncated or corrupt files."""

import gzip
import shutil
import struct

import numpy as np
import pytest

from pipelines import paths
from pipelines.errors import PipelineError
from pipelines.loaders.mnist_format import read_folder, read_idx

CLASSES = tuple(str(d) for d in range(10))


@pytest.fixture
def sample():
    return read_folder(paths.samples_dir("digits"), CLASSES, "sample")


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def test_bundled_sample_is_real_mnist(sample):
    assert sample.train.x.shape == (5000, 28, 28) and sample.train.x.dtype == np.uint8
    assert sample.test.x.shape == (1000, 28, 28)
    assert set(np.unique(sample.train.y)) == set(range(10))
    assert 30 < sample.train.x.mean() < 40  # MNIST's mean pixel is 33.3
    assert len(sample.files) == 2 and all(len(h) == 64 for h in sample.files.values())


def test_keras_npz_layout(sample, tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=sample.train.x, y_train=sample.train.y, x_test=sample.test.x, y_test=sample.test.y)
    loaded = read_folder(tmp_path, CLASSES, "data_dir")
    np.testing.assert_array_equal(loaded.test.x, sample.test.x)


def test_idx_layout_round_trips(sample, tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", sample.train.x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", sample.train.y.astype(np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", sample.test.x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", sample.test.y.astype(np.uint8))
    loaded = read_folder(tmp_path, CLASSES, "data_dir")
    np.testing.assert_array_equal(loaded.train.x, sample.train.x)
    np.testing.assert_array_equal(loaded.train.y, sample.train.y)


def test_truncated_idx_is_named(sample, tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(path, sample.test.x)
    data = gzip.decompress(path.read_bytes())[:-100]
    path.write_bytes(gzip.compress(data))
    with pytest.raises(PipelineError, match=f"{path}.*truncated"):
        read_idx(path)
    path.write_bytes(path.read_bytes()[:200])  # cut the gzip stream itself
    with pytest.raises(PipelineError, match=str(path)):
        read_idx(path)


def test_corrupt_npz_is_named(tmp_path):
    shutil.copy(paths.samples_dir("digits") / "test.npz", tmp_path / "test.npz")
    (tmp_path / "train.npz").write_bytes((paths.samples_dir("digits") / "train.npz").read_bytes()[:5000])
    with pytest.raises(PipelineError, match="train.npz is not a readable .npz"):
        read_folder(tmp_path, CLASSES, "data_dir")


def test_empty_folder_says_what_it_expects(tmp_path):
    with pytest.raises(PipelineError, match="holds no MNIST-format data.*train.npz"):
        read_folder(tmp_path, CLASSES, "data_dir")


def test_wrong_image_shape_is_rejected(sample):
    with pytest.raises(PipelineError, match=r"expected uint8 \(32, 32\)"):
        sample.check_images((32, 32), "somewhere")


def test_full_mnist_from_shared_data(shared_data):
    full = read_folder(shared_data / "digits", CLASSES, "data_dir")
    assert len(full.train) == 60000 and len(full.test) == 10000
    assert full.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
