"""Serving the dog-breed classifier: the four functions the SageMaker PyTorch inference container calls.

``model_fn`` loads the artifact train.py wrote (model.py), ``input_fn`` parses a request into images,
``predict_fn`` runs the network, ``output_fn`` answers JSON; bad requests raise the toolkit's
``GenericInferenceToolkitError`` with a 400, 413 or 415. The contract (packaging, request and response
shapes, errors, environment variables, the speed-ups): docs/training.md.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from hyperparameters import AMP_MODES
from images import upright_rgb
from PIL import Image, UnidentifiedImageError
from sagemaker_inference.errors import GenericInferenceToolkitError
from torch import nn
from torchvision.transforms.v2 import functional as tvf

from model import DECODE_MARGIN, MODEL_FILE, ModelConfig, gpu_autocast_dtype, load_artifact, readable_label

log = logging.getLogger(__name__)


def _positive_int_env(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.strip().isdecimal() or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_CONTENT_TYPE = "application/json"
CONTENT_TYPES = (*IMAGE_CONTENT_TYPES, JSON_CONTENT_TYPE)
# Decoders PIL may use on request bytes; the others (EPS runs Ghostscript, for one) are never reached.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes MPO (phone cameras)
JSON_SHAPES = '{"image_base64": "<base64>"} or {"images_base64": ["<base64>", ...]}, with an optional "top_k"'
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
DEFAULT_TOP_K = 5
PROBABILITY_DECIMALS = 6
MAX_IMAGE_BYTES = _positive_int_env("MAX_IMAGE_BYTES", 6 * 1024 * 1024)
MAX_PIXELS = _positive_int_env("MAX_PIXELS", 40_000_000)
MAX_BATCH = _positive_int_env("MAX_BATCH", 16)


@dataclass(frozen=True)
class ServedModel:
    """What ``model_fn`` loads once per worker and the toolkit passes to every ``predict_fn``."""

    network: nn.Module  # in memory_format
    config: ModelConfig
    labels: tuple[str, ...]  # readable, in the order of the output indices
    device: torch.device
    version: str
    default_top_k: int
    transform: Callable[[Image.Image], torch.Tensor]  # preprocess: model.eval_transform's result, faster
    memory_format: torch.memory_format = torch.channels_last
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: full precision (always on a CPU)

    @property
    def description(self) -> dict[str, Any]:
        return {"backbone": self.config.backbone, "num_classes": self.config.num_classes, "version": self.version}


class RequestImage(NamedTuple):
    """An image of a request, opened: format and size known, pixels not decoded yet."""

    name: str  # how messages refer to it: "the request body", "image_base64", "images_base64[2]"
    image: Image.Image


@dataclass(frozen=True)
class Request:
    """What ``input_fn`` makes of a request. Pixels are decoded in ``predict_fn``, which knows the
    model's input size, so that a large JPEG is decoded at a reduced scale (``Image.draft``)."""

    images: tuple[RequestImage, ...]
    batch: bool  # the request held a list of images: answer one list of predictions per image
    top_k: object = None  # as the request spelled it; None: the endpoint's default


def model_fn(model_dir: str, context: Any = None) -> ServedModel:
    """Rebuild the network from the artifact (no network access), on this worker's GPU if there is one."""
    device = _device(context)
    amp_dtype = autocast_dtype(os.environ.get("INFERENCE_AMP", "auto"), device)
    network, config, class_names = load_artifact(Path(model_dir), device)
    # Channels-last: faster on GPUs (tensor cores) and on CPUs too (oneDNN): a resnet50 batch of 16 runs
    # 1.5 times faster on a CPU, a single image as fast (docs/benchmarks.md).
    network.to(memory_format=torch.channels_last)
    served = ServedModel(
        network=network,
        config=config,
        labels=tuple(readable_label(name) for name in class_names),
        device=device,
        version=_sha256(Path(model_dir) / MODEL_FILE)[:12],
        default_top_k=min(_positive_int_env("TOP_K", DEFAULT_TOP_K), config.num_classes),
        transform=functools.partial(preprocess, config=config),
        memory_format=torch.channels_last,
        amp_dtype=amp_dtype,
    )
    # Warm-up: the first forward pass initializes the CUDA kernels and allocator, not the first request.
    _probabilities(served, torch.zeros(1, 3, config.image_size, config.image_size))
    log.info(
        "serving %s, %d classes, version %s, on %s in %s",
        config.backbone,
        config.num_classes,
        served.version,
        device,
        str(amp_dtype or torch.float32).removeprefix("torch."),
    )
    return served


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``INFERENCE_AMP`` on ``device``; None: full precision (fp32).

    A CPU always computes in fp32. On a GPU, ``auto`` is bf16 where the GPU has native bf16 (compute
    capability 8.0 or newer: A10G, L4, A100, H100), else fp16 (T4, V100), which ResNets tolerate in inference.
    """
    mode = mode.strip().lower()
    if mode not in AMP_MODES:
        raise ValueError(f"INFERENCE_AMP must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if device.type != "cuda":
        return None
    try:
        return gpu_autocast_dtype(mode, device)
    except ValueError as err:
        raise ValueError(f"INFERENCE_AMP {err}; use fp16 or auto") from None


def input_fn(request_body: bytes | bytearray | str | None, content_type: str | None, context: Any = None) -> Request:
    """Parse the request and open its images; ``context`` (the model server's) gives the request headers."""
    if not request_body:
        raise _bad_request("the request body is empty")
    media_type = _media_type(content_type)
    if media_type in IMAGE_CONTENT_TYPES:
        name = "the request body"
        images, batch, top_k = (RequestImage(name, open_image(name, request_body)),), False, None
    elif media_type == JSON_CONTENT_TYPE:
        images, batch, top_k = _parse_json(request_body)
    else:
        raise GenericInferenceToolkitError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"content type {content_type or '(none)'} is not supported; send one of {', '.join(CONTENT_TYPES)}",
        )
    if top_k is None:
        top_k = _custom_attributes(context).get("top_k")
    return Request(images, batch, top_k)


def predict_fn(data: Request, model: ServedModel) -> dict[str, Any]:
    """Decode and preprocess the images as training evaluation does, run the network, keep the top k."""
    top_k = model.default_top_k if data.top_k is None else _top_k(data.top_k, model.config.num_classes)
    inputs = torch.stack([model.transform(decode(item, model.config.resize_size)) for item in data.images])
    top = _probabilities(model, inputs).topk(top_k, dim=1)
    predictions = [
        [
            {"label": model.labels[index], "index": index, "probability": round(probability, PROBABILITY_DECIMALS)}
            for probability, index in zip(probabilities, indices, strict=True)
        ]
        for probabilities, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    return {"predictions": predictions if data.batch else predictions[0], "model": model.description}


def output_fn(prediction: dict[str, Any], accept: str | None) -> tuple[str, str]:
    """The answer as JSON, with its content type (the toolkit takes a ``(body, content type)`` tuple)."""
    if accept and not {_media_type(part) for part in accept.split(",")} & {JSON_CONTENT_TYPE, "application/*", "*/*"}:
        raise GenericInferenceToolkitError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"accept type {accept} is not supported; this endpoint answers {JSON_CONTENT_TYPE}",
        )
    return json.dumps(prediction), JSON_CONTENT_TYPE


def open_image(name: str, data: bytes | bytearray) -> Image.Image:
    """Open ``data`` (reading only the header) and check its size before any pixel is decoded."""
    if not data:
        raise _bad_request(f"{name} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise GenericInferenceToolkitError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{name} has {len(data):,} bytes; at most {MAX_IMAGE_BYTES:,} are accepted",
        )
    with _reading(name):
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    if image.width * image.height > MAX_PIXELS:
        raise _too_many_pixels(name, f"{image.width}x{image.height}")
    return image


def decode(item: RequestImage, resize_size: int) -> Image.Image:
    """The pixels of an opened image, upright, in RGB (``images.upright_rgb``).

    A JPEG at least four times ``resize_size`` on both sides is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, ``Image.draft``), to no less than twice ``resize_size`` (``model.DECODE_MARGIN``,
    as the training data loader does for evaluation): the antialiased resize that follows still reduces
    by 2 or more, and the result stays within a few levels of 255 of a full decode (a mean difference
    below 0.5) for a fraction of the time (see ``docs/benchmarks.md``).
    """
    draft_size = DECODE_MARGIN * resize_size
    with _reading(item.name):
        item.image.draft(item.image.mode, (draft_size, draft_size))
        item.image.load()
        return upright_rgb(item.image)


def preprocess(image: Image.Image, config: ModelConfig) -> torch.Tensor:
    """``model.eval_transform(config)(image)`` within one level of 255, about 2.5 times faster.

    The same steps (antialiased bilinear resize of the short side to ``resize_size``, center crop to
    ``image_size``, normalization) on the decoded 8-bit pixels as a tensor in channels-last layout, where
    torch's resize has a vectorized 8-bit path, instead of PIL's resize and a float copy of the whole image.
    """
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # HWC memory
    pixels = tvf.center_crop(tvf.resize(pixels, [config.resize_size], antialias=True), [config.image_size])
    mean = torch.tensor(config.mean).view(3, 1, 1) * 255
    std = torch.tensor(config.std).view(3, 1, 1) * 255
    return pixels.float().sub_(mean).div_(std)


def _parse_json(body: bytes | bytearray | str) -> tuple[tuple[RequestImage, ...], bool, object]:
    """The images, whether they are a batch, and the requested top k of a JSON request."""
    try:
        payload = json.loads(body)
    except ValueError as err:
        raise _bad_request(f"the request body is not valid JSON ({err}); send {JSON_SHAPES}") from err
    if not isinstance(payload, dict):
        raise _bad_request(f"the JSON body must be an object: send {JSON_SHAPES}")
    if "url" in payload:
        raise _bad_request(
            "the endpoint does not fetch URLs: send the image bytes, or call the Lambda function, which fetches URLs"
        )
    batch = "images_base64" in payload
    if batch == ("image_base64" in payload):
        raise _bad_request(f"send exactly one of image_base64 and images_base64: {JSON_SHAPES}")
    if batch:
        encoded = payload["images_base64"]
        if not isinstance(encoded, list) or not encoded:
            raise _bad_request(f"images_base64 must be a non-empty list of base64 strings: send {JSON_SHAPES}")
        if len(encoded) > MAX_BATCH:
            raise GenericInferenceToolkitError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a request holds at most {MAX_BATCH} images, got {len(encoded)}"
            )
        entries = [(f"images_base64[{i}]", value) for i, value in enumerate(encoded)]
    else:
        entries = [("image_base64", payload["image_base64"])]
    images = tuple(RequestImage(name, open_image(name, _base64_bytes(name, value))) for name, value in entries)
    return images, batch, payload.get("top_k")


def _base64_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise _bad_request(f"{name} must be a base64 string")
    try:  # line breaks and spaces are allowed, as `base64` and most encoders wrap lines
        return base64.b64decode("".join(value.split()), validate=True)
    except ValueError as err:
        raise _bad_request(f"{name} is not valid base64 ({err})") from err


def _custom_attributes(context: Any) -> dict[str, str]:
    """The ``key=value`` pairs of the request's custom attributes header (header names are case-insensitive)."""
    if context is None:
        return {}
    headers = context.request_processor[0].get_request_properties()
    value = next((v for k, v in headers.items() if k.lower() == CUSTOM_ATTRIBUTES_HEADER.lower()), "")
    pairs = (item.split("=", 1) for item in re.split(r"[,;]", value) if "=" in item)
    return {key.strip().lower(): val.strip() for key, val in pairs}


def _top_k(requested: object, num_classes: int) -> int:
    """The requested number of predictions per image, from JSON (a number) or a header (a string)."""
    value = int(requested) if isinstance(requested, str) and requested.strip().isdecimal() else requested
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_classes:
        raise _bad_request(f"top_k must be an integer from 1 to {num_classes}, got {requested!r}")
    return value


def _probabilities(model: ServedModel, inputs: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities, computed in fp32 from the logits whatever the autocast dtype."""
    inputs = inputs.to(model.device, memory_format=model.memory_format)
    autocast = torch.autocast(model.device.type, dtype=model.amp_dtype, enabled=model.amp_dtype is not None)
    with torch.inference_mode(), autocast:
        logits = model.network(inputs)
    return torch.softmax(logits.float(), dim=1).cpu()


def _device(context: Any) -> torch.device:
    """The GPU the model server gave this worker (``gpu_id``, one worker per GPU in turn), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    gpu_id = context.system_properties.get("gpu_id") if context is not None else None
    return torch.device("cuda", int(gpu_id or 0))


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _media_type(value: str | None) -> str:
    """``"Image/JPEG; charset=binary"`` -> ``"image/jpeg"``."""
    return (value or "").split(";", 1)[0].strip().lower()


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
    """Turn what PIL raises on a bad or hostile image into a 400 or a 413 that names the image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError as err:
        raise _bad_request(f"{name} is not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _too_many_pixels(name, f"more than {Image.MAX_IMAGE_PIXELS:,}") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise _bad_request(f"{name} could not be decoded: {err}") from err


def _too_many_pixels(name: str, size: str) -> GenericInferenceToolkitError:
    return GenericInferenceToolkitError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"{name} has too many pixels ({size}); at most {MAX_PIXELS:,} (width x height) are accepted",
    )


def _bad_request(message: str) -> GenericInferenceToolkitError:
    return GenericInferenceToolkitError(HTTPStatus.BAD_REQUEST, message)
