import numpy as np
import pytest
from PIL import Image

from pipelines.errors import PipelineError
from pipelines.predict import read_image


def test_colour_and_size_are_converted(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200), (255, 0, 0)).save(path)
    grey = read_image(path, (28, 28))
    assert grey.shape == (28, 28) and grey.dtype == np.uint8 and grey.mean() == pytest.approx(76, abs=1)  # luma of red
    colour = read_image(path, (32, 32, 3))
    assert colour.shape == (32, 32, 3) and tuple(colour[0, 0]) == (255, 0, 0)


def test_not_an_image_and_missing_file(tmp_path):
    bad = tmp_path / "a.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"garbage")
    with pytest.raises(PipelineError, match="a.jpg: not a readable image"):
        read_image(bad, (28, 28))
    with pytest.raises(PipelineError, match="no such file"):
        read_image(tmp_path / "none.png", (28, 28))
