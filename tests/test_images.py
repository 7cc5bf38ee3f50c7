import numpy as np
import pytest
from PIL import Image

from pipelines.core.errors import PipelineError
from pipelines.data.images import read_image


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


# A wider corpus of what users really send: each file is made here, the way the format is written.


def write_png(path, array, color_type, bit_depth=16, size=None, idat=None):
    """A PNG written chunk by chunk: 16-bit samples (which Pillow cannot save), or a header that
    declares `size` over a small compressed body (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = size or array.shape[:2]
    if idat is None:
        idat = zlib.compress(b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
    write_png(tmp_path / "grey16.png", ramp, color_type=0)
    grey = read_image(tmp_path / "grey16.png", (28, 28))
    np.testing.assert_allclose(grey, ramp / 257, atol=3)  # Lanczos at the same size: near identity
    assert grey.max() == 255 and grey.mean() == pytest.approx(127.5, abs=2)

    colour = np.zeros((8, 8, 3), np.uint16)
    colour[..., 0], colour[..., 1], colour[..., 2] = 65535, 32768, 0
    write_png(tmp_path / "rgb16.png", colour, color_type=2)
    assert tuple(read_image(tmp_path / "rgb16.png", (8, 8, 3))[4, 4]) == (255, 128, 0)


def test_transparency_is_composited_on_black(tmp_path):
    # A palette whose transparent entry is white: read naively, the background would be white.
    palette = Image.new("P", (28, 28), 0)
    palette.putpalette([255, 255, 255, 200, 200, 200])
    palette.paste(1, (10, 0, 18, 28))  # an opaque light stroke
    palette.save(tmp_path / "palette.png", transparency=0)
    grey = read_image(tmp_path / "palette.png", (28, 28))
    assert grey[:, :6].max() == 0 and grey[:, 12:16].min() == 200

    rgba = Image.new("RGBA", (28, 28), (255, 255, 255, 0))
    rgba.paste((255, 0, 0, 255), (0, 0, 14, 28))
    rgba.save(tmp_path / "rgba.png")
    colour = read_image(tmp_path / "rgba.png", (28, 28, 3))
    assert tuple(colour[5, 2]) == (255, 0, 0) and tuple(colour[5, 25]) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=95)  # pure red in print inks
    red = read_image(tmp_path / "print.jpg", (32, 32, 3))
    assert red[..., 0].min() > 240 and red[..., 1:].max() < 15


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("L", (28, 28), value) for value in (30, 220, 120)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(tmp_path / "moving.gif").n_frames == 3
    assert set(np.unique(read_image(tmp_path / "moving.gif", (28, 28)))) == {30}


def test_one_pixel_image_is_resized(tmp_path):
    Image.new("L", (1, 1), 77).save(tmp_path / "dot.png")
    image = read_image(tmp_path / "dot.png", (28, 28))
    assert image.shape == (28, 28) and set(np.unique(image)) == {77}


def test_exif_orientation_is_applied(tmp_path):
    upright = np.zeros((40, 20), np.uint8)
    upright[:10] = 255  # bright top: an image with a clear "up"
    Image.fromarray(upright).save(tmp_path / "upright.png")
    # As a camera stores it: the sensor's pixels turned, and EXIF Orientation 6 ("rotate 90 CW to view").
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert Image.open(tmp_path / "phone.jpg").size == (40, 20)  # stored sideways
    np.testing.assert_allclose(read_image(tmp_path / "phone.jpg", (28, 28)), read_image(tmp_path / "upright.png", (28, 28)), atol=12)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    import time
    import zlib

    # 20,000 x 20,000 1-bit grey: 50 MB of zero rows compress to ~50 kB, 400 M pixels decoded.
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 20_000 // 8)
    body = b"".join(compressor.compress(row * 1000) for _ in range(20)) + compressor.flush()
    write_png(tmp_path / "bomb.png", None, color_type=0, bit_depth=1, size=(20_000, 20_000), idat=body)
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    # Over our limit but under Pillow's (which only warns up to twice its own): the same header, smaller.
    for side in (9_000, 10_000):
        write_png(tmp_path / f"big{side}.png", None, color_type=0, bit_depth=1, size=(side, side), idat=body)
    started = time.perf_counter()
    for name, what, limit in (("bomb.png", "400,000,000 pixels", "178,956,970"),
                              ("big10000.png", "100,000,000 pixels", "89,478,485"),
                              ("big9000.png", "9,000 x 9,000 pixels", "64,000,000")):
        with pytest.raises(PipelineError) as error:
            read_image(tmp_path / name, (28, 28))
        assert str(error.value) == (f"{tmp_path / name}: {what} is over the limit of {limit} pixels, refused before "
                                    f"decoding (a decompression bomb?); downscale it first")
    assert time.perf_counter() - started < 1
