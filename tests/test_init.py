"""`python -m pipelines init NAME --images DIR` on real photo folders (scripts/sample_photos.py):
the file it writes says what is in the folder, reads back as a use case whose classes are the
loader's, and is never written over an existing one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from pipelines.__main__ import main
from pipelines.usecases import get_spec
from pipelines.usecases.init import write_usecase_file

sys.path.insert(0, str(REPO / "scripts"))
from sample_photos import cucumber_folder, skin_folder  # noqa: E402


@pytest.fixture
def usecases(tmp_path, monkeypatch):
    folder = tmp_path / "usecases"
    monkeypatch.setenv("PIPELINES_USECASES_DIR", str(folder))
    return folder


def test_init_describes_a_small_folder_and_picks_transfer_with_cross_validation(tmp_path, usecases, capsys):
    cucumber_folder(tmp_path / "grades")
    (tmp_path / "grades" / "C" / ".DS_Store").write_bytes(b"\0")
    assert main(["init", "grades", "--images", str(tmp_path / "grades")]) == 0
    out = capsys.readouterr().out
    text = (usecases / "grades.toml").read_text()
    assert out.startswith(text) and out.rstrip().endswith("next: make train-grades")
    assert "495 images in 9 classes" in text and "#     C                            56 images" in text
    assert "sizes (width x height, of 495 read): 32x32 smallest" in text and "colour modes: RGB 495" in text
    assert "ignored: 1 file(s) that are not images (.DS_Store)" in text
    spec = get_spec("grades")
    assert spec.class_names == ("2L", "C", "class_1", "class_2", "class_3", "class_4", "class_5", "class_6", "class_7")
    assert spec.input_shape == (32, 32, 3) and spec.data.loader == "image_folder"
    assert spec.model.builder == "transfer" and spec.model.params["weights"] == "imagenet"
    assert spec.validation.cv_folds == 5 and spec.train.fine_tune_epochs > 0


def test_init_on_split_folders_keeps_the_test_folder(tmp_path, usecases, capsys):
    skin_folder(tmp_path / "lesions", limit=20)
    assert main(["init", "lesions", "--images", str(tmp_path / "lesions")]) == 0
    text = (usecases / "lesions.toml").read_text()
    assert "split folders: train/ 140, test/ 115" in text and "(train 20, test 7)" in text
    assert "test_fraction" not in text and "cv_folds = 0" in text
    spec = get_spec("lesions")
    assert spec.class_names == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc") and spec.input_shape == (28, 28, 3)


def test_grey_photos_make_a_grey_use_case(tmp_path, usecases):
    from PIL import Image

    with np.load(REPO / "data" / "samples" / "digits" / "test.npz") as sample:
        x, y = sample["x"][:40], sample["y"][:40]
    for i, (image, label) in enumerate(zip(x, y)):
        (tmp_path / "digits" / f"digit_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "digits" / f"digit_{label}" / f"{i}.png")
    assert main(["init", "scans", "--images", str(tmp_path / "digits")]) == 0
    text = (usecases / "scans.toml").read_text()
    assert "all grey: the model reads grey" in text
    assert get_spec("scans").input_shape == (28, 28)


def test_init_never_overwrites_and_errors_are_one_line(tmp_path, usecases, capsys):
    cucumber_folder(tmp_path / "grades", limit=3)
    assert main(["init", "grades", "--images", str(tmp_path / "grades")]) == 0
    before = (usecases / "grades.toml").read_text()
    capsys.readouterr()
    for argv, code, message in [
        (["init", "grades", "--images", str(tmp_path / "grades")], 2, "grades.toml already exists; init never overwrites"),
        (["init", "cucumber", "--images", str(tmp_path / "grades")], 2, "'cucumber' is a built-in use case"),
        (["init", "Grapes!", "--images", str(tmp_path / "grades")], 2, "lower-case letters, digits, - and _"),
        (["init", "other", "--images", str(tmp_path / "nowhere")], 1, "does not exist"),
        (["init", "other", "--images", str(tmp_path / "grades" / "C")], 1, "holds no class folders"),
        (["init", "other", "--table", str(tmp_path / "x.csv"), "--target", "y"], 1, "x.csv: no such file"),
        (["init", "other", "--table", str(tmp_path / "x.csv")], 2, "needs --target COLUMN"),
        (["init", "other", "--images", str(tmp_path / "grades"), "--target", "y"], 2, "go with --table"),
    ]:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert (usecases / "grades.toml").read_text() == before
    assert not (usecases / "other.toml").exists() and sorted(p.name for p in usecases.iterdir()) == ["grades.toml"]


def test_write_usecase_file_into_another_folder_names_the_train_command(tmp_path, usecases, capsys):
    text = (REPO / "pipelines" / "usecases" / "digits.toml").read_text()
    path = write_usecase_file("mine", text, tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "mine.toml" and path.read_text() == text
    assert capsys.readouterr().out.rstrip().endswith(f"next: python -m pipelines train {path}")
    with pytest.raises(Exception, match="model.builder=nope"):
        write_usecase_file("broken", text.replace('builder = "small_cnn"', 'builder = "nope"'), tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere" / "broken.toml").exists()


@pytest.mark.slow
def test_the_cucumber_folder_trains_cross_validated_through_make(tmp_path, usecases, isolated):
    """Two commands and no Python: init, then make train-NAME (two folds and no fine-tuning, to be quick)."""
    cucumber_folder(tmp_path / "grades")
    assert main(["init", "grades", "--images", str(tmp_path / "grades")]) == 0
    env = {**os.environ, "PIPELINES_REPORTS_ROOT": str(tmp_path / "reports")}
    result = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "train-grades", "EPOCHS=1",
                             "SET=fine_tune_epochs=0 cv_folds=2"], capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "final model on all 495 images" in result.stdout and "cv accuracy" in result.stdout
    assert (isolated / "models" / "grades" / "1" / "saved_model.pb").is_file()
