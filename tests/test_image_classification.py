"""The image task: `data.image_size` sets the input shape that the loader, the model, the export,
the model card and `predict` follow; cross-validated (`cv_folds`) on CUCUMBER-9 prototype 2
(`views=3`) end to end: a prototype-2-shaped folder built from the real sample photos, a short
2-fold run through `run_train`, the 9-channel SavedModel reloaded and served, and what the run,
its report and its metadata say about how the model was judged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import prototype_2_folder, run_cli, trained_once

from pipelines.core import paths
from pipelines.tasks import get_task
from pipelines.tasks.image_classification import sized
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

SHORT = {"data.views": 3, "validation.cv_folds": 2, "data.train_limit": 135, "train.epochs": 2, "train.fine_tune_epochs": 1,
         "model.image_size": 32}


@pytest.fixture(scope="module")
def prototype_2(tmp_path_factory):
    with np.load(paths.samples_dir("cucumber") / "p1_test.npz") as sample:
        x, y = sample["x"], sample["y"]
    folder = tmp_path_factory.mktemp("prototype_2") / "cucumber-9-python"
    return {"folder": folder, "views": prototype_2_folder(folder, x, y), "y": y}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prototype_2):
    with trained_once(tmp_path_factory, "cucumber", {**SHORT, "data.data_dir": str(prototype_2["folder"])}) as run:
        yield run


def test_the_run_logs_each_fold_and_is_ranked_by_the_cv_mean(trained):
    import mlflow

    client = mlflow.MlflowClient(trained["env"]["MLFLOW_TRACKING_URI"])
    run = client.get_run(trained["summary"]["run_id"])
    folds = client.get_metric_history(run.info.run_id, "fold_accuracy")
    assert [m.step for m in folds] == [0, 1]
    assert run.data.metrics["cv_accuracy_mean"] == pytest.approx(np.mean([m.value for m in folds]))
    assert run.data.metrics["cv_accuracy_sd"] == pytest.approx(np.std([m.value for m in folds], ddof=1))
    assert {"cv_balanced_accuracy_mean", "cv_macro_auc_ovr_mean", "cv_macro_auc_ovr_sd", "chance_level",
            "cv_balanced_point_balanced_accuracy_mean", "operating_point_tau"} <= set(run.data.metrics)
    assert not [name for name in run.data.metrics if name.startswith("test_")]  # no held-out split, no held-out figure
    assert run.data.tags["ranking_metric"] == "cv_accuracy_mean"
    assert run.data.tags["registry_reason"].startswith(("the first version", "cv_accuracy_mean"))
    assert run.data.params["validation.cv_folds"] == "2" and run.data.params["data.views"] == "3"
    assert run.data.params["train_examples"] == "135"  # the final model: every image kept, train and test pooled
    # Curves are the final model's only: 2 + 1 epochs, not the folds' as well.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/report.json", "evaluation/report.md", "evaluation/confusion_matrix.png"}


def test_the_exported_model_takes_three_views_and_says_how_it_was_judged(trained, prototype_2):
    import tensorflow as tf

    model_dir = Path(trained["summary"]["exported_to"])
    metadata = json.loads((model_dir / "metadata.json").read_text())
    assert metadata["input_shape"] == [32, 32, 9] and metadata["views"] == 3 and metadata["trained_on_all_data"]
    assert "repeated stratified 2-fold cross-validation over 135 examples" in metadata["evaluation"]
    assert "test_metrics" not in metadata and set(metadata["cv_metrics"]["accuracy"]) == {"mean", "sd"}
    # The decision rules travel as for a held-out run; tau was chosen on the out-of-fold predictions.
    assert len(metadata["operating_points"]["priors"]) == 9 and "out-of-fold" in metadata["operating_points"]["tau_source"]
    report = json.loads((model_dir / "report.json").read_text())
    assert report["out_of_fold"]["examples"] == 135 and len(report["per_fold"]) == 2
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "## Cross-validated metrics (mean +- sd over the folds)" in card and "no held-out score of its own" in card
    assert "`[batch, 32, 32, 9]`" in card and "3 photos of each object" in card

    served = tf.saved_model.load(str(model_dir))
    views = prototype_2["views"][:8]
    probabilities = served.serve(tf.constant(views)).numpy()
    assert probabilities.shape == (8, 9)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # Every view counts: the same cucumbers with views 2 and 3 swapped get other answers.
    swapped = np.concatenate([views[..., :3], views[..., 6:9], views[..., 3:6]], axis=-1)
    assert np.abs(served.serve(tf.constant(swapped)).numpy() - probabilities).max() > 1e-6


def test_predict_and_evaluate_say_what_a_cross_validated_model_is(trained, prototype_2, tmp_path):
    model_dir = trained["summary"]["exported_to"]
    png = tmp_path / "cucumber.png"
    from PIL import Image

    Image.fromarray(prototype_2["views"][0][..., :3]).save(png)
    result = run_cli("predict", "cucumber", "--model", model_dir, str(png), env=trained["env"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "takes 3 photos of each object at once (9 channels); predict reads one photo a file" in result.stderr
    result = run_cli("evaluate", "cucumber", "--data-dir", str(prototype_2["folder"]), "--set", "views=3", "--model", model_dir,
                     "--out", str(tmp_path / "evaluation"), env=trained["env"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "was trained on every image of this data (a cross-validated run): these test figures are on training images" in result.stdout


def test_the_default_size_leaves_the_spec_as_it_is():
    skin = get_spec("skin")
    assert skin.data.image_size == 28 and sized(skin) is skin
    cucumber = get_spec("cucumber")  # 0: the spec's own 32x32x3
    assert cucumber.data.image_size == 0 and sized(cucumber) is cucumber


def test_image_size_sets_a_square_input_and_keeps_the_channels():
    prepared = get_task("image_classification").prepare(apply_overrides(get_spec("skin"), ["data.image_size=192"]))
    assert prepared.input_shape == (192, 192, 3) and prepared.data.image_size == 192
    digits = get_spec("digits")  # grey images are served as (H, W): no channel axis appears
    grey = dataclasses.replace(digits, data=dataclasses.replace(digits.data, image_size=64))
    assert sized(grey).input_shape == (64, 64)
