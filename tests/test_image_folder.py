"""The image_folder loader on real photos: the cucumber sample written as PNG files, one folder per
grade, and the DermaMNIST sample as JPEGs in train/ and test/ folders (scripts/sample_photos.py),
with every kind of bad input a user's folder holds."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys

import numpy as np
import pytest
from conftest import REPO

from pipelines.core.errors import PipelineError, UsageError
from pipelines.data.loaders import image_folder, load_dataset
from pipelines.usecases.spec_file import read_spec_file

sys.path.insert(0, str(REPO / "scripts"))
from sample_photos import cucumber_folder, skin_folder  # noqa: E402

CUCUMBER_CLASSES = ["2L", "C", "class_1", "class_2", "class_3", "class_4", "class_5", "class_6", "class_7"]


def first_photo(folder):
    return sorted(folder.glob("*.png"))[0]


def usecase(tmp_path, folder, classes, shape=(32, 32, 3), name="photos", options="", data="", validation=""):
    """A use-case file over `folder`, read through the real schema."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""title = "t"
task = "image_classification"
input_shape = {list(shape)}
class_names = {json.dumps(list(classes))}
[data]
loader = "image_folder"
{data}
[data.options]
folder = "{folder}"
{options}
[model]
builder = "small_cnn"
{validation}
""")
    return read_spec_file(path)


@pytest.fixture(scope="module")
def cucumbers(tmp_path_factory):
    """The 495 cucumber photos as PNGs in 9 grade folders (2L, C, class_1, ...: sorted, C before class_1)."""
    folder = tmp_path_factory.mktemp("cucumbers") / "photos"
    cucumber_folder(folder)
    return folder


@pytest.fixture
def few(tmp_path):
    """A small copy to break: 6 cucumber photos of each of 3 grades."""
    folder = tmp_path / "few"
    cucumber_folder(folder, limit=6)
    for grade in CUCUMBER_CLASSES[3:]:
        shutil.rmtree(folder / grade)
    return folder


def test_class_order_is_image_dataset_from_directorys(cucumbers, isolated, tmp_path):
    from pipelines.core.runtime import import_keras

    keras = import_keras()
    theirs = keras.utils.image_dataset_from_directory(cucumbers, image_size=(32, 32), batch_size=64, shuffle=False, verbose=False)
    found = image_folder.scan(cucumbers)
    assert list(found.class_names) == theirs.class_names == CUCUMBER_CLASSES
    labels = np.concatenate([y.numpy() for _, y in theirs])
    assert labels.tolist() == found.labels.tolist()  # file by file, the same class index


def test_a_flat_folder_is_split_seeded_and_stratified_into_a_memory_mapped_cache(cucumbers, isolated, tmp_path, capsys):
    spec = usecase(tmp_path, cucumbers, CUCUMBER_CLASSES)
    dataset = load_dataset(spec)
    assert "decoding 495 images" in capsys.readouterr().out
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (346, 50, 99)
    for split in (dataset.train, dataset.val, dataset.test):
        assert isinstance(split.x, np.memmap) and split.x.shape[1:] == (32, 32, 3)
        assert set(np.unique(split.y)) == set(range(9))  # stratified: every grade in every split
    with np.load(REPO / "data" / "samples" / "cucumber" / "p1_test.npz") as sample:
        originals = {image.tobytes() for image in sample["x"]}
    assert all(image.tobytes() in originals for image in dataset.test.x)  # 32x32 PNGs decode losslessly
    assert len(dataset.files) == 495 and all(len(digest) == 64 for digest in dataset.files.values())

    again = load_dataset(spec)  # unchanged: read from the cache, nothing decoded
    assert "decoding" not in capsys.readouterr().out
    assert again.sha256 == dataset.sha256 and np.array_equal(again.test.y, dataset.test.y)
    other_seed = load_dataset(dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=7)))
    assert "decoding" not in capsys.readouterr().out and not np.array_equal(other_seed.test.x, dataset.test.x)


def test_a_changed_folder_is_decoded_again(few, isolated, tmp_path, capsys):
    spec = usecase(tmp_path, few, CUCUMBER_CLASSES[:3])
    load_dataset(spec)
    assert "decoding 18 images" in capsys.readouterr().out
    shutil.copy(first_photo(few / "2L"), few / "2L" / "copy.png")
    assert len(load_dataset(spec).files) == 19
    assert "decoding 19 images" in capsys.readouterr().out


def test_split_folders_are_used_as_they_are(tmp_path, isolated):
    folder = tmp_path / "lesions"
    counts = skin_folder(folder, limit=5)
    spec = usecase(tmp_path, folder, sorted(counts["train"]), shape=(28, 28, 3), data="val_fraction = 0.2")
    dataset = load_dataset(spec)
    assert len(dataset.test) == sum(counts["test"].values())
    assert len(dataset.train) + len(dataset.val) == sum(counts["train"].values())
    assert {name.split("/")[0] for name in dataset.files} == {"train", "test"}
    assert np.bincount(dataset.test.y).tolist() == [counts["test"][name] for name in sorted(counts["test"])]
    assert dataset.val_origin.startswith("a seeded stratified 20%")
    from pipelines.core.runtime import import_keras

    theirs = import_keras().utils.image_dataset_from_directory(folder / "train", image_size=(28, 28), verbose=False)
    assert list(dataset.class_names) == theirs.class_names  # with split folders: train/'s classes


def test_groups_keep_one_objects_photos_in_one_split(few, isolated, tmp_path):
    rows = ["file,object"]
    for grade in CUCUMBER_CLASSES[:3]:  # two photos of each cucumber
        rows += [f"{path.name},{grade}-{k // 2}" for k, path in enumerate(sorted((few / grade).glob("*.png")))]
    (few / "objects.csv").write_text("\n".join(rows) + "\n")  # beside the class folders; not an image
    spec = usecase(tmp_path, few, CUCUMBER_CLASSES[:3],
                   options='groups = "objects.csv"\ngroup_column = "object"\nfile_column = "file"\ntest_fraction = 0.34',
                   data="val_fraction = 0.3")
    dataset = load_dataset(spec)
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 18
    found = image_folder.scan(few)
    groups = image_folder._groups(found, spec.data.options)
    parts, origin = image_folder._split_indices(found, np.arange(18), groups, spec)
    objects = {name: set(groups[indices]) for name, indices in parts.items()}
    assert all(objects.values()) and not (objects["train"] & objects["test"]) and not (objects["train"] & objects["val"])
    assert not (objects["val"] & objects["test"]) and "whole object groups" in origin


def test_files_that_are_not_images_are_ignored_and_counted(few, isolated, tmp_path, capsys):
    for name in (".DS_Store", "Thumbs.db", "notes.txt", "._photo.png"):
        (few / "C" / name).write_bytes(b"\x00\x05\x16\x07 not an image")
    spec = usecase(tmp_path, few, CUCUMBER_CLASSES[:3])
    dataset = load_dataset(spec)
    assert len(dataset.files) == 18 and dataset.ignored == 4
    assert "ignored 4 file(s) that are not images: .DS_Store, ._photo.png, Thumbs.db, notes.txt" in capsys.readouterr().out


def test_zero_byte_and_truncated_images_refuse_the_run_naming_them(few, isolated, tmp_path):
    (few / "C" / "empty.jpg").write_bytes(b"")
    whole = first_photo(few / "2L").read_bytes()
    (few / "2L" / "cut.png").write_bytes(whole[: len(whole) // 2])
    spec = usecase(tmp_path, few, CUCUMBER_CLASSES[:3])
    with pytest.raises(PipelineError) as refused:
        load_dataset(spec)
    message = str(refused.value)
    assert "\n" not in message and "2 of 20 images cannot be read" in message
    assert "2L/cut.png (not a readable image" in message and "C/empty.jpg (zero bytes)" in message
    assert 'on_corrupt = "skip"' in message

    skipping = usecase(tmp_path, few, CUCUMBER_CLASSES[:3], name="skipping", options='on_corrupt = "skip"')
    dataset = load_dataset(skipping)
    assert len(dataset.files) == 18 and "2L/cut.png" not in dataset.files
    assert [entry.split(":")[0] for entry in dataset.skipped] == ["2L/cut.png", "C/empty.jpg"]


@pytest.mark.parametrize("problem,expected", [
    ("one class", "has one class folder (2L); a classifier needs at least two"),
    ("empty class", "no images in the class folder(s) empty"),
    ("missing", "does not exist"),
    ("no classes", "holds no class folders"),
])
def test_bad_folders_are_one_line_errors(few, isolated, tmp_path, problem, expected):
    folder = few
    if problem == "one class":
        for grade in CUCUMBER_CLASSES[1:3]:
            shutil.rmtree(few / grade)
    elif problem == "empty class":
        (few / "empty").mkdir()
        (few / "empty" / "Thumbs.db").write_bytes(b"x")
    elif problem == "missing":
        folder = tmp_path / "nowhere"
    else:
        folder = few / "C"
    spec = usecase(tmp_path, folder, CUCUMBER_CLASSES[:3])
    with pytest.raises(PipelineError) as refused:
        load_dataset(spec)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_class_names_must_be_the_folders(few, isolated, tmp_path):
    spec = usecase(tmp_path, few, ["C", "2L", "class_1"])
    with pytest.raises(PipelineError, match="has the classes 2L, C, class_1 .* lists C, 2L, class_1"):
        load_dataset(spec)


def test_cmyk_16_bit_and_palette_photos_are_read(few, isolated, tmp_path):
    from PIL import Image

    photo = Image.open(first_photo(few / "2L")).convert("RGB")
    photo.convert("CMYK").save(few / "2L" / "cmyk.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(few / "C" / "palette.gif")
    grey16 = (np.asarray(photo.convert("L"), np.uint16) * 257)
    Image.fromarray(grey16).save(few / "class_1" / "grey16.png")
    assert Image.open(few / "class_1" / "grey16.png").mode.startswith("I")
    spec = usecase(tmp_path, few, CUCUMBER_CLASSES[:3], shape=(32, 32), data="val_fraction = 0")
    dataset = load_dataset(spec)
    assert len(dataset.files) == 21
    every = np.concatenate([dataset.train.x, dataset.test.x])
    assert every.shape[1:] == (32, 32) and every.max() > 200  # 16-bit scaled, not clipped to white or black


def test_image_fit_pads_or_crops_a_wide_photo(tmp_path, isolated):
    from PIL import Image

    from pipelines.data.images import read_image

    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 25:35] = 255  # a white stripe in the middle of a black band
    Image.fromarray(wide).save(tmp_path / "wide.png")
    padded = read_image(tmp_path / "wide.png", (30, 30, 3), "pad")
    cropped = read_image(tmp_path / "wide.png", (30, 30, 3), "crop")
    assert padded[:5].max() == 0 and padded[15, 15].min() > 200  # black bars above and below
    assert cropped[15, 15].min() > 200 and cropped[:, 0].max() < 60  # the centre square, its stripe widened, black at the edges
    assert (cropped[15, :, 0] > 128).sum() > 2 * (padded[15, :, 0] > 128).sum()


def test_unknown_options_are_refused_when_the_file_is_read(few, tmp_path):
    with pytest.raises(UsageError, match="data.options.colour: unknown option of loader image_folder"):
        usecase(tmp_path, few, CUCUMBER_CLASSES[:3], options='colour = "red"')
    with pytest.raises(UsageError, match="on_corrupt=ignore: must be one of refuse, skip"):
        usecase(tmp_path, few, CUCUMBER_CLASSES[:3], options='on_corrupt = "ignore"')
    with pytest.raises(UsageError, match="data.image_fit=stretch: must be one of resize, pad, crop"):
        usecase(tmp_path, few, CUCUMBER_CLASSES[:3], data='image_fit = "stretch"')


def test_cache_is_read_without_loading_it(cucumbers, isolated, tmp_path):
    """Memory-mapped: reading the 495 photos' split maps the file; no array of them is allocated."""
    spec = usecase(tmp_path, cucumbers, CUCUMBER_CLASSES)
    dataset = load_dataset(spec)
    assert dataset.train.x.filename and os.path.getsize(dataset.train.x.filename) >= dataset.train.x.nbytes
