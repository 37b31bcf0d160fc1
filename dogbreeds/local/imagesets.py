"""Small image sets in the dogImages layout, generated (no download): for local mode and the tests.

``root/{train,valid,test}/NNN.Breed_Name/*.jpg``. Each class has its own colour and stripe
direction plus noise, so even a randomly initialized ResNet learns them in a few epochs.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

DEFAULT_CLASSES = ("001.Affenpinscher", "042.Carolina_dog", "103.Mastiff")
SPLITS = ("train", "valid", "test")
DEFAULT_SIZE = (48, 40)
_PALETTE = ((200, 40, 40), (40, 170, 60), (40, 60, 210), (220, 200, 40), (160, 40, 190), (30, 190, 190))


def make_image_set(
    root: Path,
    *,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    per_split: dict[str, int] | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
) -> Path:
    """Write the image set under ``root`` and return ``root``."""
    per_split = per_split or {"train": 12, "valid": 4, "test": 4}
    rng = random.Random(seed)
    for split, count in per_split.items():
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                image_for_class(index, size, rng).save(folder / f"{name.split('.', 1)[-1]}_{n:05d}.jpg", quality=90)
    return root


def image_for_class(index: int, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A noisy image whose colour and stripe direction identify class ``index``."""
    base = _PALETTE[index % len(_PALETTE)]
    width, height = size
    image = Image.new("RGB", size, tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in base))
    draw = ImageDraw.Draw(image)
    step = 6 + index % 3
    for offset in range(-max(size), max(size) * 2, step * 2):
        if (index // len(_PALETTE)) % 2 == 0:
            draw.line([(offset, 0), (offset, height)], fill=(255, 255, 255), width=2)
        else:
            draw.line([(0, offset), (width, offset)], fill=(0, 0, 0), width=2)
    pixels = image.load()
    for _ in range(width * height // 8):
        x, y = rng.randrange(width), rng.randrange(height)
        pixels[x, y] = tuple(rng.randrange(256) for _ in range(3))
    return image
