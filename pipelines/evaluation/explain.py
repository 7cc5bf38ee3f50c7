"""Grad-CAM (Selvaraju et al., 2017): which pixels drove a prediction, for image models.

For a fixed, reproducible set of test images (the first correct and the first wrong ones in
test order) the heat map is the ReLU of the last convolutional feature maps weighted by the
spatially averaged gradient of the predicted class score. One PNG grid, logged to MLflow.
Needs the TensorFlow backend (GradientTape); under others `train` skips it with a note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.core.runtime import import_keras
from pipelines.evaluation.plots import _pyplot
from pipelines.modeling.models import network_input_shape


def _is_spatial(layer) -> bool:
    shape = getattr(layer, "output", None) is not None and layer.output.shape
    return bool(shape) and len(shape) == 4


def feature_layer(network):
    """The layer whose feature maps are explained: the network's last spatial layer that is
    not a pooling one (small_cnn: the last ReLU; residual_cnn: the last block's output;
    transfer: the backbone)."""
    layers = _layers(network)
    spatial = [layer for layer in layers if _is_spatial(layer) and "pool" not in layer.name]
    if not spatial:
        raise ValueError(f"{network.name} has no spatial layer to explain")
    return spatial[-1]


def _layers(network):
    return [layer for layer in network.layers if layer.__class__.__name__ != "InputLayer"]


def _head(network, feature):
    """The layers after the feature layer: a chain (pool, dropout, classifier) in every builder."""
    layers = _layers(network)
    head = layers[layers.index(feature) + 1 :]
    branched = [layer.name for layer in head
                if isinstance(layer._inbound_nodes[-1].input_tensors, (list, tuple)) and len(layer._inbound_nodes[-1].input_tensors) > 1]
    if branched:
        raise ValueError(f"Grad-CAM needs a chain of layers after {feature.name!r}; {branched} take several inputs")
    return head


def grad_cam(network, pixels: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
    """Heat maps in [0, 1], one per image, at the image's resolution.

    The feature maps come from a functional probe (network input -> feature layer), which runs
    the graph as built, so residual shortcuts before the feature layer are fine. Only the head
    runs under the gradient tape: the gradient needs nothing else, and eager conv-filter
    backprop under oneDNN (TF 2.21 CPU) crashes the process with a double free."""
    import tensorflow as tf

    keras = import_keras()
    feature = feature_layer(network)
    # The layer's output in *this* graph: its last call. (`layer.output` is its first, which
    # for a nested model such as the transfer backbone is the output of its own graph.)
    probe = keras.Model(network.inputs, feature._inbound_nodes[-1].output_tensors[0])
    features = probe(tf.convert_to_tensor(pixels, dtype=tf.float32), training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        x = features
        for layer in _head(network, feature):
            x = layer(x, training=False)
        scores = tf.gather(x, class_indices, axis=1, batch_dims=1)
    gradients = tape.gradient(scores, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
    cam = tf.image.resize(cam, pixels.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def pick_examples(y_true: np.ndarray, y_pred: np.ndarray, per_kind: int = 8) -> np.ndarray:
    """The first `per_kind` correct and the first `per_kind` wrong test images (test order)."""
    correct = np.flatnonzero(y_true == y_pred)[:per_kind]
    wrong = np.flatnonzero(y_true != y_pred)[:per_kind]
    return np.concatenate([correct, wrong])


def grad_cam_grid(models, images: np.ndarray, y_true: np.ndarray, probabilities: np.ndarray, class_names, path: Path) -> Path:
    """Render the chosen examples with their heat maps as one PNG (correct first, then wrong)."""

    import_keras()
    y_pred = probabilities.argmax(axis=1)
    chosen = pick_examples(y_true, y_pred)
    raw = images[chosen]
    pixels = raw.astype("float32").reshape((len(raw),) + network_input_shape(raw.shape[1:])) / 255.0
    heat = grad_cam(models.network, pixels, y_pred[chosen])

    plt = _pyplot()
    columns = 8
    rows = max(1, int(np.ceil(len(chosen) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index, image, cam in zip(axes.ravel(), chosen, raw, heat):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        axis.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
        ok = y_true[index] == y_pred[index]
        axis.set_title(
            f"#{index} {class_names[y_true[index]]}\n-> {class_names[y_pred[index]]} {probabilities[index, y_pred[index]]:.2f}",
            fontsize=7,
            color="green" if ok else "red",
        )
    figure.suptitle("Grad-CAM: correct (green) and wrong (red) test predictions", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
