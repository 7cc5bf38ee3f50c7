"""The MNIST-format loader on real data: the bundled sample, Keras' npz and IDX layouts, and
the errors for truncated or corrupt files."""

import gzip
import shutil
import struct

import numpy as np
import pytest

from pipelines.core import paths
from pipelines.core.errors import PipelineError
from pipelines.data.loaders.mnist_format import read_folder, read_idx

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
    with pytest.raises(PipelineError, match=r"expected uint8 pixels 0-255 of shape \(N, 32, 32\)"):
        sample.check_images((32, 32), "somewhere")


def test_full_mnist_from_shared_data(shared_data):
    full = read_folder(shared_data / "digits", CLASSES, "data_dir")
    assert len(full.train) == 60000 and len(full.test) == 10000
    assert full.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def _small(sample, count=300):
    return sample.train.x[:count], sample.train.y[:count]


BAD_TRAIN_NPZ = {
    # name: (arrays written as train.npz from good images x and labels y, the error expected)
    "wrong keys": (lambda x, y: {"images": x, "labels": y}, r"train.npz lacks arrays x, y \(has images, labels\)"),
    "floats in [0, 1]": (lambda x, y: {"x": (x / 255).astype(np.float32), "y": y},
                         r"train.npz: images are float32 in \[0, 1\] \(not rescaled here: multiply by 255 and round\)"),
    "floats 0-255": (lambda x, y: {"x": x.astype(np.float64), "y": y}, r"train.npz: images are float64; expected uint8"),
    "flattened rows": (lambda x, y: {"x": x.reshape(len(x), -1), "y": y}, r"train.npz: images have shape \(300, 784\) \(rank 2\)"),
    "a channel axis": (lambda x, y: {"x": x[..., None], "y": y},
                       r"train images are uint8 of shape \(300, 28, 28, 1\), expected uint8 pixels 0-255 of shape \(N, 28, 28\)"),
    "one label short": (lambda x, y: {"x": x, "y": y[:-1]}, r"train.npz: 300 images but 299 labels"),
    "label out of range": (lambda x, y: {"x": x, "y": np.where(y == 9, 10, y)}, r"train labels span 0..10, expected 0..9"),
    "negative label": (lambda x, y: {"x": x, "y": np.where(y == 9, -1, y)}, r"train labels span -1..8, expected 0..9"),
    "fractional labels": (lambda x, y: {"x": x, "y": y + 0.5}, r"train.npz: labels are float64 with non-integer values"),
    "one-hot labels": (lambda x, y: {"x": x, "y": np.eye(10)[y]}, r"train.npz: labels have shape \(300, 10\); expected \(N,\)"),
    "empty split": (lambda x, y: {"x": x[:0], "y": y[:0]}, r"the train split is empty"),
    "object array": (lambda x, y: {"x": np.array(list(x) + [None], dtype=object), "y": y},
                     r"train.npz is not a readable .npz archive \(Object arrays cannot be loaded"),
}


@pytest.mark.parametrize("case", BAD_TRAIN_NPZ)
def test_bad_npz_is_one_line_naming_the_file(sample, tmp_path, case):
    make, message = BAD_TRAIN_NPZ[case]
    np.savez(tmp_path / "train.npz", **make(*_small(sample)))
    np.savez(tmp_path / "test.npz", x=sample.test.x[:50], y=sample.test.y[:50])
    with pytest.raises(PipelineError, match=message) as error:
        read_folder(tmp_path, CLASSES, "data_dir").check_images((28, 28), str(tmp_path))
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_whole_float_labels_are_accepted(sample, tmp_path):
    x, y = _small(sample)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y.astype(np.float32), x_test=x, y_test=y.reshape(-1, 1))
    loaded = read_folder(tmp_path, CLASSES, "data_dir")
    assert loaded.train.y.dtype == np.int64 and loaded.test.y.shape == (300,)
    np.testing.assert_array_equal(loaded.train.y, y)


def test_a_class_without_training_examples_is_a_warning(sample, tmp_path, capsys):
    """Decided: a warning, not an error. A folder may hold a subset of the classes on purpose (a
    quick run on a few digits); the model keeps every class and cannot learn the missing one."""
    x, y = _small(sample)
    np.savez(tmp_path / "train.npz", x=x[y != 3], y=y[y != 3])
    np.savez(tmp_path / "test.npz", x=x, y=y)
    read_folder(tmp_path, CLASSES, "data_dir").check_images((28, 28), str(tmp_path))
    assert f"warning: {tmp_path}: no training examples of class(es) 3; the model cannot learn" in capsys.readouterr().err
