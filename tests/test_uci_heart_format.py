"""The UCI heart loader: the bundled CSVs and UCI's original files (no header, `?`)."""

import numpy as np
import pytest

from pipelines.core import paths
from pipelines.core.errors import PipelineError
from pipelines.data.loaders.uci_heart_format import COLUMNS, read_folder, read_table, targets

BUNDLED = paths.samples_dir("heart")


def test_bundled_sites_match_the_published_counts():
    frames, files = read_folder(BUNDLED)
    assert {s: len(f) for s, f in frames.items()} == {"cleveland": 303, "hungarian": 294, "switzerland": 123, "va": 200}
    assert int(frames["cleveland"].isna().sum().sum()) == 6
    assert targets(frames["cleveland"], "binary").sum() == 139  # 303 - 164 without disease
    assert np.bincount(targets(frames["va"], "severity")).tolist() == [51, 56, 41, 42, 10]
    assert len(files) == 4


def test_zero_cholesterol_means_not_measured():
    frames, _ = read_folder(BUNDLED)
    assert frames["switzerland"]["chol"].isna().all()
    assert (frames["cleveland"]["chol"] > 0).all()


def test_original_uci_files_read_the_same(tmp_path):
    text = (BUNDLED / "hungarian.csv").read_text().splitlines()[1:]  # drop the header
    original = "\n".join(",".join(cell if cell != "" else "?" for cell in line.split(",")) for line in text) + "\n"
    (tmp_path / "processed.hungarian.data").write_text(original)
    frames, files = read_folder(tmp_path)
    assert list(frames) == ["hungarian"] and list(files) == ["processed.hungarian.data"]
    expected = read_table(BUNDLED / "hungarian.csv", header=True)
    assert frames["hungarian"].equals(expected)


def test_bad_cells_and_columns_are_named(tmp_path):
    lines = (BUNDLED / "cleveland.csv").read_text().splitlines()
    lines[4] = lines[4].replace("130.0", "high", 1)  # the 4th data row
    (tmp_path / "cleveland.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(PipelineError, match=r"cleveland.csv row 4, column trestbps: 'high' is not a number"):
        read_folder(tmp_path)
    (tmp_path / "cleveland.csv").write_text(",".join(c for c in COLUMNS if c != "thal") + "\n1,2\n")
    with pytest.raises(PipelineError, match="lacks column\\(s\\) thal"):
        read_folder(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(PipelineError, match="holds no UCI heart disease data"):
        read_folder(tmp_path)
