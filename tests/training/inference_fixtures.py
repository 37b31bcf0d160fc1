"""Serving inference.py the way the SageMaker PyTorch inference container does, in-process, and a stand-in model.

The worker is local mode's own (``dogbreeds.local.serving.ModelWorker``): the real toolkit's ``HandlerService``
imports ``$SAGEMAKER_PROGRAM`` from the model's ``code/`` as a fresh TorchServe worker does and answers each
request through a stand-in for TorchServe's context (``dogbreeds.local.torchserve``).
"""

from __future__ import annotations

import base64
import io
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import nn

from dogbreeds.local.packaging import deploy_model, package_model
from dogbreeds.local.serving import Answer, ModelWorker
from dogbreeds.local.torchserve import RequestProcessor, ServerContext
from model import ModelConfig, build_model, eval_transform, save_artifact, save_serving_code

# Re-exported: the tests import them from here.
__all__ = ["Answer", "ModelWorker", "RequestProcessor", "ServerContext", "deploy_model", "package_model"]

# A stand-in model that tells red-on-white patterns apart; its class folders are named like dogImages'.
PATTERNS = ("Red", "White", "Red_left", "Red_right", "Red_top", "Red_bottom")
CLASS_NAMES = tuple(f"{i:03d}.{name}" for i, name in enumerate(PATTERNS, start=1))
RED, WHITE = (220, 30, 30), (255, 255, 255)
STAND_IN_CONFIG = ModelConfig("resnet18", len(PATTERNS), image_size=32, resize_size=36)


def pattern(name: str, size: tuple[int, int] = (48, 40), rng: random.Random | None = None) -> Image.Image:
    """An RGB image of the pattern ``name`` (one of ``PATTERNS``), speckled with noise when ``rng`` is given."""
    width, height = size
    red_box = {
        "Red": (0, 0, width, height),
        "White": None,
        "Red_left": (0, 0, width // 2, height),
        "Red_right": (width // 2, 0, width, height),
        "Red_top": (0, 0, width, height // 2),
        "Red_bottom": (0, height // 2, width, height),
    }[name]
    image = Image.new("RGB", size, WHITE)
    if red_box:
        left, top, right, bottom = red_box
        ImageDraw.Draw(image).rectangle((left, top, right - 1, bottom - 1), fill=RED)
    if rng:
        pixels = image.load()
        for _ in range(width * height // 10):
            x, y = rng.randrange(width), rng.randrange(height)
            pixels[x, y] = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in pixels[x, y])
    return image


def fit_stand_in_model(model_dir: Path) -> Path:
    """Write the artifact of a resnet18 whose random features feed a head fitted to ``PATTERNS``.

    Random convolutional features already separate these patterns; fitting only ``fc`` on them takes
    well under a second, where training the network would take minutes.
    """
    torch.manual_seed(0)
    network = build_model(STAND_IN_CONFIG).eval()
    transform = eval_transform(STAND_IN_CONFIG)
    rng = random.Random(0)
    images, targets = [], []
    for index, name in enumerate(PATTERNS):
        for size in ((48, 40), (40, 48), (64, 64), (33, 50)):
            for quality in (None, 70):
                image = pattern(name, size, rng)
                images.append(transform(reencoded(image, "JPEG", quality=quality) if quality else image))
                targets.append(index)
    head, network.fc = network.fc, nn.Identity()
    with torch.no_grad():
        features = network(torch.stack(images))
    optimizer = torch.optim.Adam(head.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.cross_entropy(head(features), torch.tensor(targets)).backward()
        optimizer.step()
    network.fc = head
    save_artifact(model_dir, network, STAND_IN_CONFIG, list(CLASS_NAMES))
    save_serving_code(model_dir)  # as train.py does
    return model_dir


def start_endpoint(model_dir: Path, **environment: str) -> ModelWorker:
    """A fresh worker on the deployed ``model_dir``, the model's environment ``environment`` (``TOP_K=...``).

    The worker imports the serving code from ``model_dir/code``, not this process's training/, and leaves
    nothing of it importable, nor the environment changed.
    """
    worker = ModelWorker(model_dir, environment=environment)
    assert worker.program == model_dir / "code" / "inference.py"
    return worker


def reencoded(image: Image.Image, image_format: str, **params: Any) -> Image.Image:
    """``image`` after a round trip through ``image_format``."""
    return Image.open(io.BytesIO(encoded(image, image_format, **params)))


def encoded(image: Image.Image, image_format: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG file of a few dozen bytes that declares ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def deploy_stand_in(root: Path) -> Path:
    """/opt/ml/model of an endpoint instance serving the stand-in model, below ``root``: fitted as a training job
    leaves it, packaged as model.tar.gz and extracted as SageMaker does."""
    archive = package_model(fit_stand_in_model(root / "training-job-model"), root / "model.tar.gz")
    return deploy_model(archive, root / "opt" / "ml" / "model")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
