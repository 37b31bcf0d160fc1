"""Serving inference.py the way the SageMaker PyTorch inference container does, in-process.

In the container, SageMaker extracts ``model.tar.gz`` into ``/opt/ml/model``; the toolkit starts TorchServe
with ``PYTHONPATH=/opt/ml/model/code`` and ``default_service_handler`` set to its ``HandlerService``;
each TorchServe worker imports nothing of ours until ``HandlerService.initialize(context)``, which imports
``$SAGEMAKER_PROGRAM`` and calls ``model_fn``; then each request is ``handle([{"body": bytearray}],
context)``, with the same context object carrying the request's headers. ``Endpoint`` does the same with
the real toolkit; only TorchServe itself (a Java server) is replaced by ``ServerContext``
(``dogbreeds.local.torchserve``, which local mode's ``ModelWorker`` uses too).
"""

from __future__ import annotations

import io
import json
import random
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw
from sagemaker_pytorch_serving_container.handler_service import HandlerService
from torch import nn

from dogbreeds.local.packaging import deploy_model, package_model
from dogbreeds.local.torchserve import RequestProcessor, ServerContext
from model import ModelConfig, build_model, eval_transform, save_artifact, save_serving_code

# Re-exported: the tests import them from here.
__all__ = ["RequestProcessor", "ServerContext", "deploy_model", "package_model"]

# The modules of training/ that a fresh worker has not imported yet.
SERVING_MODULES = ("inference", "model", "images")
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"

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


@dataclass(frozen=True)
class Response:
    status: int
    phrase: str  # the HTTP reason phrase
    content_type: str | None
    body: str

    @property
    def message(self) -> str:
        """The first line of an error body: the message without the traceback the toolkit appends."""
        return self.body.split("\n", 1)[0]

    def json(self) -> Any:
        return json.loads(self.body)


class Endpoint:
    """One TorchServe worker running the real ``HandlerService`` on a deployed model directory."""

    def __init__(self, model_dir: Path) -> None:
        self.context = ServerContext(model_dir)
        self.service = HandlerService()
        self.service.initialize(self.context)

    @property
    def served(self) -> Any:
        """What model_fn returned (the toolkit keeps it for every request)."""
        return self.service._service._model

    def invoke(
        self, body: bytes, content_type: str | None, *, accept: str | None = None, custom_attributes: str | None = None
    ) -> Response:
        headers = {"Content-Type": content_type, "Accept": accept, CUSTOM_ATTRIBUTES_HEADER: custom_attributes}
        self.context.request_processor = [RequestProcessor({k: v for k, v in headers.items() if v is not None})]
        self.context.status, self.context.content_type = None, None
        [body_out] = self.service.handle([{"body": bytearray(body)}], self.context)
        status, phrase = self.context.status or (200, "")
        return Response(status, phrase, self.context.content_type, body_out)


def start_endpoint(model_dir: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Endpoint:
    """An ``Endpoint`` that imports the code from ``model_dir/code`` as a fresh worker does, with ``env`` set.

    Everything changed here (environment, ``sys.path``, the imported modules) is undone after the test.
    """
    code_dir = str(model_dir / "code")
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "inference.py")
    monkeypatch.setenv("PYTHONPATH", code_dir)  # as the toolkit sets it before starting TorchServe
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(code_dir)  # what PYTHONPATH does for the worker process
    for name in SERVING_MODULES:  # forget the modules this test process imported from training/
        monkeypatch.setitem(sys.modules, name, None)  # records the original, restored after the test
        del sys.modules[name]
    endpoint = Endpoint(model_dir)
    assert Path(sys.modules["inference"].__file__).parent == model_dir / "code"
    return endpoint


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
