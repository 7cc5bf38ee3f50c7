"""The clothing and skin specs: their data, their shared-core settings, and one skin run end
to end on the bundled sample (RGB, class weights, Grad-CAM, model card, uint8 SavedModel)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import trained_once

from pipelines.config import apply_overrides
from pipelines.loaders import load_dataset
from pipelines.usecases import get_spec


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
    from pipelines.export import read_metadata
    from pipelines.operating_points import OperatingPoints

    points = OperatingPoints.from_metadata(read_metadata(Path(skin_run["summary"]["exported_to"])))
    assert points.default == "balanced"
    assert [record["label"] for record in records] == [classes[i] for i in points.decide(probabilities)]
