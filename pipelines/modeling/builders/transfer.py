"""Transfer learning from an ImageNet-pretrained `keras.applications` backbone.

The network resizes the image to the backbone's resolution, scales pixels the way the
backbone was trained, runs a pretrained backbone **in inference mode** (its BatchNorm
statistics are never updated, even when its top is unfrozen for fine-tuning) and adds a new
head. The backbone is a layer named `backbone`, frozen here; `pipelines.training.fit` unfreezes
its top for the second (fine-tuning) phase when `train.fine_tune_epochs > 0`.

Weights: `weights="imagenet"` uses a local copy when there is one (`models/pretrained/` or
Keras' cache `~/.keras/models/`) and else downloads it; `weights=<path to .h5>` loads that
file; `weights=none` trains from scratch: the whole backbone learns from the first epoch,
BatchNorm in training mode. (Frozen, as a pretrained one is, a random MobileNet's features
collapse to ~1e-16 through its untrained BatchNorm: every image gets the same answer.)

Several views of one object (CUCUMBER-9 prototype 2: three photos of each cucumber, stacked
as 9 channels): an input of 3k channels is split into k RGB views, and **one** backbone, the
same layer with the same weights, runs on each; the k pooled feature vectors are
concatenated, in view order, and the head classifies the concatenation. Why this and not the
alternatives:
- a backbone that takes 9 channels at once (early fusion) cannot use the ImageNet weights of
  its first layer, which expects 3, and throws away what pretraining gives a small data set;
- a backbone per view (k times the weights) triples what 2,000-odd images must fit, where the
  features a view needs (shape, bend, surface) are the same whichever side it shows;
- averaging the views' features would make the order of the views irrelevant, but the
  camera positions are fixed, so which view shows what is information the head can use.
The cost is k backbone passes per image, in training and in serving.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pipelines.core import paths
from pipelines.core.domains import OneOf, Range
from pipelines.core.errors import PipelineError, UsageError
from pipelines.core.runtime import import_keras


@dataclass(frozen=True)
class Backbone:
    application: str  # keras.applications attribute
    scale: float  # pixels in [0, 1] -> what the backbone expects: x * scale + offset
    offset: float
    weight_file_glob: str  # Keras' no-top weight file names, for finding a local copy


BACKBONES = {
    # "tf"-mode models expect [-1, 1]; EfficientNet rescales 0-255 itself.
    "mobilenet": Backbone("MobileNet", 2.0, -1.0, "mobilenet_{alpha}_*_tf_no_top.h5"),
    "mobilenet_v2": Backbone("MobileNetV2", 2.0, -1.0, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_*_no_top.h5"),
    "efficientnet_b0": Backbone("EfficientNetB0", 255.0, 0.0, "efficientnetb0_notop.h5"),
}
_ALPHA_TEXT = {"mobilenet": {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}}


def weight_search_dirs() -> list[Path]:
    return [paths.REPO_ROOT / "models" / "pretrained", Path.home() / ".keras" / "models"]


def find_local_weights(backbone: str, alpha: float) -> Path | None:
    alpha_text = _ALPHA_TEXT.get(backbone, {}).get(alpha, str(alpha))
    pattern = BACKBONES[backbone].weight_file_glob.format(alpha=alpha_text)
    for folder in weight_search_dirs():
        matches = sorted(folder.glob(pattern)) if folder.is_dir() else []
        if matches:
            return matches[-1]
    return None


def load_backbone(backbone: str, image_size: int, alpha: float, weights: str | None):
    keras = import_keras()
    if backbone not in BACKBONES:
        raise UsageError(f"unknown backbone '{backbone}'; known: {', '.join(sorted(BACKBONES))}")
    application = getattr(keras.applications, BACKBONES[backbone].application)
    kwargs = {"input_shape": (image_size, image_size, 3), "include_top": False}
    if backbone.startswith("mobilenet"):
        kwargs["alpha"] = alpha
    source = weights
    if weights == "imagenet":
        local = find_local_weights(backbone, alpha)
        source = str(local) if local else "imagenet"
    elif weights and weights != "none" and not Path(weights).expanduser().is_file():
        raise PipelineError(f"weights file {weights} does not exist; pass a .h5 no-top weight file, 'imagenet' or 'none'")
    elif weights and weights != "none":
        source = str(Path(weights).expanduser())
    try:
        with warnings.catch_warnings():
            # No-top weights do not depend on the input size; Keras warns all the same.
            warnings.filterwarnings("ignore", message=".*Weights for input shape.*")
            model = application(weights=None if source in (None, "none") else source, **kwargs)
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        if source != "imagenet":
            raise PipelineError(f"cannot load backbone weights from {source}: {exc}") from None
        expected = BACKBONES[backbone].weight_file_glob.format(alpha=_ALPHA_TEXT.get(backbone, {}).get(alpha, alpha))
        raise PipelineError(
            f"cannot download ImageNet weights for {backbone} ({str(exc).splitlines()[0][:120]}); offline? "
            f"pass --set weights=/path/to/{expected.replace('*', '224')} or put the file in models/pretrained/"
        ) from None
    model.trainable = False
    return model


@functools.cache
def _view_layer():
    """The custom layer, defined (and registered for `.keras` loading) on first use."""
    keras = import_keras()

    @keras.saving.register_keras_serializable(package="pipelines")
    class TakeView(keras.layers.Layer):
        """Channels `3 * index` to `3 * index + 2` of a `[batch, H, W, 3k]` batch: RGB view `index`."""

        def __init__(self, index=0, **kwargs):
            super().__init__(**kwargs)
            self.index = int(index)

        def call(self, images):
            return images[..., 3 * self.index : 3 * self.index + 3]

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], 3)

        def get_config(self):
            return {**super().get_config(), "index": self.index}

    return TakeView


def register() -> None:
    """Make the custom layer known before loading a `.keras` file that may contain it."""
    _view_layer()


def build_transfer(
    input_shape: tuple,
    num_classes: int,
    backbone: Annotated[str, OneOf(tuple(BACKBONES))] = "mobilenet",
    alpha: Annotated[float, Range(0, 1.4, min_open=True)] = 0.25,  # MobileNet width multiplier
    image_size: Annotated[int, Range(min=32)] = 128,  # the backbone's input side (32 px at least)
    weights: str = "imagenet",  # imagenet, none, or a no-top weight file
    dropout: Annotated[float, Range(0, 1, max_open=True)] = 0.2,
    name: str = "transfer",
):
    keras = import_keras()
    layers = keras.layers
    base = load_backbone(backbone, image_size, alpha, weights)
    base.name = "backbone"
    scratch = weights in (None, "", "none")
    if scratch:  # nothing pretrained to keep: every layer learns, BatchNorm its statistics too
        base.trainable = True
    spec = BACKBONES[backbone]
    channels = input_shape[-1]
    if channels != 1 and channels % 3:
        raise UsageError(f"the transfer builder takes 1 (grey), 3 (RGB) or 3k channels (k RGB views), not {channels}")
    inputs = keras.Input(shape=input_shape, name="pixels")
    views = [inputs]
    if channels == 1:
        views = [layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])]
    elif channels > 3:
        TakeView = _view_layer()
        views = [TakeView(index, name=f"view_{index}")(inputs) for index in range(channels // 3)]
    # One instance of each layer below, called once per view: the views share every weight.
    resize = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")
    scaling = layers.Rescaling(spec.scale, offset=spec.offset, name="backbone_scaling")
    pool = layers.GlobalAveragePooling2D(name="pool")
    features = []
    for x in views:
        if tuple(input_shape[:2]) != (image_size, image_size):
            x = resize(x)
        # Pretrained: inference-mode BatchNorm, also once unfrozen. From scratch: as the fit says.
        x = base(scaling(x), training=None if scratch else False)
        features.append(pool(x))
    x = features[0] if len(features) == 1 else layers.Concatenate(name="views")(features)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
