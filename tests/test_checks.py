"""The data checks on real data: test images of the bundled samples planted in the training
split (exact copies, and JPEG re-encodes through Pillow) are counted exactly and dropped
exactly; a heart row copied with the other label is found; a real 1-epoch run logs the counts
on MLflow and writes them into the model card."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from pipelines.core import paths
from pipelines.data import checks
from pipelines.data.dataset import Split
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

COPIES, REENCODED = 10, 10  # test images planted in train: as they are, and re-encoded as JPEG


def sample(usecase: str, split: str):
    with np.load(paths.samples_dir(usecase) / f"{split}.npz") as data:
        return data["x"], data["y"].astype(np.int64)


def jpeg(image: np.ndarray, quality: int = 90) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def planted(usecase: str, size: int | None = None):
    """(train, its first `size` images, with test images 0-9 copied and 10-19 re-encoded at its end;
    test; the planted indices)."""
    (x, y), (x_test, y_test) = sample(usecase, "train"), sample(usecase, "test")
    x, y = x[:size], y[:size]
    copies = np.concatenate([x_test[:COPIES], np.stack([jpeg(image) for image in x_test[COPIES : COPIES + REENCODED]])])
    train = Split(np.concatenate([x, copies]), np.concatenate([y, y_test[: COPIES + REENCODED]]))
    return train, Split(x_test, y_test), len(x) + np.arange(COPIES + REENCODED)


def test_phash_is_imagehash_bit_for_bit():
    """The batched pHash is the library's: grey digits, RGB lesions and cucumbers, their JPEG re-encodes."""
    import imagehash
    from PIL import Image

    images = [sample("digits", "test")[0][:150], sample("skin", "test")[0][:150], sample("cucumber", "p1_test")[0][:100]]
    for batch in images + [np.stack([jpeg(image) for image in images[1][:30]])]:
        expected = np.array([int(str(imagehash.phash(Image.fromarray(image))), 16) for image in batch], dtype=np.uint64)
        assert np.array_equal(checks.phash(batch)[0], expected)


@pytest.mark.parametrize("usecase", ["digits", "skin"])
def test_planted_test_images_are_counted_exactly(usecase):
    class_names = get_spec(usecase).class_names
    (x, y), test = sample(usecase, "train"), Split(*sample(usecase, "test"))
    # What the sample holds of its own (skin: one near copy, a lesion photographed twice), then the planted ones on top.
    clean = checks.check({"train": Split(x, y), "test": test}, class_names)
    (exact, near), natural = clean.held_out_in_training()["test"], clean.to_drop.get("train", np.zeros(0, np.int64))
    assert exact == 0 and near == len(natural) <= 1

    train, test, indices = planted(usecase)
    found = checks.check({"train": train, "test": test}, class_names)
    assert found.held_out_in_training() == {"test": (COPIES, near + REENCODED)}
    assert found.count("train", "test", "exact") == COPIES and found.count("train", "test", "near") == len(natural) + REENCODED
    assert np.array_equal(found.to_drop["train"], np.r_[natural, indices])
    assert found.label_conflicts["groups"] == 0
    pairs = {(e["index"], e["index_against"], e["kind"]) for e in found.examples if e["split"] == "test"}
    assert {(i, int(indices[i]), "exact" if i < COPIES else "near") for i in range(COPIES + REENCODED)} <= pairs
    assert found.class_counts["test"] == dict(zip(class_names, np.bincount(test.y, minlength=len(class_names)).tolist()))
    expected = f"{COPIES + REENCODED + near} test images also appear in training ({COPIES} exact copies, {REENCODED + near} near"
    assert expected in found.card_lines()[0]


def test_a_test_image_copied_into_train_and_val_counts_once():
    (x, y), (x_test, y_test) = sample("digits", "train"), sample("digits", "test")
    train = Split(np.concatenate([x[:2000], x_test[:3]]), np.concatenate([y[:2000], y_test[:3]]))  # test 0, 1, 2
    val = Split(np.concatenate([x[2000:2500], x_test[[0, 5, 6]]]), np.concatenate([y[2000:2500], y_test[[0, 5, 6]]]))  # 0 again; 5, 6
    found = checks.check({"train": train, "val": val, "test": Split(x_test, y_test)}, get_spec("digits").class_names)
    assert found.held_out_in_training() == {"test": (5, 0)}
    assert found.count("test", "train", "exact") == 3 and found.count("test", "val", "exact") == 3
    assert {split: list(indices) for split, indices in found.to_drop.items()} == {"train": [2000, 2001, 2002], "val": [500, 501, 502]}


def test_pHash_alone_would_call_different_digits_copies():
    """Why a near copy must also match its thumbnail: equal pHashes, different handwriting."""
    x, y = sample("digits", "train")
    hashes, _ = checks.phash(x)
    left, right = checks.near_pairs(hashes, 0)
    assert len(left) > 20
    found = checks.check({"train": Split(x, y)}, get_spec("digits").class_names, near_distance=0)
    assert found.count("train", "train", "near") < len(left) / 10


def test_near_pairs_finds_every_pair_within_the_distance():
    """The multi-index search against the plain O(n^2) comparison, on real hashes."""
    hashes, _ = checks.phash(sample("skin", "train")[0][:600])
    for distance in (0, 3, 6):
        left, right = checks.near_pairs(hashes, distance)
        full = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= distance
        i, j = np.nonzero(np.triu(full, 1))
        assert sorted(zip(left.tolist(), right.tolist())) == sorted(zip(i.tolist(), j.tolist()))


def test_the_drop_removes_exactly_the_planted_copies():
    from pipelines.data.dataset import Dataset
    from pipelines.tasks import Loaded, get_task

    spec = get_spec("skin")
    train, test, _ = planted("skin")
    original = sample("skin", "train")[0]
    val = Split(*sample("skin", "val"))

    dataset = Dataset(train=train, test=test, val=val, class_names=spec.class_names, origin="sample")
    task = get_task(spec.task)
    loaded = Loaded(dataset, "sample", "", {}, {"train_examples": len(train)}, "", test.y)
    natural = checks.check(task.check_splits(spec, Loaded(Dataset(train=Split(*sample("skin", "train")), test=test, val=val,
                                                                      class_names=spec.class_names, origin="sample"),
                                                              "sample", "", {}, {}, "", test.y)), spec.class_names).to_drop
    found = checks.check(task.check_splits(spec, loaded), spec.class_names)
    kept = task.drop_examples(spec, loaded, found.to_drop)
    # Exactly the planted copies go, beside what the sample's own train and validation splits copy of its test split.
    expected = np.delete(original, natural.get("train", []), axis=0)
    assert np.array_equal(kept.data.train.x, expected) and kept.sizes["train_examples"] == len(expected)
    assert len(kept.data.val) == len(val) - len(natural.get("val", []))
    found.record_drop()
    dropped = COPIES + REENCODED + len(natural.get("train", []))
    assert found.dropped.get("train") == dropped and found.metrics()["data_dropped_train"] == dropped


def test_a_heart_row_with_the_other_label_is_found_and_dropped_from_the_folds():
    from pipelines.tasks import get_task

    spec = apply_overrides(get_spec("heart"), {"data.source": "sample"})
    task = get_task(spec.task)
    import dataclasses

    import numpy as np
    import pandas as pd

    loaded = task.load(spec)
    table = loaded.data["table"]
    frame, targets = table.frames["cleveland"], table.targets["cleveland"]
    # The same patient once more, with the other diagnosis.
    frame = pd.concat([frame, frame.iloc[[7]]], ignore_index=True)
    targets = np.append(targets, 1 - targets[7])
    table = dataclasses.replace(table, frames={**table.frames, "cleveland": frame}, targets={**table.targets, "cleveland": targets})
    loaded.data["table"] = table
    loaded.data["train"], loaded.data["y"], loaded.data["groups"] = table.rows(table.train_groups)

    found = checks.check(task.check_splits(spec, loaded), spec.class_names)
    assert found.kind == "rows" and found.near_distance is None
    assert found.label_conflicts["groups"] == 1 and found.label_conflicts["items"] == 2
    assert {(m["index"], m["split"]) for m in found.label_conflicts["examples"][0]} == {(7, "folds"), (len(frame) - 1, "folds")}
    assert found.count("folds", "folds", "exact") == 1 and list(found.to_drop["folds"]) == [len(frame) - 1]
    kept = task.drop_examples(spec, loaded, found.to_drop)
    assert len(kept.data["train"]) == len(frame) - 1 and kept.sizes["train_rows"] == len(frame) - 1


def test_a_use_case_file_takes_a_checks_section(tmp_path):
    from pipelines.core.errors import UsageError
    from pipelines.usecases.spec_file import read_spec_file

    text = (paths.REPO_ROOT / "pipelines" / "usecases" / "digits.toml").read_text()
    (tmp_path / "digits2.toml").write_text(text + "\n[checks]\ndrop_test_duplicates = true\nnear_duplicate_distance = 2\n")
    spec = read_spec_file(tmp_path / "digits2.toml")
    assert spec.checks.drop_test_duplicates and spec.checks.near_duplicate_distance == 2
    (tmp_path / "digits3.toml").write_text(text + "\n[checks]\nnear_duplicate_distance = 20\n")
    with pytest.raises(UsageError, match="checks.near_duplicate_distance=20: must be >= 0 and <= 8"):
        read_spec_file(tmp_path / "digits3.toml")


def test_a_real_run_logs_the_counts_and_the_card_says_them(tmp_path, monkeypatch):
    """digits' sample with 20 test images planted in train, through `train` for one epoch, with the drop on."""
    import mlflow

    from pipelines.pipeline import run_train

    for name, value in {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PIPELINES_MODELS_ROOT": str(tmp_path / "models"),
                        "PIPELINES_REPORTS_ROOT": str(tmp_path / "reports"), "PIPELINES_DATA_ROOT": str(tmp_path / "data")}.items():
        monkeypatch.setenv(name, value)
    train, test, _ = planted("digits", size=1000)
    folder = tmp_path / "digits-with-copies"
    folder.mkdir()
    np.savez(folder / "train.npz", x=train.x, y=train.y)
    np.savez(folder / "test.npz", x=test.x, y=test.y)
    # val_fraction=0: every planted copy stays in train, so all 20 are dropped from there.
    spec = apply_overrides(get_spec("digits"), {"data.data_dir": str(folder), "train.epochs": 1, "data.val_fraction": 0.0,
                                                "checks.drop_test_duplicates": True})
    summary = run_train(spec, run_name="test-checks")

    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.data.metrics["data_test_in_training"] == COPIES + REENCODED
    assert run.data.metrics["data_dropped_train"] == COPIES + REENCODED
    assert run.data.params["train_examples"] == str(len(train) - COPIES - REENCODED)
    report = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/data_checks/data_checks.json"))
    assert report["dropped"] == {"train": COPIES + REENCODED}
    table = mlflow.load_table("data_checks/duplicates.json", run_ids=[run.info.run_id])
    row = table[(table["split"] == "test") & (table["against"] == "train")].iloc[0]
    assert (row["exact"], row["near"], row["items"]) == (COPIES, REENCODED, len(test))
    classes = mlflow.load_table("data_checks/class_counts.json", run_ids=[run.info.run_id])
    assert classes["test"].sum() == len(test) and classes["train"].sum() == len(train)  # counted before the drop
    card = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/MODEL_CARD.md")
    assert f"- Data checks: {COPIES + REENCODED} test images also appear in training ({COPIES} exact copies" in card
    assert f"Dropped before training (`checks.drop_test_duplicates`): {COPIES + REENCODED} train images." in card
    exported = json.loads((tmp_path / "models" / "digits" / "1" / "metadata.json").read_text())
    assert exported["data_checks"]["data_test_in_training"] == COPIES + REENCODED


def test_copies_in_a_cross_validated_pool_are_counted_and_all_but_one_dropped():
    """cucumber pools its images for the folds: a copy anywhere in the pool may straddle two folds."""
    from pipelines.tasks import get_task

    spec = apply_overrides(get_spec("cucumber"), {"data.source": "sample"})
    task = get_task(spec.task)
    spec = task.prepare(spec)
    loaded = task.load(spec)
    pool = loaded.data.train
    size = len(pool)
    copies = np.concatenate([pool.x[:3], np.stack([jpeg(image) for image in pool.x[3:5]])])
    loaded.data.train = Split(np.concatenate([pool.x, copies]), np.concatenate([pool.y, pool.y[:5]]))

    found = checks.check(task.check_splits(spec, loaded), spec.class_names)
    assert list(found.splits) == ["folds"] and found.held_out == ()
    assert (found.count("folds", "folds", "exact"), found.count("folds", "folds", "near")) == (3, 2)
    assert list(found.to_drop["folds"]) == list(range(size, size + 5))
    kept = task.drop_examples(spec, loaded, found.to_drop)
    assert np.array_equal(kept.data.train.x, pool.x) and kept.sizes["train_examples"] == size and len(kept.chance_labels) == size
    assert "5 of the 500 cross-validated images are copies of another (3 exact, 2 near)" in found.card_lines()[0]
