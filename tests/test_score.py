"""`score` on Spark `local[2]`: the bundled digits sample written as PNG files (and two files
that are not images) scored through the registered model's `spark_udf`; the answers equal
`predict` on the same files, the broken files are refused in their own rows, and the run ends
with the counts."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import run_cli, trained_once

pytest.importorskip("pyspark", reason="pyspark is in the dev extra: pip install -e '.[dev]'")
if shutil.which("java") is None:
    pytest.skip("Spark needs Java 17+ (not found on PATH)", allow_module_level=True)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    with trained_once(tmp_path_factory, "digits", {"data.source": "sample", "train.epochs": 1, "data.train_limit": 300}) as run:
        yield run


def test_spark_scores_equal_predict_and_broken_files_are_refused(digits, tmp_path):
    import pandas as pd
    from PIL import Image

    from pipelines.core import paths
    from pipelines.serving.predict import predict_files

    with np.load(paths.samples_dir("digits") / "test.npz") as sample:
        images = sample["x"][:24]
    folder = tmp_path / "backlog" / "day-1"
    folder.mkdir(parents=True)
    files = []
    for index, image in enumerate(images):
        files.append(folder / f"digit-{index:02d}.png")
        Image.fromarray(image).save(files[-1])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    output = tmp_path / "scores.parquet"

    result = run_cli("score", "digits", "--input", str(tmp_path / "backlog"), "--output", str(output), env=digits["env"], timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"24 scored, 2 refused (see their `error`), written to {output}" in result.stdout

    scores = pd.read_parquet(output)
    assert len(scores) == 26 and set(scores["model_version"]) == {"1"}
    refused = scores[scores["error"].notna()]
    assert sorted(p.rsplit("/", 1)[-1] for p in refused["path"]) == ["broken.png", "notes.txt"]
    assert refused["error"].str.contains("not a readable image").all() and refused["label"].isna().all()
    answered = scores[scores["error"].isna()].assign(name=lambda t: t["path"].str.rsplit("/", n=1).str[-1]).set_index("name")
    model_dir = paths.models_root() / "digits" / "1"
    for prediction in predict_files(model_dir, [str(f) for f in files], top_k=10):
        row = answered.loc[prediction.path.rsplit("/", 1)[-1]]
        assert row["label"] == prediction.label
        expected = dict(prediction.top)
        assert np.allclose(row["probabilities"], [expected[str(c)] for c in range(10)], atol=1e-6)
