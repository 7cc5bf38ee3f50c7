"""Batches from a memory-mapped array (a photo folder's decoded cache) are the batches the
in-memory path draws, read from the file instead of copied into one tensor."""

from __future__ import annotations

import numpy as np

from pipelines.data.dataset import Split
from pipelines.data.input_pipeline import fit_arguments


def batches(arguments: dict, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in arguments["x"].take(count)]


def test_a_memory_mapped_split_gives_the_in_memory_batches(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (53, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(53) % 4
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)

    in_memory = fit_arguments(Split(images, labels), batch_size=16, seed=3, training=True)
    from_file = fit_arguments(Split(mapped, labels), batch_size=16, seed=3, training=True)
    assert from_file["steps_per_epoch"] == in_memory["steps_per_epoch"] == 4
    # Two epochs: the same examples in every batch (a batch's rows come in file order), each image with its label.
    for (x_memory, y_memory), (x_file, y_file) in zip(batches(in_memory, 8), batches(from_file, 8)):
        order = np.lexsort((y_memory, [row.tobytes() for row in x_memory]))
        order_file = np.lexsort((y_file, [row.tobytes() for row in x_file]))
        assert np.array_equal(x_memory[order], x_file[order_file]) and np.array_equal(y_memory[order], y_file[order_file])

    # Epoch 2 as if never stopped (fresh datasets: one dataset's iterators reshuffle on from the last).
    resumed = fit_arguments(Split(mapped, labels), batch_size=16, seed=3, training=True, skip_epochs=1)
    straight = fit_arguments(Split(mapped, labels), batch_size=16, seed=3, training=True)
    assert np.array_equal(batches(resumed, 1)[0][0], batches(straight, 5)[4][0])

    evaluation = fit_arguments(Split(mapped, labels), batch_size=16, seed=3, training=False)
    drawn = np.concatenate([x for x, _ in batches(evaluation, 10)])
    assert np.array_equal(drawn, images)  # in order, every image once
