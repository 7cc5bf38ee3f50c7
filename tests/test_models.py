import numpy as np
import pytest

from pipelines.core.errors import UsageError
from pipelines.modeling.models import build_models
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides


def test_serving_model_takes_raw_uint8_and_shares_weights_with_training():
    spec = apply_overrides(get_spec("digits"), {"model.augmentation": ("rotate", "zoom")})
    models = build_models(spec)
    assert models.serving.inputs[0].dtype == "uint8" and tuple(models.serving.inputs[0].shape) == (None, 28, 28)
    assert models.training is not models.serving
    # Augmentation only in the training graph; the weights are the same objects.
    assert "augmentation" in [layer.name for layer in models.training.layers]
    assert "augmentation" not in [layer.name for layer in models.serving.layers]
    assert {id(w) for w in models.serving.weights} == {id(w) for w in models.training.weights}
    probabilities = models.serving.predict(np.zeros((2, 28, 28), np.uint8), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_no_augmentation_means_one_model():
    models = build_models(get_spec("digits"))
    assert models.training is models.serving


def _view_layers(model) -> list[str]:
    return [layer.name for layer in model.layers if type(layer).__name__ == "ImageView"]


def test_training_sees_one_view_when_serving_averages_several():
    spec = apply_overrides(get_spec("clothing"), {"model.augmentation": ()})
    models = build_models(spec)
    assert models.training is not models.serving
    assert _view_layers(models.serving) and not _view_layers(models.training)
    assert {id(w) for w in models.serving.weights} == {id(w) for w in models.training.weights}


def test_unknown_builder_parameter_is_named():
    spec = apply_overrides(get_spec("digits"), {"model.builder": "small_cnn"})
    spec = spec.__class__(**{**spec.__dict__, "model": spec.model.__class__(builder="small_cnn", params={"depth": 3})})
    with pytest.raises(UsageError, match="takes no parameter\\(s\\) depth"):
        build_models(spec)


def test_unknown_augmentation_is_named():
    with pytest.raises(UsageError, match="unknown augmentation 'smudge'"):  # as the spec resolves
        apply_overrides(get_spec("digits"), {"model.augmentation": ("smudge",)})


def test_three_view_images_are_augmented_and_averaged_as_one_image():
    """CUCUMBER-9 prototype 2 (`views=3`, 32x32x9): an augmentation moves the three views of a
    cucumber together, and a test-time view flips all nine channels."""
    from pipelines.data.augmentation import build_augmentation
    from pipelines.tasks.image_classification import stacked_views
    from pipelines.training.fit import predict_probabilities

    spec = stacked_views(apply_overrides(get_spec("cucumber"), {"data.views": 3, "image_size": 32, "weights": "none", "fine_tune_epochs": 0,
                                                                "model.augmentation": ("flip", "rotate:0.2", "zoom", "contrast"),
                                                                "model.test_time_augmentation": ("flip_horizontal",)}))
    assert spec.input_shape == (32, 32, 9) and stacked_views(spec).input_shape == (32, 32, 9)  # idempotent
    models = build_models(spec)
    assert tuple(models.serving.inputs[0].shape) == (None, 32, 32, 9)
    photo = np.random.default_rng(0).random((4, 32, 32, 3)).astype("float32")
    augmented = np.asarray(build_augmentation(spec.model.augmentation, seed=3)(np.concatenate([photo] * 3, axis=-1), training=True))
    assert augmented.shape == (4, 32, 32, 9) and np.abs(augmented[..., :3] - photo).max() > 0.01  # it did transform
    np.testing.assert_allclose(augmented[..., 3:6], augmented[..., :3], atol=1e-6)  # ... every view alike
    np.testing.assert_allclose(augmented[..., 6:9], augmented[..., :3], atol=1e-6)
    x = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 9), dtype=np.uint8)
    pixels = (x / 255.0).astype("float32")
    expected = (models.network.predict_on_batch(pixels) + models.network.predict_on_batch(pixels[:, :, ::-1])) / 2
    np.testing.assert_allclose(predict_probabilities(models.serving, x), expected, atol=1e-5)


def test_custom_layers_keep_the_names_saved_models_refer_to():
    """A `.keras` checkpoint names each custom layer `pipelines>Class`: the names, not the module
    paths, so checkpoints written before the package moved into stage folders still load."""
    from pipelines.core.runtime import import_keras
    from pipelines.modeling.models import register_custom_layers

    keras = import_keras()
    register_custom_layers()
    for name in ("FillMissing", "MissingIndicator", "TakeView", "ImageView", "FusedBatchNormalization"):
        assert keras.saving.get_registered_object(f"pipelines>{name}") is not None, name
