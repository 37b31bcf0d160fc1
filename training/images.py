"""Photos as the model sees them: upright, 8-bit RGB, whatever the file's orientation tag and pixel mode.

Kept apart from ``inference.py`` (which needs the SageMaker inference toolkit) so that the training
data loader can use the same conversion and the network sees the same pixels in training and serving.
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


def upright_rgb(image: Image.Image) -> Image.Image:
    """The image as a viewer shows it, in 8-bit RGB.

    - the EXIF orientation is applied (phones store portraits sideways with an orientation tag);
    - transparency (an alpha channel, or a palette or colour key with a ``transparency`` entry) is
      composited on ``BACKGROUND``;
    - 16-bit and 32-bit integer grayscale (``I;16*``, ``I``) is scaled from 0..65535 to 0..255, values
      outside clipped: PIL's own conversion would clip everything above 255 to white;
    - 32-bit float grayscale (``F``) has no conventional range: its minimum..maximum is stretched to 0..255;
    - every other mode (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ...) goes through PIL's conversion.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _to_8bit(np.asarray(image, dtype=np.float64), 0.0, _SIXTEEN_BIT_MAX)
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        image = _to_8bit(pixels, float(pixels.min()), float(pixels.max()))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_8bit(pixels: np.ndarray, low: float, high: float) -> Image.Image:
    """Grayscale ``pixels`` mapped linearly from ``low..high`` to 0..255 (all 0 when ``low == high``)."""
    span = high - low or 1.0
    scaled = np.clip((pixels - low) * (255.0 / span), 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8))
