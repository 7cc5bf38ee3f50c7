import numpy as np
import pytest

from pipelines.core.errors import UsageError
from pipelines.modeling import test_time_augmentation
from pipelines.modeling.models import build_models, register_custom_layers
from pipelines.training.fit import predict_probabilities
from pipelines.usecases import get_spec
from pipelines.usecases.settings import apply_overrides


def _models(usecase: str, transforms: tuple, **overrides):
    # small_cnn: fast, and nothing in it is symmetric, so any invariance comes from the views.
    spec = apply_overrides(get_spec(usecase), {"model.builder": "small_cnn", **overrides})
    return build_models(apply_overrides(spec, {"model.test_time_augmentation": transforms}))


def _images(shape, count=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def test_serving_model_is_the_mean_of_the_network_over_the_views():
    models = _models("clothing", ("flip_horizontal",))
    x = _images((28, 28))
    pixels = (x / 255.0).astype("float32")[..., None]
    expected = (models.network.predict_on_batch(pixels) + models.network.predict_on_batch(pixels[:, :, ::-1])) / 2
    np.testing.assert_allclose(predict_probabilities(models.serving, x), expected, atol=1e-5)
    assert models.training is models.serving or "test_time_average" not in [layer.name for layer in models.training.layers]


def test_flip_views_make_the_served_answer_mirror_invariant():
    models = _models("clothing", ("flip_horizontal",))
    x = _images((28, 28))
    plain = predict_probabilities(models.serving, x)
    np.testing.assert_allclose(predict_probabilities(models.serving, np.ascontiguousarray(x[:, :, ::-1])), plain, atol=1e-5)
    without_views = _models("clothing", ())
    # Control: the same kind of network without views is not invariant.
    single = predict_probabilities(without_views.serving, x)
    assert np.abs(predict_probabilities(without_views.serving, np.ascontiguousarray(x[:, :, ::-1])) - single).max() > 1e-4


def test_all_three_transforms_give_the_eight_symmetries_of_the_square():
    models = _models("skin", ("flip_horizontal", "flip_vertical", "transpose"))
    views = [layer for layer in models.serving.layers if layer.name.startswith("view_")]
    assert len(views) == 7  # plus the identity: 8 network passes
    x = _images((28, 28, 3))
    plain = predict_probabilities(models.serving, x)
    for rotated in (np.rot90(x, 1, axes=(1, 2)), np.rot90(x, 3, axes=(1, 2)), np.swapaxes(x, 1, 2)[:, ::-1]):
        np.testing.assert_allclose(predict_probabilities(models.serving, np.ascontiguousarray(rotated)), plain, atol=1e-5)


def test_a_keras_checkpoint_with_views_reloads(tmp_path):
    from pipelines.core.runtime import import_keras

    models = _models("clothing", ("flip_horizontal",))
    path = tmp_path / "model.keras"
    models.serving.save(path)
    register_custom_layers()
    reloaded = import_keras().models.load_model(path)
    x = _images((28, 28))
    np.testing.assert_allclose(predict_probabilities(reloaded, x), predict_probabilities(models.serving, x), atol=1e-6)


def test_unknown_transform_is_named():
    with pytest.raises(UsageError, match="unknown test-time transform.*rotate45.*known: flip_horizontal"):
        _models("clothing", ("rotate45",))


def test_transpose_needs_square_images():
    with pytest.raises(UsageError, match="needs square images, not 28x32"):
        test_time_augmentation.check(("transpose",), (28, 32, 3))


def test_view_count():
    assert test_time_augmentation.view_count(()) == 1
    assert test_time_augmentation.view_count(("flip_horizontal", "flip_vertical", "transpose")) == 8


def test_served_probabilities_stay_float32_under_mixed_precision():
    # The default precision on recent GPUs; the mean over views used to come out in bfloat16,
    # which scikit-learn's metrics reject.
    from pipelines.core.runtime import import_keras

    keras = import_keras()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        models = _models("clothing", ("flip_horizontal",))
        probabilities = predict_probabilities(models.serving, _images((28, 28)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
