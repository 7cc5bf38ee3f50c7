"""Decoding image files into the uint8 arrays a model takes: the one rule for every reader
(loaders of image files, `predict`, the data checks).

Images of any size, colour or grey, are converted the way the model was trained: to grey
(luma, ITU-R 601) for grey models or RGB for colour ones, then resized to the model's input
size with Lanczos resampling. Before that, what a file format can carry is settled the same
way for every file:

- an EXIF orientation (phone and camera photos) is applied, so the image is upright;
- 16-bit grey (medical and scientific PNGs) is scaled from 0-65535 to 0-255, not clipped;
  16-bit colour is scaled by Pillow itself;
- transparency (RGBA, grey + alpha, a palette with a transparent colour) is composited on
  **black**: the MNIST-style sets are light objects on a dark background, so a transparent
  background must read as dark, never as whatever colour the hidden pixels happen to hold;
- CMYK (print JPEGs) is converted to RGB;
- an animated GIF, APNG or multi-page TIFF gives its **first frame**;
- a file over `MAX_PIXELS` is refused from its header, before any pixel is decoded (a
  decompression bomb: a few kB of PNG can declare 20,000 x 20,000 pixels, 1.2 GB decoded).

How the picture meets the model's size is `fit` (a use case's `data.image_fit`, carried into
the exported model's metadata so `predict` decodes a photo as training did):

- `resize` stretches it to the size (the aspect ratio is lost; nothing is cut or added);
- `pad` scales it to fit inside and fills the rest with black (letterboxing, as transparency);
- `crop` scales it to cover the size and cuts the centre (the edges are lost).

No other change is made: MNIST digits are light strokes on a dark background, so a scan of
dark ink on white paper needs inverting first.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipelines.core.errors import PipelineError

# 64 megapixels (e.g. 8,000 x 8,000): above any phone or dermatoscope photo, far below what would
# exhaust memory. Below Pillow's own bomb threshold (89.5 MP), so this check speaks first.
MAX_PIXELS = 64_000_000
# How an image meets the model's size (see the module docstring); `pipelines.core.spec` lists them too.
FITS = ("resize", "pad", "crop")


def read_image_bytes(data: bytes, input_shape: tuple, name: str, fit: str = "resize") -> np.ndarray:
    """`read_image` of a file's bytes (Spark's `binaryFile` rows), errors naming the file `name`."""
    import io

    return read_image(io.BytesIO(data), input_shape, fit, name=name)


def read_image(path, input_shape: tuple, fit: str = "resize", name: str | None = None) -> np.ndarray:
    """A uint8 array of `input_shape`; raises PipelineError naming the file if it is not an
    image, or one too large to decode safely. `fit`: resize, pad or crop (see above). `path`
    may be an open binary file, with `name` to show in errors."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if fit not in FITS:
        raise PipelineError(f"image fit '{fit}' is not one of {', '.join(FITS)}")
    shown = name or path
    height, width = input_shape[:2]
    mode = "L" if len(input_shape) == 2 else "RGB"
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than fails) between its threshold and twice it: refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PIXELS:  # the header is read, no pixel yet
                    raise _too_large(shown, f"{image.width:,} x {image.height:,} pixels", MAX_PIXELS)
                converted = _fitted(_to_mode(image, mode), (width, height), fit)
    except PipelineError:
        raise
    except FileNotFoundError:
        raise PipelineError(f"{shown}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow checked the header first (its limit is the larger one): say it in the same words.
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
        what, limit = (f"{int(found[1]):,} pixels", int(found[2])) if found else ("the image", Image.MAX_IMAGE_PIXELS)
        raise _too_large(shown, what, limit) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PipelineError(f"{shown}: not a readable image ({type(exc).__name__}); use PNG or JPEG") from None
    return np.asarray(converted, dtype=np.uint8).reshape(input_shape)


def resize_images(images: np.ndarray, input_shape: tuple) -> np.ndarray:
    """uint8 images `[N, H, W(, 3)]` resized to `input_shape` as `read_image` resizes a file (Lanczos)."""
    from PIL import Image

    height, width = input_shape[:2]
    resized = [np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS)) for image in images]
    return np.stack(resized).astype(np.uint8).reshape((len(images), *input_shape))


def _fitted(image, size: tuple[int, int], fit: str):
    """`image` at `size` (width, height): stretched, letterboxed on black, or centre-cropped."""
    from PIL import Image, ImageOps

    if fit == "pad":
        return ImageOps.pad(image, size, Image.Resampling.LANCZOS, color=0)
    if fit == "crop":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    return image.resize(size, Image.Resampling.LANCZOS)


def _too_large(path: Path, what: str, limit: int) -> PipelineError:
    return PipelineError(f"{path}: {what} is over the limit of {limit:,} pixels, refused before decoding "
                         f"(a decompression bomb?); downscale it first")


def _to_mode(image, mode: str):
    """The first frame of `image`, upright, in `mode` ("L" or "RGB"), transparency on black."""
    from PIL import Image, ImageOps

    image.seek(0)  # animated: the first frame
    image = ImageOps.exif_transpose(image)  # upright, as a loaded copy
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey: Pillow's convert("L") clips at 255, which turns most of the image white.
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.round(np.clip(values, 0, 65535) / 257).astype(np.uint8), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(black, rgba)
    return image.convert(mode)
