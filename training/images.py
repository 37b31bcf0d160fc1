"""Photos as the model sees them: upright, 8-bit RGB, whatever the file's orientation tag and pixel mode.

Kept apart from ``inference.py`` (which needs the SageMaker inference toolkit) so that the training
data loader can use the same conversion and the network sees the same pixels in training and serving.
``conversion_bytes`` states what ``upright_rgb`` costs in memory, so that the endpoint can refuse an image
before decoding it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# Transparent pixels are composited on white: product photos and cut-outs are usually meant to be
# seen on a white page, and a black background would darken every semi-transparent edge.
BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535
# High-bit-depth pixels are scaled to 8 bits this many at a time, so that the float copies stay small.
_STRIPE_PIXELS = 1 << 20
# Bytes a pixel takes in PIL's memory: three- and two-band modes are stored in four bytes, as RGBA is.
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_WIDE_BYTES = 4


class MalformedMetadata(ValueError):
    """The image's EXIF data cannot be read; the message says what PIL's parser raised."""


def upright_rgb(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it, in 8-bit RGB.

    - the EXIF orientation is applied (phones store portraits sideways with an orientation tag), to
      ``image`` itself; EXIF data that PIL cannot parse raises ``MalformedMetadata``;
    - transparency (an alpha channel, or a palette or colour key with a ``transparency`` entry) is
      composited on ``BACKGROUND``;
    - 16-bit and 32-bit integer grayscale (``I;16*``, ``I``) is scaled from 0..65535 to 0..255, values
      outside clipped: PIL's own conversion would clip everything above 255 to white;
    - 32-bit float grayscale (``F``) has no conventional range: its minimum..maximum (of the finite values)
      is stretched to 0..255, NaN and -inf become 0, +inf 255;
    - every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ...) goes through PIL's conversion.
    """
    _apply_orientation(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _to_8bit(image, 0.0, _SIXTEEN_BIT_MAX)
    elif image.mode == "F":
        image = _to_8bit(image, *_finite_range(image))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def conversion_bytes(mode: str, info: dict) -> int:
    """Bytes per pixel that ``upright_rgb`` allocates for an image of ``mode`` (with ``info``), its decoded
    pixels included: each buffer it writes counts, as if none were freed, so that this bounds its peak.

    The orientation's transposed copy always counts (whether the EXIF has one is known only once parsed).
    """
    stored = _STORED_BYTES.get(mode, _WIDE_BYTES)
    total = 2 * stored  # the decoded pixels, and the transposed copy
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        total += 1  # the 8-bit grayscale result
        mode, info = "L", {}
    if mode in _ALPHA_MODES or "transparency" in info:
        return total + 4 * _WIDE_BYTES  # RGBA copy, white background, composite, RGB
    return total + (0 if mode == "RGB" else _WIDE_BYTES)


def _apply_orientation(image: Image.Image) -> None:
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as err:  # PIL's EXIF parser raises struct.error, TypeError, ValueError, ... on bad data
        kind = (
            type(err).__name__ if type(err).__module__ == "builtins" else f"{type(err).__module__}.{type(err).__name__}"
        )
        raise MalformedMetadata(f"its EXIF metadata is malformed ({kind})") from err


def _stripes(image: Image.Image) -> list[tuple[int, int]]:
    rows = max(1, _STRIPE_PIXELS // max(1, image.width))
    return [(top, min(top + rows, image.height)) for top in range(0, image.height, rows)]


def _stripe(image: Image.Image, top: int, bottom: int) -> np.ndarray:
    return np.asarray(image.crop((0, top, image.width, bottom)), dtype=np.float64)


def _finite_range(image: Image.Image) -> tuple[float, float]:
    """The smallest and largest finite values of a float image (0, 0 when it has none)."""
    low, high = np.inf, -np.inf
    for top, bottom in _stripes(image):
        pixels = _stripe(image, top, bottom)
        finite = pixels[np.isfinite(pixels)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return (low, high) if low <= high else (0.0, 0.0)


def _to_8bit(image: Image.Image, low: float, high: float) -> Image.Image:
    """Grayscale ``image`` mapped linearly from ``low..high`` to 0..255 (all 0 when ``low == high``),
    a stripe of rows at a time: float copies of a whole 40-megapixel image would take 320 MB each."""
    span = high - low or 1.0
    result = np.empty((image.height, image.width), dtype=np.uint8)
    for top, bottom in _stripes(image):
        scaled = np.clip((_stripe(image, top, bottom) - low) * (255.0 / span), 0, 255)
        result[top:bottom] = np.rint(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0))
    return Image.fromarray(result)
