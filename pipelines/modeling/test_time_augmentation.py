"""Test-time augmentation: the serving model averages its class probabilities over fixed,
label-preserving views of each image.

A spec lists transforms (`("flip_horizontal",)`); the views are every combination of them,
so n transforms give 2**n views: a flip gives 2, both flips and a transposition give all 8
symmetries of the square (right for dermatoscopic images, which have no up or left). The
views are part of the serving model, hence of the exported SavedModel: clients send one
image and get the averaged answer, and evaluation measures exactly what is served. The cost
is one network pass per view. The training model never uses them.

What the views add on the full test sets, and what they cost a request, is measured in
docs/clothing-and-skin.md and benchmarks/RESULTS.md (`make bench-inference`).
"""

from __future__ import annotations

import functools
import itertools

from pipelines.core.errors import UsageError
from pipelines.core.runtime import import_keras

TRANSFORMS = {
    "flip_horizontal": "mirror left-right",
    "flip_vertical": "mirror top-bottom",
    "transpose": "swap rows and columns (with the flips: the 90-degree rotations); square images only",
}


def check(transforms: tuple, input_shape: tuple) -> None:
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise UsageError(f"unknown test-time transform(s) {', '.join(unknown)}; known: {', '.join(TRANSFORMS)}")
    if len(set(transforms)) != len(transforms):
        raise UsageError(f"test-time transforms listed twice: {', '.join(transforms)}")
    if "transpose" in transforms and input_shape[0] != input_shape[1]:
        raise UsageError(f"test-time transform 'transpose' needs square images, not {input_shape[0]}x{input_shape[1]}")


def view_count(transforms: tuple) -> int:
    return 2 ** len(transforms)


@functools.cache
def _view_layer():
    """The custom layer, defined (and registered for `.keras` loading) on first use."""
    keras = import_keras()

    @keras.saving.register_keras_serializable(package="pipelines")
    class ImageView(keras.layers.Layer):
        """Applies fixed transforms to a `[batch, H, W, C]` image batch, in order."""

        def __init__(self, transforms=(), **kwargs):
            super().__init__(**kwargs)
            self.transforms = tuple(transforms)

        def call(self, images):
            for transform in self.transforms:
                if transform == "flip_horizontal":
                    images = keras.ops.flip(images, axis=2)
                elif transform == "flip_vertical":
                    images = keras.ops.flip(images, axis=1)
                else:  # transpose
                    images = keras.ops.transpose(images, (0, 2, 1, 3))
            return images

        def compute_output_shape(self, input_shape):
            if "transpose" in self.transforms:
                return (input_shape[0], input_shape[2], input_shape[1], input_shape[3])
            return input_shape

        def get_config(self):
            return {**super().get_config(), "transforms": list(self.transforms)}

    return ImageView


def averaged_over_views(network, pixels, transforms: tuple):
    """`network(pixels)`, or its mean over every view when `transforms` is not empty."""
    if not transforms:
        return network(pixels)
    keras = import_keras()
    ImageView = _view_layer()
    outputs = []
    for count in range(len(transforms) + 1):
        for subset in itertools.combinations(transforms, count):
            view = ImageView(subset, name="view_" + ("_".join(subset) or "identity"))(pixels) if subset else pixels
            outputs.append(network(view))
    # float32 whatever the precision policy: under mixed_bfloat16 the mean would otherwise come
    # out in bfloat16, which NumPy/scikit-learn cannot read and which loses probability digits.
    return keras.layers.Average(name="test_time_average", dtype="float32")(outputs)


def register() -> None:
    """Make the custom layer known before loading a `.keras` file that may contain it."""
    _view_layer()
