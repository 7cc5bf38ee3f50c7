"""The transfer builder with the real ImageNet MobileNet weights committed in models/pretrained/."""

import dataclasses

import h5py
import numpy as np
import pytest

from pipelines.core import paths
from pipelines.core.errors import PipelineError, UsageError
from pipelines.modeling.builders import transfer
from pipelines.training.fit import unfreeze_top
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides

WEIGHTS = paths.REPO_ROOT / "models" / "pretrained" / "mobilenet_2_5_224_tf_no_top.h5"


def test_local_imagenet_weights_are_found_and_loaded():
    assert transfer.find_local_weights("mobilenet", 0.25) == WEIGHTS
    model = transfer.build_transfer((32, 32, 3), 9, image_size=64)
    backbone = model.get_layer("backbone")
    with h5py.File(WEIGHTS) as weights:
        np.testing.assert_array_equal(backbone.get_layer("conv_pw_13").get_weights()[0], weights["conv_pw_13/conv_pw_13/kernel:0"][()])
    assert not backbone.trainable
    assert model.output_shape == (None, 9)


def test_grey_input_is_repeated_to_rgb_and_weights_none_trains_from_scratch():
    model = transfer.build_transfer((28, 28, 1), 10, image_size=32, weights="none")
    assert "grey_to_rgb" in [layer.name for layer in model.layers]
    probabilities = model.predict(np.random.default_rng(0).random((2, 28, 28, 1)), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_weights_none_trains_the_whole_backbone_batchnorm_included():
    """From scratch, nothing is frozen: a frozen random backbone's features vanish through its
    untrained BatchNorm (every image got the same answer, AUC 0.500 in `make bench-cucumber`)."""
    with np.load(paths.samples_dir("cucumber") / "p1_test.npz") as sample:
        x, y = sample["x"][:32].astype("float32") / 255, sample["y"][:32]
    model = transfer.build_transfer((32, 32, 3), 9, image_size=32, weights="none")
    backbone = model.get_layer("backbone")
    assert backbone.trainable and len(model.trainable_weights) > 2  # more than the head's kernel and bias
    batch_norm = backbone.get_layer("conv1_bn")
    before = np.array(batch_norm.moving_mean)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    assert np.abs(np.array(batch_norm.moving_mean) - before).max() > 1e-4  # it learns its statistics
    pretrained = transfer.build_transfer((32, 32, 3), 9, image_size=32)
    assert not pretrained.get_layer("backbone").trainable and len(pretrained.trainable_weights) == 2


def test_missing_weights_file_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="does not exist"):
        transfer.build_transfer((32, 32, 3), 9, weights=str(tmp_path / "nope.h5"))


def test_no_local_copy_and_no_network_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(transfer, "weight_search_dirs", lambda: [])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    # The download fails on any machine: through a proxy on a closed loopback port.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(PipelineError) as error:
        transfer.build_transfer((32, 32, 3), 9, image_size=32)
    assert "cannot download ImageNet weights" in str(error.value) and "--set weights=" in str(error.value)
    assert "\n" not in str(error.value)


def test_unfreeze_top_keeps_batchnorm_frozen():
    model = transfer.build_transfer((32, 32, 3), 9, image_size=32)
    backbone = model.get_layer("backbone")
    trainable = unfreeze_top(backbone, 10)
    top = backbone.layers[-10:]
    assert trainable == sum(1 for layer in top if layer.weights and "bn" not in layer.name)
    assert all(not layer.trainable for layer in backbone.layers if "_bn" in layer.name)
    assert all(not layer.trainable for layer in backbone.layers[:-10])


def test_fine_tuning_phase_continues_the_epochs(isolated):
    from pipelines.data.loaders import load_dataset
    from pipelines.training import fit

    spec = apply_overrides(
        get_spec("cucumber"),
        {"data.source": "sample", "epochs": 1, "fine_tune_epochs": 1, "image_size": 32, "data.train_limit": 120},
    )
    resume = fit.ResumeState(spec)
    result = fit.train(spec, load_dataset(spec), resume=resume)
    assert result.epochs_run == 2 and len(result.history["val_accuracy"]) == 2
    assert (resume.folder / "fine_tune" / "training_metadata.json").is_file()
    assert any(layer.trainable for layer in result.models.network.get_layer("backbone").layers)


def test_fine_tuning_needs_a_backbone(isolated):
    from pipelines.data.loaders import load_dataset
    from pipelines.training import fit

    spec = apply_overrides(get_spec("digits"), {"data.source": "sample", "epochs": 1, "data.train_limit": 200})
    with pytest.raises(PipelineError, match="needs a pretrained backbone"):  # refused as the spec resolves
        apply_overrides(spec, {"fine_tune_epochs": 1})
    unchecked = dataclasses.replace(spec, train=dataclasses.replace(spec.train, fine_tune_epochs=1))
    with pytest.raises(PipelineError, match="needs a pretrained backbone"):  # and, defensively, by training
        fit.train(unchecked, load_dataset(unchecked))


def test_three_views_run_through_one_backbone_with_shared_weights():
    """A 9-channel input is three RGB views; the same backbone (one set of weights) runs on each
    and the head sees their pooled features side by side, in view order."""
    keras = transfer.import_keras()
    model = transfer.build_transfer((32, 32, 9), 9, image_size=32)
    single = transfer.build_transfer((32, 32, 3), 9, image_size=32)
    assert [layer.name for layer in model.layers if layer.name.startswith("view_")] == ["view_0", "view_1", "view_2"]
    backbones = [layer for layer in model.layers if layer.name == "backbone"]
    assert len(backbones) == 1  # called three times, stored once
    # Only the head is wider: 3 x 256 features in; the backbone's weights are counted once.
    assert model.count_params() - single.count_params() == 2 * 256 * 9
    images = np.random.default_rng(0).random((2, 32, 32, 9)).astype("float32")
    features = keras.Model(model.inputs, model.get_layer("views").output).predict(images, verbose=0)
    backbone, pool = model.get_layer("backbone"), model.get_layer("pool")
    for view in range(3):
        alone = pool(backbone(images[..., 3 * view : 3 * view + 3] * 2.0 - 1.0, training=False))
        np.testing.assert_allclose(features[:, 256 * view : 256 * (view + 1)], np.asarray(alone), atol=1e-5)
    with pytest.raises(UsageError, match="1 \\(grey\\), 3 \\(RGB\\) or 3k channels \\(k RGB views\\), not 7"):
        transfer.build_transfer((32, 32, 7), 9, image_size=32)


def test_a_three_view_model_fine_tunes_and_reloads_from_keras_file(tmp_path):
    from pipelines.modeling.models import register_custom_layers

    keras = transfer.import_keras()
    model = transfer.build_transfer((32, 32, 9), 9, image_size=32)
    unfreeze_top(model.get_layer("backbone"), 10)
    assert any(w.trainable for w in model.get_layer("backbone").weights)
    model.save(tmp_path / "views.keras")
    register_custom_layers()
    again = keras.models.load_model(tmp_path / "views.keras")
    images = np.random.default_rng(1).random((2, 32, 32, 9)).astype("float32")
    np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
