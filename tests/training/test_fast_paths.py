"""The speed-ups of the serving and data-loading paths give what the slow paths give, within a tested tolerance.

- ``inference.preprocess`` (tensor ops on the decoded pixels) against ``model.eval_transform`` (torchvision on PIL);
- ``data.load_rgb`` with a reduced JPEG decode (``draft_size``) against a full decode, for evaluation and for
  training's random crops;
- ``model.backbone_and_head``, which the feature cache of train.py runs.

Serving precision (``INFERENCE_PRECISION``) is tested in test_precision.py, the int8 model in test_quantize.py.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import data
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision.transforms import functional as tvf

import inference
from model import (
    DECODE_MARGIN,
    ModelConfig,
    backbone_and_head,
    build_model,
    decode_size,
    eval_transform,
    train_transform,
)
from tests.training.inference_fixtures import STAND_IN_CONFIG, fit_stand_in_model, pattern

RESNET50 = ModelConfig("resnet50", 133)
SMALL = ModelConfig("resnet18", 6, image_size=32, resize_size=36)


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields, outlines and sensor-like noise: the detail that resizing and JPEG scaling act on."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y, r = rng.integers(0, width), rng.integers(0, height), rng.integers(3, max(4, width // 8))
        draw.ellipse((x, y, x + r, y + r), outline=tuple(int(c) for c in rng.integers(0, 256, 3)), width=2)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def levels(a: torch.Tensor, b: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Per-value difference of two normalized tensors, in levels of 255 of the original pixels."""
    return (a - b).abs() * torch.tensor(config.std).view(3, 1, 1) * 255


def jpeg_file(path: Path, image: Image.Image) -> str:
    image.save(path, "JPEG", quality=90)
    return str(path)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model folder of the stand-in model (inference_fixtures), as train.py writes it. Read only."""
    return str(fit_stand_in_model(tmp_path_factory.mktemp("stand-in") / "model"))


# --- inference.preprocess ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [RESNET50, SMALL], ids=["224", "32"])
@pytest.mark.parametrize(
    "size", [(800, 600), (600, 800), (321, 239), (256, 256), (100, 80), (48, 40), (33, 50), (1000, 257), (12, 300)]
)
def test_preprocess_equals_the_evaluation_transform_within_one_level(
    config: ModelConfig, size: tuple[int, int]
) -> None:
    image = photo_like(*size, seed=size[0])
    fast, reference = inference.preprocess(image, config), eval_transform(config)(image)
    assert fast.shape == reference.shape == (3, config.image_size, config.image_size)
    assert fast.dtype == torch.float32
    difference = levels(fast, reference, config)
    assert difference.max() <= 1.001  # rounding of an 8-bit resize: never more than one level
    assert difference.mean() < 0.05


def test_a_served_model_preprocesses_with_preprocess(stand_in: str) -> None:
    served = inference.model_fn(stand_in)
    image = pattern("Red_left", (60, 40))
    assert torch.equal(served.transform(image), inference.preprocess(image, STAND_IN_CONFIG))


# --- reduced JPEG decoding in the training data loader --------------------------------------------------------


def test_the_decode_sizes_keep_a_margin_of_two_over_what_the_transforms_take() -> None:
    assert decode_size(RESNET50, augment=False) == DECODE_MARGIN * RESNET50.resize_size == 512
    # The smallest random crop: 8% of the area at aspect ratio 3/4, its short side sqrt(0.06) of the image's.
    assert decode_size(RESNET50, augment=True) == math.ceil(2 * 224 / math.sqrt(0.08 * 0.75)) == 1829
    assert decode_size(SMALL, augment=True) == 262


def test_a_small_jpeg_decodes_exactly_as_without_a_draft_size(tmp_path: Path) -> None:
    path = jpeg_file(tmp_path / "small.jpg", photo_like(400, 300))
    assert np.array_equal(np.asarray(data.load_rgb(path, 512)), np.asarray(data.load_rgb(path)))


def test_a_large_jpeg_for_evaluation_decodes_reduced_within_a_few_levels(tmp_path: Path) -> None:
    path = jpeg_file(tmp_path / "large.jpg", photo_like(1600, 1200))
    reduced = data.load_rgb(path, decode_size(RESNET50, augment=False))
    assert reduced.size == (800, 600)  # 1/2 scale: both sides still at least 512
    transform = eval_transform(RESNET50)
    difference = levels(transform(reduced), transform(data.load_rgb(path)), RESNET50)
    assert difference.mean() < 1
    assert difference.max() < 16


def test_a_large_jpeg_for_training_decodes_reduced_and_every_crop_stays_within_a_few_levels(tmp_path: Path) -> None:
    path = jpeg_file(tmp_path / "large.jpg", photo_like(1600, 1200))
    full, reduced = data.load_rgb(path), data.load_rgb(path, decode_size(SMALL, augment=True))
    assert reduced.size == (400, 300)  # 1/4 scale: the short side still at least 262
    factor = 4
    # The same crops of the photo in both decodes, from the smallest that RandomResizedCrop draws
    # (8% of the area, aspect ratio 3/4) to the whole photo.
    smallest = (math.isqrt(int(0.08 * 0.75 * 1600 * 1200)) // factor) * factor
    crops = [(0, 0, smallest, smallest), (864, 1264, smallest, smallest), (400, 400, 600, 800), (0, 0, 1200, 1600)]
    for top, left, height, width in crops:
        crops_seen = [
            tvf.to_tensor(tvf.resized_crop(image, top // f, left // f, height // f, width // f, [32, 32]))
            for image, f in ((full, 1), (reduced, factor))
        ]
        difference = (crops_seen[0] - crops_seen[1]).abs() * 255
        assert difference.mean() < 1, (top, left, height, width)
        assert difference.max() < 16, (top, left, height, width)


def test_the_data_set_decodes_with_its_draft_size(tmp_path: Path) -> None:
    folder = tmp_path / "train" / "001.Affenpinscher"
    folder.mkdir(parents=True)
    jpeg_file(folder / "a.jpg", photo_like(1600, 1200))
    assert data.DogImageFolder(tmp_path / "train", None, draft_size=512)[0][0].size == (800, 600)
    assert data.load_split("train", tmp_path / "train", None, draft_size=None)[0][0].size == (1600, 1200)
    augmented = data.load_split("train", tmp_path / "train", train_transform(SMALL), draft_size=262)
    assert augmented[0][0].shape == (3, 32, 32)


# --- the backbone and the head ----------------------------------------------------------------------------------


def test_the_head_on_the_backbone_is_the_model() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    backbone, head = backbone_and_head(model)
    assert head is model.fc
    assert not any(parameter is head.weight for parameter in backbone.parameters())
    images = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        features = backbone(images)
        assert features.shape == (4, model.fc.in_features)
        assert torch.equal(head(features), model(images))
