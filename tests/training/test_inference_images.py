"""Pixels: every mode to upright 8-bit RGB (images.upright_rgb), and inference.decode against training evaluation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from images import BACKGROUND, upright_rgb
from PIL import Image, ImageDraw

from inference import RequestImage, decode
from model import ModelConfig, eval_transform
from tests.training.inference_fixtures import encoded, reencoded

# What exif_transpose does for each orientation tag, and the transposition that undoes it.
ORIENTATIONS = {
    1: (None, None),
    2: (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_LEFT_RIGHT),
    3: (Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_180),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.FLIP_TOP_BOTTOM),
    5: (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSPOSE),
    6: (Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_90),
    7: (Image.Transpose.TRANSVERSE, Image.Transpose.TRANSVERSE),
    8: (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270),
}


def pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    assert image.mode == "RGB"
    return [tuple(int(c) for c in pixel) for pixel in np.asarray(image).reshape(-1, 3)]


def one_row(mode: str, values: list) -> Image.Image:
    image = Image.new(mode, (len(values), 1))
    for x, value in enumerate(values):
        image.putpixel((x, 0), value)
    return image


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields, sharp outlines and sensor-like noise: what JPEG scaling is judged on."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y, r = rng.integers(0, width), rng.integers(0, height), rng.integers(5, 200)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + r, y + r), outline=colour, width=int(rng.integers(1, 6)))
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (reencoded(one_row("1", [0, 1]), "PNG"), [(0, 0, 0), (255, 255, 255)]),
        (reencoded(one_row("L", [0, 77, 255]), "PNG"), [(0, 0, 0), (77, 77, 77), (255, 255, 255)]),
        # 16-bit: scaled from 0..65535, where PIL's own conversion would clip everything above 255 to white
        (reencoded(one_row("I;16", [0, 257, 32896, 65535]), "PNG"), [(0,) * 3, (1,) * 3, (128,) * 3, (255,) * 3]),
        # 32-bit integer: the same 16-bit scale, clipped
        (reencoded(one_row("I", [-5, 32896, 70000]), "TIFF"), [(0,) * 3, (128,) * 3, (255,) * 3]),
        # float: minimum..maximum stretched to 0..255
        (reencoded(one_row("F", [-1.0, 0.0, 1.0]), "TIFF"), [(0,) * 3, (128,) * 3, (255,) * 3]),
        (reencoded(one_row("F", [0.25, 0.25]), "TIFF"), [(0,) * 3, (0,) * 3]),
        (reencoded(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "JPEG", quality=100), [(255, 0, 0)] * 4),
        (one_row("YCbCr", [(76, 85, 255)]), [(254, 0, 0)]),
    ],
    ids=["1", "L", "I;16", "I", "F", "F-constant", "CMYK", "YCbCr"],
)
def test_every_mode_becomes_8_bit_rgb(image: Image.Image, expected: list[tuple[int, int, int]]) -> None:
    assert pixels(upright_rgb(image)) == expected


def test_transparency_is_composited_on_the_background() -> None:
    assert BACKGROUND == (255, 255, 255)
    rgba = one_row("RGBA", [(200, 0, 0, 255), (200, 0, 0, 0), (200, 0, 0, 128)])
    assert pixels(upright_rgb(reencoded(rgba, "PNG"))) == [(200, 0, 0), (255, 255, 255), (227, 127, 127)]
    la = one_row("LA", [(100, 255), (100, 0)])
    assert pixels(upright_rgb(reencoded(la, "PNG"))) == [(100, 100, 100), (255, 255, 255)]
    palette = one_row("P", [0, 1])
    palette.putpalette([200, 0, 0, 0, 0, 200])
    assert pixels(upright_rgb(reencoded(palette, "PNG"))) == [(200, 0, 0), (0, 0, 200)]
    assert pixels(upright_rgb(reencoded(palette, "PNG", transparency=1))) == [(200, 0, 0), (255, 255, 255)]
    keyed = one_row("RGB", [(10, 20, 30), (200, 0, 0)])  # a PNG colour key: one RGB value is transparent
    assert pixels(upright_rgb(reencoded(keyed, "PNG", transparency=(10, 20, 30)))) == [(255, 255, 255), (200, 0, 0)]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_exif_orientation_is_applied(orientation: int) -> None:
    upright = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8))
    _, undo = ORIENTATIONS[orientation]
    stored = upright.transpose(undo) if undo is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    assert np.array_equal(np.asarray(upright_rgb(reencoded(stored, "PNG", exif=exif))), np.asarray(upright))


def test_a_small_image_decodes_exactly_as_training_evaluation_reads_it() -> None:
    config = ModelConfig("resnet50", 133)
    data = encoded(photo_like(400, 300), "JPEG", quality=90)
    served = eval_transform(config)(decode(RequestImage("x", Image.open(io.BytesIO(data))), config.resize_size))
    assert torch.equal(served, eval_transform(config)(Image.open(io.BytesIO(data)).convert("RGB")))


def test_a_large_jpeg_decodes_at_a_reduced_scale_within_a_few_levels_of_a_full_decode() -> None:
    config = ModelConfig("resnet50", 133)
    data = encoded(photo_like(1600, 1200), "JPEG", quality=90)
    image = decode(RequestImage("x", Image.open(io.BytesIO(data))), config.resize_size)
    assert image.size == (800, 600)  # DCT scaling by 1/2: still at least twice resize_size (256)
    fast = eval_transform(config)(image)
    full = eval_transform(config)(Image.open(io.BytesIO(data)).convert("RGB"))
    levels = ((fast - full) * torch.tensor(config.std)[:, None, None]).abs() * 255
    assert levels.mean() < 1
    assert levels.max() < 16
