"""Grad-CAM on real models and real test images."""

import numpy as np

from pipelines.data.loaders import load_dataset
from pipelines.evaluation.explain import feature_layer, grad_cam, grad_cam_grid, pick_examples
from pipelines.modeling.builders import build
from pipelines.modeling.builders.transfer import build_transfer
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides


def test_pick_examples_is_correct_then_wrong_in_test_order():
    y_true = np.array([0, 1, 2, 3, 4, 5])
    y_pred = np.array([0, 9, 2, 9, 4, 9])
    np.testing.assert_array_equal(pick_examples(y_true, y_pred, per_kind=2), [0, 2, 1, 3])


def test_grad_cam_grid_for_a_trained_digits_model(isolated):
    from pipelines.training import fit

    spec = apply_overrides(get_spec("digits"), {"data.source": "sample", "epochs": 1, "data.train_limit": 500})
    dataset = load_dataset(spec)
    result = fit.train(spec, dataset)
    probabilities = fit.predict_probabilities(result.models.serving, dataset.test.x)
    pixels = dataset.test.x[:4, :, :, None].astype("float32") / 255
    heat = grad_cam(result.models.network, pixels, probabilities[:4].argmax(axis=1))
    assert heat.shape == (4, 28, 28) and heat.min() >= 0 and heat.max() <= 1
    assert (heat.max(axis=(1, 2)) == 1).all()  # each map normalised to its peak
    path = grad_cam_grid(result.models, dataset.test.x, dataset.test.y, probabilities, spec.class_names, isolated / "cam.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_transfer_network_is_explained_at_the_backbone():
    network = build_transfer((28, 28, 1), 10, image_size=32, weights="none")
    assert feature_layer(network).name == "backbone"
    heat = grad_cam(network, np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32"), np.array([0, 1]))
    assert heat.shape == (2, 28, 28)


def test_residual_network_with_shortcuts_is_explained():
    """Not a chain of layers: the shortcut branches need the graph as built."""
    from pipelines.core import paths
    from pipelines.data.loaders.medmnist_format import read_folder

    network = build("residual_cnn", (28, 28, 3), 7, {"stages": (8, 16), "blocks_per_stage": 1})
    assert feature_layer(network).name == "stage1_block0_out"
    images = read_folder(paths.samples_dir("skin"), get_spec("skin"), "sample").test.x[:3]
    heat = grad_cam(network, images.astype("float32") / 255, np.array([0, 5, 6]))
    assert heat.shape == (3, 28, 28) and heat.min() >= 0 and heat.max() <= 1
