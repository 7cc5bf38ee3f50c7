import numpy as np
import pytest

from pipelines.builders import build
from pipelines.config import apply_overrides
from pipelines.errors import UsageError
from pipelines.model import build_models
from pipelines.usecases import get_spec


def test_shapes_and_shortcuts():
    model = build("residual_cnn", (28, 28, 3), 7, {"stages": (16, 32), "blocks_per_stage": 2})
    names = [layer.name for layer in model.layers]
    assert "stage1_block0_shortcut" in names and "stage1_block1_shortcut" not in names  # only where the shape changes
    assert model.get_layer("stage1_block1_add").output.shape[1:] == (14, 14, 32)
    probabilities = model.predict(np.random.default_rng(0).random((2, 28, 28, 3)), verbose=0)
    assert probabilities.shape == (2, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_selectable_from_a_spec_with_its_own_parameters():
    spec = apply_overrides(get_spec("skin"), ["model.builder=residual_cnn", "stages=16,32", "blocks_per_stage=1"])
    assert spec.model.params == {"stem_filters": 32, "stages": (16, 32), "blocks_per_stage": 1, "dropout": 0.2}
    models = build_models(spec)
    assert models.serving.output_shape == (None, 7)
    with pytest.raises(UsageError, match="unknown --set key 'convs_per_block'"):  # small_cnn's, not this builder's
        apply_overrides(spec, ["convs_per_block=2"])
