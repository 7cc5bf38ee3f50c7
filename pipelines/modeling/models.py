"""From a spec to the two models a run needs, sharing one set of weights:

- the **serving model**: raw input as a client sends it (uint8 images `[batch, H, W]` or
  `[batch, H, W, 3]`) -> scaling inside the model -> the builder's network -> probabilities
  (averaged over the spec's test-time views, if any). This is what is evaluated and exported.
- the **training model**: one pass of the network (no test-time views), with the spec's
  augmentation layers between scaling and the network. It is only ever fitted, never exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.core.errors import UsageError
from pipelines.core.runtime import import_keras
from pipelines.data.augmentation import build_augmentation
from pipelines.modeling import builders, test_time_augmentation
from pipelines.modeling.builders import fused_batch_norm, tabular_mlp, transfer


@dataclass
class Models:
    serving: Any  # keras.Model
    training: Any  # keras.Model (the serving model itself when there is no augmentation)
    network: Any  # the builder's model inside both (Grad-CAM looks inside it)


def network_input_shape(input_shape: tuple) -> tuple:
    """Grey images are served as (H, W) and fed to networks as (H, W, 1)."""
    return tuple(input_shape) + (1,) if len(input_shape) == 2 else tuple(input_shape)


def build_image_models(spec, dataset=None) -> Models:
    test_time_augmentation.check(tuple(spec.model.test_time_augmentation), spec.input_shape)
    keras = import_keras()
    raw = keras.Input(shape=tuple(spec.input_shape), dtype="uint8", name="image")
    scale = keras.layers.Rescaling(1.0 / 255, name="scale_to_unit")  # casts uint8 -> float too
    reshape = keras.layers.Reshape(network_input_shape(spec.input_shape), name="add_channel")
    network = builders.build(spec.model.builder, network_input_shape(spec.input_shape), spec.num_classes, spec.model.params)
    pixels = reshape(scale(raw))
    views = tuple(spec.model.test_time_augmentation)
    serving = keras.Model(raw, test_time_augmentation.averaged_over_views(network, pixels, views), name=f"{spec.name}_serving")
    augment = build_augmentation(tuple(spec.model.augmentation), spec.train.seed)
    if augment is None and not views:
        return Models(serving, serving, network)
    # Training sees one view per image: averaging over the test-time views would cost 2**n
    # network passes per step.
    training_pixels = pixels if augment is None else augment(pixels)
    training = keras.Model(raw, network(training_pixels), name=f"{spec.name}_training")
    return Models(serving, training, network)


# task -> how to build its models; tabular tasks register theirs here.
TASK_BUILDERS = {
    "image_classification": build_image_models,
}


def build_models(spec, dataset=None) -> Models:
    if spec.task not in TASK_BUILDERS:
        raise UsageError(f"unknown task '{spec.task}'; known: {', '.join(sorted(TASK_BUILDERS))}")
    return TASK_BUILDERS[spec.task](spec, dataset)


def register_custom_layers() -> None:
    """Make this package's custom layers known to Keras before loading a `.keras` file."""

    test_time_augmentation.register()
    fused_batch_norm.register()
    tabular_mlp.register()
    transfer.register()
