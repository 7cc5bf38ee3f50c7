"""Augmentations by name, as Keras preprocessing layers. They go into the training model
only (see `pipelines.modeling.models`), so the exported serving graph never contains them.

A spec lists names, optionally with a strength: `("flip_horizontal", "rotate:0.1")`.
"""

from __future__ import annotations

from pipelines.core.errors import UsageError
from pipelines.core.runtime import import_keras

# name -> (layer factory taking a strength, default strength)
AUGMENTATIONS = {
    "flip_horizontal": (lambda k, s: k.layers.RandomFlip("horizontal"), None),
    "flip_vertical": (lambda k, s: k.layers.RandomFlip("vertical"), None),
    "flip": (lambda k, s: k.layers.RandomFlip("horizontal_and_vertical"), None),
    "rotate": (lambda k, s: k.layers.RandomRotation(s, fill_mode="reflect"), 0.05),  # fraction of a full turn
    "zoom": (lambda k, s: k.layers.RandomZoom(s, fill_mode="reflect"), 0.1),
    "translate": (lambda k, s: k.layers.RandomTranslation(s, s, fill_mode="constant"), 0.1),
    "contrast": (lambda k, s: k.layers.RandomContrast(s), 0.1),
    "brightness": (lambda k, s: k.layers.RandomBrightness(s, value_range=(0.0, 1.0)), 0.1),
}


def parse(entry: str) -> tuple[str, float | None]:
    name, _, strength = entry.partition(":")
    if name not in AUGMENTATIONS:
        raise UsageError(f"unknown augmentation '{name}'; known: {', '.join(sorted(AUGMENTATIONS))}")
    default = AUGMENTATIONS[name][1]
    try:
        return name, float(strength) if strength else default
    except ValueError:
        raise UsageError(f"augmentation '{entry}': strength must be a number") from None


def build_augmentation(entries: tuple, seed: int):
    """A Sequential of the named layers, or None when the spec asks for none."""
    if not entries:
        return None
    keras = import_keras()
    layers = []
    for index, entry in enumerate(entries):
        name, strength = parse(entry)
        layer = AUGMENTATIONS[name][0](keras, strength)
        layer.seed = seed + index  # each layer its own stream, all reproducible
        layers.append(layer)
    return keras.Sequential(layers, name="augmentation")
