"""The clothing and skin specs: their data, their shared-core settings, one skin run end to end
on the bundled sample (RGB, class weights, Grad-CAM, model card, uint8 SavedModel), and the
README's full-resolution transfer command on a HAM10000-layout folder (train, export, predict,
evaluate at the chosen size)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import trained_once

from pipelines.core.errors import PipelineError
from pipelines.data.loaders import load_dataset
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides


def test_clothing_sample_is_real_fashion_mnist_from_the_idx_files():
    spec = apply_overrides(get_spec("clothing"), {"data.source": "sample"})
    dataset = load_dataset(spec)
    assert dataset.train.x.shape[1:] == (28, 28) and dataset.train.x.dtype == np.uint8
    assert set(np.unique(dataset.test.y)) == set(range(10))
    assert all(name.endswith("-ubyte.gz") for name in dataset.files)  # the original IDX files
    assert "/usr/share/datasets/fashion-mnist" in spec.data.options["system_dirs"]  # Debian's dataset-fashion-mnist


def test_augmentation_is_chosen_per_use_case():
    assert get_spec("digits").model.augmentation == ()  # a flipped 2 is no 2
    assert any(a.startswith("flip") for a in get_spec("clothing").model.augmentation)
    assert "flip" in get_spec("skin").model.augmentation  # a lesion has no up or left


def test_skin_serves_the_balanced_point_of_an_unweighted_model_and_says_not_a_medical_device():
    spec = get_spec("skin")
    assert spec.train.class_weights == 0 and spec.operating_point == "balanced"  # issue 16: decide after training
    assert spec.priority_classes == ("mel",) and spec.ranking_metric == "test_balanced_point_balanced_accuracy"
    assert "not a medical device" in spec.limitations.lower()


@pytest.fixture(scope="module")
def skin_run(tmp_path_factory):
    with trained_once(tmp_path_factory, "skin", {"data.source": "sample", "train.epochs": 1, "data.train_limit": 300}) as run:
        yield run


def test_skin_run_logs_report_and_grad_cam(skin_run):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{skin_run['root'] / 'mlflow.db'}")
    run = client.get_run(skin_run["summary"]["run_id"])
    for metric in ("test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_macro_auc_ovr", "operating_point_tau",
                   "test_balanced_point_balanced_accuracy", "test_recall_mel", "test_balanced_point_recall_mel"):
        assert metric in run.data.metrics, metric
    assert "evaluation/operating_points.png" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert run.data.params["train.class_weights"] == str(skin_run["spec"].train.class_weights)
    assert "explanations/grad_cam.png" in {a.path for a in client.list_artifacts(run.info.run_id, "explanations")}
    assert "evaluation/confusion_matrix.png" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}


def test_skin_export_serves_uint8_rgb_and_carries_the_card(skin_run):
    import tensorflow as tf

    model_dir = Path(skin_run["summary"]["exported_to"])
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "NOT A MEDICAL DEVICE" in card and "balanced_accuracy" in card
    loaded = tf.saved_model.load(str(model_dir))
    images = load_dataset(skin_run["spec"]).test.x[:3]
    probabilities = loaded.serve(tf.constant(images)).numpy()
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    layer_names = {v.name for v in loaded.variables}
    assert not any("random_" in name or "augmentation" in name for name in layer_names)  # training-only layers


def test_registered_mlflow_model_loads_without_this_package(skin_run):
    """The MLflow model wraps the exported graph: a fresh process that never imports `pipelines`
    (so none of its custom layers are registered) loads it and gets the SavedModel's answer,
    as one record per image with a probability per class name."""
    import json

    import tensorflow as tf

    images = load_dataset(skin_run["spec"]).test.x[:3]
    np.save(skin_run["root"] / "images.npy", images)
    script = (
        "import sys, json, numpy as np, mlflow.pyfunc\n"
        "assert 'pipelines' not in sys.modules\n"
        "model = mlflow.pyfunc.load_model('models:/skin/1')\n"
        "json.dump(model.predict(np.load(sys.argv[2])), open(sys.argv[1], 'w'))\n"
    )
    out = skin_run["root"] / "mlflow_probabilities.json"
    result = subprocess.run(
        [sys.executable, "-c", script, str(out), str(skin_run["root"] / "images.npy")],
        cwd=skin_run["root"], env={**os.environ, **skin_run["env"]}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = tf.saved_model.load(skin_run["summary"]["exported_to"])
    records = json.loads(out.read_text())
    classes = skin_run["spec"].class_names
    probabilities = np.array([[record[name] for name in classes] for record in records])
    np.testing.assert_allclose(probabilities, loaded.serve(tf.constant(images)).numpy(), atol=1e-5)
    # Labelled at the model's default operating point (skin: balanced), as `predict` labels them.
    from pipelines.evaluation.operating_points import OperatingPoints
    from pipelines.export.saved_model import read_metadata

    points = OperatingPoints.from_metadata(read_metadata(Path(skin_run["summary"]["exported_to"])))
    assert points.default == "balanced"
    assert [record["label"] for record in records] == [classes[i] for i in points.decide(probabilities)]


# --- Skin at full resolution: the README's transfer command on a HAM10000-layout folder -----


def readme_skin_transfer_overrides() -> list[str]:
    """The `SET="..."` of the README's `make train-skin` command that trains with the backbone."""
    from test_readme import MAKE_COMMANDS

    (command,) = [c for c in MAKE_COMMANDS if c[1] == "train-skin" and "model.builder=transfer" in " ".join(c)]
    (value,) = [word.partition("=")[2] for word in command if word.startswith("SET=")]
    return value.split()


@pytest.fixture(scope="module")
def skin_hires_run(tmp_path_factory):
    """The README's command on real DermaMNIST images upsampled to 200x150 JPEGs in the HAM10000
    layout, as written but for one epoch per phase."""
    from conftest import make_ham10000

    folder = tmp_path_factory.mktemp("HAM10000")
    rows = make_ham10000(folder, count=90, size=(200, 150))
    overrides = [*readme_skin_transfer_overrides(), "epochs=1", "fine_tune_epochs=1", f"data.data_dir={folder}"]
    with trained_once(tmp_path_factory, "skin", overrides) as run:
        yield {**run, "folder": folder, "rows": rows}


def test_skin_transfer_at_full_resolution_trains_and_exports_at_that_size(skin_hires_run):
    import json

    import mlflow

    size = skin_hires_run["spec"].data.image_size
    assert size >= 128 and skin_hires_run["spec"].model.params["image_size"] == size  # the backbone sees every pixel
    summary = skin_hires_run["summary"]
    assert summary["epochs_run"] == 2  # the frozen phase, then fine-tuning the backbone
    assert summary["train_examples"] + summary["val_examples"] + summary["test_examples"] == len(skin_hires_run["rows"])
    run = mlflow.MlflowClient(skin_hires_run["env"]["MLFLOW_TRACKING_URI"]).get_run(summary["run_id"])
    assert run.data.params["data.image_size"] == str(size) and run.data.params["model.builder"] == "transfer"
    model_dir = Path(summary["exported_to"])
    assert json.loads((model_dir / "metadata.json").read_text())["input_shape"] == [size, size, 3]
    assert f"`[batch, {size}, {size}, 3]`" in (model_dir / "MODEL_CARD.md").read_text()
    assert list((Path(skin_hires_run["env"]["PIPELINES_DATA_ROOT"]) / "cache").glob(f"ham10000-{size}x{size}x3-*.npz"))


def test_skin_hires_model_predicts_files_at_its_size(skin_hires_run):
    """A reloaded SavedModel takes `[batch, 192, 192, 3]` and refuses DermaMNIST's 28x28; `predict`
    resizes a 200x150 JPEG to the model's size (from metadata.json, not the spec's 28)."""
    import tensorflow as tf

    from pipelines.data.images import read_image
    from pipelines.evaluation.operating_points import OperatingPoints
    from pipelines.export.saved_model import read_metadata
    from pipelines.serving.predict import predict_files

    model_dir = skin_hires_run["summary"]["exported_to"]
    size = skin_hires_run["spec"].data.image_size
    files = sorted(str(p) for p in skin_hires_run["folder"].rglob("*.jpg"))[:3]
    loaded = tf.saved_model.load(model_dir)
    direct = loaded.serve(tf.constant(np.stack([read_image(Path(f), (size, size, 3)) for f in files]))).numpy()
    predictions = predict_files(Path(model_dir), files, top_k=7)
    classes = skin_hires_run["spec"].class_names
    decided = OperatingPoints.from_metadata(read_metadata(Path(model_dir))).decide(direct)  # at the model's default point
    for prediction, row, choice in zip(predictions, direct, decided):
        assert prediction.error is None and prediction.label == classes[choice]
        np.testing.assert_allclose([dict(prediction.top)[name] for name in classes], row, atol=1e-6)
    with pytest.raises((TypeError, ValueError)):
        loaded.serve(tf.constant(np.zeros((1, 28, 28, 3), np.uint8)))


def test_skin_hires_export_and_evaluate_follow_the_model_size(skin_hires_run, tmp_path):
    """`export` writes the checkpoint's input shape (checked on the 28 px sample, resized);
    `evaluate` reads the test split at the model's size without repeating the --set."""
    import json

    from pipelines.pipeline import run_evaluate, run_export

    size = skin_hires_run["spec"].data.image_size
    with pytest.MonkeyPatch.context() as patch:
        for name, value in skin_hires_run["env"].items():
            patch.setenv(name, value)
        exported = run_export(get_spec("skin"))
        assert json.loads((exported / "metadata.json").read_text())["input_shape"] == [size, size, 3]
        spec = apply_overrides(get_spec("skin"), {"data.data_dir": str(skin_hires_run["folder"])})
        report = run_evaluate(spec, model_dir=skin_hires_run["summary"]["exported_to"], out_dir=str(tmp_path))
        assert report["accuracy"] == pytest.approx(skin_hires_run["summary"]["test"]["accuracy"], abs=1e-6)
        with pytest.raises(PipelineError, match=f"not data.image_size=64: drop that --set or make it {size}"):
            run_evaluate(apply_overrides(spec, {"data.image_size": 64}), model_dir=skin_hires_run["summary"]["exported_to"])
