"""Handwritten digit recognition: MNIST, 28x28 grey, 10 classes, official 60k/10k split."""

from pipelines.core.spec import DataConfig, ModelConfig, Spec, TrainConfig

SPEC = Spec(
    name="digits",
    title="Handwritten digit recognition (MNIST)",
    task="image_classification",
    input_shape=(28, 28),
    class_names=tuple(str(d) for d in range(10)),
    description="Classifies a 28x28 grey image of one handwritten digit (light stroke on dark ground) as 0-9.",
    data=DataConfig(
        loader="mnist_format",
        options={
            # Keras' copy of MNIST, the file keras.datasets.mnist downloads (same sha256).
            "remote_files": (
                {
                    "name": "mnist.npz",
                    "url": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
                    "sha256": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
                },
            ),
        },
    ),
    model=ModelConfig(
        builder="small_cnn",
        params={"filters": (32, 64), "convs_per_block": 1, "dense_units": 128, "dropout": 0.3, "batch_norm": False},
    ),
    train=TrainConfig(epochs=6, batch_size=128, learning_rate=3e-3, schedule="cosine"),
    intended_use="Reading single, centred, size-normalised handwritten digits, e.g. form fields after segmentation.",
    limitations=(
        "Trained on MNIST (American census staff and students, 1990s): other handwriting styles, "
        "unsegmented numbers, dark-on-light scans (invert them first) and non-digits are out of distribution; "
        "the model always answers one of 0-9."
    ),
)
