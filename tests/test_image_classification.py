"""The image task's view of a spec: `data.image_size` sets the input shape that the loader,
the model, the export, the model card and `predict` all follow."""

import dataclasses

from pipelines.config import apply_overrides
from pipelines.tasks import get_task
from pipelines.tasks.image_classification import sized
from pipelines.usecases import get_spec


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
