"""Serving the dog-breed classifier: the functions the SageMaker PyTorch inference container calls.

``model_fn`` loads the artifact train.py wrote (model.py) once per worker; ``transform_fn`` answers every
request: ``parse_request`` reads it into images (opened, checked and costed; no pixel decoded yet),
``predict`` decodes them and runs the network, ``serialize`` answers JSON. Whatever is wrong with a request
is a ``Refused`` (400, 413 or 415, one line saying what is accepted), answered by ``transform_fn`` itself:
the toolkit would append a traceback to the body of any exception it catches. The contract (packaging,
request and response shapes, errors, limits, environment variables, the speed-ups): docs/training.md.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from hyperparameters import INFERENCE_PRECISIONS
from images import MalformedMetadata, conversion_bytes, upright_rgb
from PIL import Image, JpegImagePlugin, UnidentifiedImageError
from sagemaker_inference import content_types
from sagemaker_inference.errors import GenericInferenceToolkitError
from torch import nn
from torchvision.transforms.v2 import functional as tvf

from model import (
    DECODE_MARGIN,
    INT8_MAX_TOP1_LOSS_POINTS,
    INT8_MODEL_FILE,
    INT8_REPORT_FILE,
    MODEL_FILE,
    ModelConfig,
    gpu_autocast_dtype,
    load_artifact,
    readable_label,
)

log = logging.getLogger(__name__)

QUOTE_LIMIT = 100  # characters of a value that a message repeats


# lambda_src/fetch.py (the Lambda's, shipped apart from the model) has the same shown(); a test keeps them equal.
def shown(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as a message may quote it: in ASCII (escapes for the rest, lone surrogates included), at
    most ``limit`` characters; a list or an object only by its kind. The one way messages quote a value."""
    if isinstance(value, bool | float) or value is None:
        text = ascii(value)
    elif isinstance(value, int):  # str() of an int of more than 4300 digits raises ValueError
        digits = int(value.bit_length() * math.log10(2)) + 1
        text = str(value) if digits <= limit else f"a whole number of about {digits:,} digits"
    elif isinstance(value, str | bytes | bytearray):
        text = ascii(value[: limit + 1])
    elif isinstance(value, list | tuple):
        text = "a list"
    elif isinstance(value, dict):
        text = "an object"
    else:
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _positive_int_env(name: str, default: int) -> int:
    value = os.environ.get(name, str(default)).strip()
    if not re.fullmatch(r"[0-9]{1,15}", value) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {shown(value)}")
    return int(value)


IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_CONTENT_TYPE = "application/json"
CONTENT_TYPES = (*IMAGE_CONTENT_TYPES, JSON_CONTENT_TYPE)
ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"
# Decoders PIL may use on request bytes; the others (EPS runs Ghostscript, for one) are never reached.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes MPO (phone cameras)
JSON_SHAPES = '{"image_base64": "<base64>"} or {"images_base64": ["<base64>", ...]}, with an optional "top_k"'
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
DEFAULT_TOP_K = 5
PROBABILITY_DECIMALS = 6
MiB = 1024 * 1024
MAX_IMAGE_BYTES = _positive_int_env("MAX_IMAGE_BYTES", 6 * MiB)
MAX_PIXELS = _positive_int_env("MAX_PIXELS", 40_000_000)
MAX_BATCH = _positive_int_env("MAX_BATCH", 16)
# Per request, all its images together: the bytes of the pixel buffers decoding writes (``decoding_bytes``).
MAX_DECODE_BYTES = _positive_int_env("MAX_DECODE_BYTES", 384 * MiB)
# Per JPEG: libjpeg makes a pass over the whole image for every scan, empty ones included.
MAX_JPEG_SCANS = _positive_int_env("MAX_JPEG_SCANS", 100)
TENSOR_BYTES = 6  # per decoded pixel: preprocess's uint8 copy of the RGB pixels, and PIL's export of them
_COEFFICIENT_BYTES = 128  # per 8x8 block: libjpeg keeps 64 16-bit coefficients of every block of a multi-scan JPEG
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # in entropy-coded data: not stuffing, restart or fill


def _receive_every_body_as_bytes() -> None:
    """The toolkit's ``Transformer.transform`` decodes the bodies of the types it lists as UTF-8 (exactly
    ``application/json`` and ``text/csv``) before any function of this module runs, and answers one that is
    not UTF-8 with a 500 and a traceback. With the list empty it hands every body over as bytes, and
    ``parse_request`` answers a body that is not UTF-8 JSON with a 400."""
    content_types.UTF8_TYPES = []


_receive_every_body_as_bytes()


class Refused(GenericInferenceToolkitError):
    """A request this endpoint does not serve: its status (400, 413 or 415) and a one-line message that
    says what is accepted. A toolkit error, so that the toolkit would still answer its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)


@dataclass(frozen=True)
class ServedModel:
    """What ``model_fn`` loads once per worker and the toolkit passes to every ``transform_fn``."""

    network: nn.Module  # in memory_format
    config: ModelConfig
    labels: tuple[str, ...]  # readable, in the order of the output indices
    device: torch.device
    version: str
    default_top_k: int
    transform: Callable[[Image.Image], torch.Tensor]  # preprocess: model.eval_transform's result, faster
    memory_format: torch.memory_format = torch.channels_last
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: full precision, or the int8 network
    precision: str = "fp32"  # what is served: fp32, bf16, fp16 (autocast) or int8 (the quantized network)

    @property
    def description(self) -> dict[str, Any]:
        return {"backbone": self.config.backbone, "num_classes": self.config.num_classes, "version": self.version}


class RequestImage(NamedTuple):
    """An image of a request, opened: format, size and decoding cost known, pixels not decoded yet."""

    name: str  # how messages refer to it: "the request body", "image_base64", "images_base64[2]"
    image: Image.Image  # a JPEG already set to decode at a reduced scale (``Image.draft``) where it may
    cost: int = 0  # bytes that decoding it writes (``decoding_bytes``)


@dataclass(frozen=True)
class Request:
    """What ``parse_request`` makes of a request: everything checked, nothing decoded."""

    images: tuple[RequestImage, ...]
    batch: bool  # the request held a list of images: answer one list of predictions per image
    top_k: int


def model_fn(model_dir: str, context: Any = None) -> ServedModel:
    """Rebuild the network from the artifact (no network access), on this worker's GPU if there is one, in the
    precision ``INFERENCE_PRECISION`` asks for (``serving_precision``)."""
    device = _device(context)
    precision = serving_precision(os.environ.get("INFERENCE_PRECISION", "auto"), device)
    amp_dtype = autocast_dtype(precision, device)
    network, config, class_names = load_artifact(Path(model_dir), device)
    # Channels-last: faster on GPUs (tensor cores) and on CPUs too (oneDNN): a resnet50 batch of 16 runs
    # 1.5 times faster on a CPU, a single image as fast (docs/benchmarks.md).
    network.to(memory_format=torch.channels_last)
    if precision == "int8":
        int8_network, reason = load_int8(Path(model_dir))
        if int8_network is None:
            log.warning("INFERENCE_PRECISION=int8: serving fp32 instead, because %s", reason)
            precision = "fp32"
        else:
            network = int8_network
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
        precision=precision,
    )
    # Warm-up: the first forward passes initialize the CUDA kernels and allocator, and let TorchScript optimize
    # the int8 graph, not the first requests.
    for _ in range(WARMUP_PASSES):
        _probabilities(served, torch.zeros(1, 3, config.image_size, config.image_size))
    log.info(
        "serving %s, %d classes, version %s, on %s in %s",
        config.backbone,
        config.num_classes,
        served.version,
        device,
        precision,
    )
    return served


WARMUP_PASSES = 2
# /proc/cpuinfo flags of native BF16 arithmetic: AVX512-BF16 (Cooper Lake, Zen 4 and later), AMX (Sapphire Rapids).
CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# What autocast computes in for each precision on a GPU: model.gpu_autocast_dtype's modes.
_GPU_AMP_MODES = {"fp32": "off", "fp16": "fp16", "bf16": "bf16"}


def serving_precision(requested: str, device: torch.device) -> str:
    """The precision to serve for ``INFERENCE_PRECISION`` (one of ``hyperparameters.INFERENCE_PRECISIONS``) on
    ``device``: fp32, bf16, fp16 or int8.

    ``auto`` is fp16 on a GPU; on a CPU, bf16 where it computes BF16 natively (``native_cpu_bf16``), else fp32.
    fp16 needs a GPU, and int8 a CPU (PyTorch's x86 int8 backend): ValueError, naming what is accepted.
    """
    value = requested.strip().lower()
    if value not in INFERENCE_PRECISIONS:
        accepted = ", ".join(INFERENCE_PRECISIONS)
        raise ValueError(f"INFERENCE_PRECISION must be one of {accepted}, got {shown(requested)}")
    if device.type == "cuda":
        if value == "int8":
            raise ValueError(
                "INFERENCE_PRECISION int8 runs on CPUs only (PyTorch's x86 int8 backend), and this worker has a GPU; "
                "on a GPU use auto, fp16, bf16 or fp32"
            )
        return "fp16" if value == "auto" else value
    if value == "fp16":
        raise ValueError(
            "INFERENCE_PRECISION fp16 needs a GPU, and this worker has none; on a CPU use auto, bf16, int8 or fp32"
        )
    if value == "auto":
        return "bf16" if native_cpu_bf16() else "fp32"
    return value


def native_cpu_bf16(cpuinfo: Path | None = None) -> bool:
    """Whether this CPU computes BF16 natively: AVX512-BF16 or AMX among the flags of ``cpuinfo``
    (``CPUINFO``, /proc/cpuinfo). False where it cannot be read (not Linux)."""
    try:
        text = (cpuinfo or CPUINFO).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return not set(BF16_CPU_FLAGS).isdisjoint(value.split())
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (``serving_precision``'s) on ``device``; None: none (fp32, or int8).

    On a GPU the choice is model.gpu_autocast_dtype's: bf16 needs compute capability 8.0 or newer (A10G, L4,
    A100, H100), fp16 runs on all (T4, V100 too), and ResNets tolerate it in inference.
    """
    if precision in ("fp32", "int8"):
        return None
    if device.type != "cuda":
        return torch.bfloat16 if precision == "bf16" else torch.float16
    try:
        return gpu_autocast_dtype(_GPU_AMP_MODES[precision], device)
    except ValueError as err:
        raise ValueError(f"INFERENCE_PRECISION {err}; use fp16 or auto") from None


def load_int8(model_dir: Path) -> tuple[nn.Module | None, str]:
    """The int8 network train.py wrote (``--quantize int8``), or None and why it is not served: it is not there,
    this torch has no x86 int8 backend, it loses more than ``INT8_MAX_TOP1_LOSS_POINTS`` of test top-1 accuracy
    against fp32 (its report, ``INT8_REPORT_FILE``), or the report or the network cannot be read."""
    if not (model_dir / INT8_MODEL_FILE).is_file() or not (model_dir / INT8_REPORT_FILE).is_file():
        return None, f"the model has no {INT8_MODEL_FILE} and {INT8_REPORT_FILE} (train it with quantize=int8)"
    engines = torch.backends.quantized.supported_engines
    if "x86" not in engines:
        return None, f"this CPU's torch has no x86 int8 backend (it has {', '.join(engines) or 'none'})"
    try:
        report = json.loads((model_dir / INT8_REPORT_FILE).read_text())
        loss = float(report["top1_loss_points"])
        accuracies = f"{report['int8_test_accuracy']:.2%} against {report['fp32_test_accuracy']:.2%}"
        images = int(report["test_images"])
    except (ValueError, TypeError, KeyError) as err:
        return None, f"its {INT8_REPORT_FILE} cannot be read ({type(err).__name__}: {_reason(err)})"
    if not loss <= INT8_MAX_TOP1_LOSS_POINTS:  # NaN too
        return None, (
            f"int8 loses {loss:.2f} points of top-1 accuracy against fp32 on the {images} test images ({accuracies}), "
            f"more than the {INT8_MAX_TOP1_LOSS_POINTS:g} allowed"
        )
    torch.backends.quantized.engine = "x86"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation, on every call
            network = torch.jit.load(str(model_dir / INT8_MODEL_FILE), map_location="cpu")
    except RuntimeError as err:  # a file of a newer torch, or a damaged one
        return None, f"its {INT8_MODEL_FILE} cannot be loaded by torch {torch.__version__} ({_reason(err)})"
    return network.eval(), ""


# --- the request: one boundary ------------------------------------------------------------------------------


def transform_fn(
    model: ServedModel,
    request_body: bytes | bytearray | str | None,
    content_type: str | None,
    accept: str | None,
    context: Any = None,
) -> tuple[str, str]:
    """The answer to one request, with its content type; the toolkit calls it instead of its own
    input -> predict -> output steps. A refusal is answered here, with its status and a body of its
    one-line message; anything else that fails is a 500 whose details only the log gets."""
    try:
        response_type = _response_type(accept)
        request = parse_request(request_body, content_type, model, _custom_attributes(context))
        return serialize(predict(request, model), response_type)
    except Refused as refusal:
        log.info("refused with %d: %s", refusal.status_code, refusal.message)
        return _error_answer(context, refusal.status_code, refusal.message)
    except Exception as err:
        log.exception("failed on a request")
        message = f"the model server failed on this request ({type(err).__name__}); its log has the details"
        return _error_answer(context, HTTPStatus.INTERNAL_SERVER_ERROR, message)


def parse_request(
    request_body: bytes | bytearray | str | None,
    content_type: str | None,
    model: ServedModel,
    custom_attributes: Mapping[str, str] | None = None,
) -> Request:
    """The request, checked: its images opened (header only) and within every limit, its top k; or
    ``Refused``. ``custom_attributes`` are those of the request's header, where its top_k may be."""
    if not request_body:
        raise _bad_request("the request body is empty")
    body = request_body.encode("utf-8", "surrogatepass") if isinstance(request_body, str) else bytes(request_body)
    media_type = _media_type(content_type)
    if media_type in IMAGE_CONTENT_TYPES:
        entries, batch, top_k = [("the request body", body)], False, None
    elif media_type == JSON_CONTENT_TYPE:
        entries, batch, top_k = _parse_json(body)
    else:
        raise Refused(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"content type {shown(content_type) if content_type else '(none)'} is not supported; "
            f"send one of {', '.join(CONTENT_TYPES)}",
        )
    if top_k is None:
        top_k = (custom_attributes or {}).get("top_k")
    top_k = model.default_top_k if top_k is None else _top_k(top_k, model.config.num_classes)
    draft_size = DECODE_MARGIN * model.config.resize_size
    images = tuple(open_image(name, data, draft_size) for name, data in entries)
    cost = sum(item.cost for item in images)
    if cost > MAX_DECODE_BYTES:
        what = "the request body" if not batch else f"the {len(images)} images"
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"decoding {what} would take {_mib(cost)} of memory; at most {_mib(MAX_DECODE_BYTES)} are decoded per "
            "request: send fewer or smaller images",
        )
    return Request(images, batch, top_k)


def predict(data: Request, model: ServedModel) -> dict[str, Any]:
    """Decode and preprocess the images as training evaluation does, run the network, keep the top k."""
    inputs = torch.stack([model.transform(decode(item, model.config.resize_size)) for item in data.images])
    top = _probabilities(model, inputs).topk(data.top_k, dim=1)
    predictions = [
        [
            {"label": model.labels[index], "index": index, "probability": round(probability, PROBABILITY_DECIMALS)}
            for probability, index in zip(probabilities, indices, strict=True)
        ]
        for probabilities, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
    return {"predictions": predictions if data.batch else predictions[0], "model": model.description}


def serialize(prediction: dict[str, Any], response_type: str = JSON_CONTENT_TYPE) -> tuple[str, str]:
    """The answer as JSON, with its content type (the toolkit takes a ``(body, content type)`` tuple)."""
    return json.dumps(prediction), response_type


def open_image(name: str, data: bytes, draft_size: int) -> RequestImage:
    """Open ``data`` (reading only its header), check it against the limits and set a large JPEG to decode
    at a reduced scale, no smaller than ``draft_size``: no pixel is decoded yet."""
    if not data:
        raise _bad_request(f"{name} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{name} has {len(data):,} bytes; at most {MAX_IMAGE_BYTES:,} are accepted",
        )
    scans = jpeg_scans(data) if data.startswith(b"\xff\xd8") else 0
    if scans > MAX_JPEG_SCANS:
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"{name} is a JPEG of {scans:,} scans; at most {MAX_JPEG_SCANS:,} are decoded (cameras write about 10)",
        )
    with _reading(name):
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        if image.width * image.height > MAX_PIXELS:
            raise _too_many_pixels(name, f"{image.width}x{image.height}")
        full_size = image.size
        image.draft(image.mode, (draft_size, draft_size))
    return RequestImage(name, image, decoding_bytes(image, full_size, scans))


def decoding_bytes(image: Image.Image, full_size: tuple[int, int], scans: int = 0) -> int:
    """The bytes of the pixel buffers that decoding ``image`` (opened, its reduced scale set) into the
    network's input writes, each counted as if none were freed: an upper bound of the memory it takes,
    and a measure of its work. ``full_size`` is its size before ``Image.draft``; ``scans`` its JPEG scans.

    The decoded pixels and each conversion of ``images.upright_rgb`` (``images.conversion_bytes``), the
    tensor copies (``TENSOR_BYTES``), and for a JPEG of several scans (progressive, or one scan per
    component) libjpeg's coefficients of the whole image at full size, whatever the reduced scale.
    """
    total = image.width * image.height * (conversion_bytes(image.mode, image.info) + TENSOR_BYTES)
    if isinstance(image, JpegImagePlugin.JpegImageFile) and scans > 1:
        total += _jpeg_coefficient_bytes(image, *full_size)
    return total


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS segments) the first image of a JPEG has, from its marker structure as libjpeg
    reads it: segments are skipped by their length, entropy-coded data up to the next marker."""
    scans, position = 0, 2
    while (found := _JPEG_MARKER.search(data, position)) is not None:
        position = found.start()
        marker = data[position + 1]
        if marker == 0xD9:  # EOI: the end of the first image
            break
        if marker in (0x01, 0xD8):  # TEM, and a stray SOI: no length
            position += 2
            continue
        if marker == 0xDA:
            scans += 1
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return scans


def decode(item: RequestImage, resize_size: int) -> Image.Image:
    """The pixels of an opened image, upright, in RGB (``images.upright_rgb``).

    A JPEG at least four times ``resize_size`` on both sides is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's DCT scaling, ``Image.draft``, set by ``open_image`` or here), to no less than twice
    ``resize_size`` (``model.DECODE_MARGIN``, as the training data loader does for evaluation): the
    antialiased resize that follows still reduces by 2 or more, and the result stays within a few levels
    of 255 of a full decode (a mean difference below 0.5) for a fraction of the time (``docs/benchmarks.md``).
    """
    draft_size = DECODE_MARGIN * resize_size
    with _reading(item.name):
        item.image.draft(item.image.mode, (draft_size, draft_size))  # a no-op when open_image set it
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


def _parse_json(body: bytes) -> tuple[list[tuple[str, bytes]], bool, object]:
    """The named image bytes, whether they are a batch, and the requested top k of a JSON request."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _bad_request(f"the request body is not UTF-8 text (byte {err.start:,}); send {JSON_SHAPES}") from err
    except RecursionError as err:
        raise _bad_request(f"the request body is JSON nested too deeply; send {JSON_SHAPES}") from err
    except ValueError as err:  # json.JSONDecodeError, and a number of more than 4300 digits
        raise _bad_request(f"the request body is not valid JSON ({_reason(err)}); send {JSON_SHAPES}") from err
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
            raise Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a request holds at most {MAX_BATCH} images, got {len(encoded):,}"
            )
        entries = [(f"images_base64[{i}]", value) for i, value in enumerate(encoded)]
    else:
        entries = [("image_base64", payload["image_base64"])]
    return [(name, _base64_bytes(name, value)) for name, value in entries], batch, payload.get("top_k")


def _base64_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise _bad_request(f"{name} must be a base64 string")
    compact = "".join(value.split())  # line breaks and spaces are allowed, as `base64` and most encoders wrap lines
    size = len(compact) // 4 * 3 - compact[-2:].count("=")  # exact for valid base64
    if size > MAX_IMAGE_BYTES:  # refused before decoding
        raise Refused(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{name} has {size:,} bytes; at most {MAX_IMAGE_BYTES:,} are accepted"
        )
    try:
        return base64.b64decode(compact, validate=True)
    except ValueError as err:  # binascii.Error, and characters outside ASCII
        raise _bad_request(f"{name} is not valid base64 ({_reason(err)})") from err


def _custom_attributes(context: Any) -> dict[str, str]:
    """The ``key=value`` pairs of the request's custom attributes header (header names are case-insensitive)."""
    if context is None:
        return {}
    headers = context.request_processor[0].get_request_properties()
    value = next((v for k, v in headers.items() if str(k).lower() == CUSTOM_ATTRIBUTES_HEADER.lower()), "")
    pairs = (item.split("=", 1) for item in re.split(r"[,;]", str(value)) if "=" in item)
    return {key.strip().lower(): val.strip() for key, val in pairs}


def _top_k(requested: object, num_classes: int) -> int:
    """The requested number of predictions per image, from JSON (a number) or a header (a string)."""
    value = requested
    if isinstance(requested, str) and re.fullmatch(r"[0-9]{1,9}", requested.strip()):
        value = int(requested)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_classes:
        raise _bad_request(f"top_k must be an integer from 1 to {num_classes}, got {shown(requested)}")
    return value


def _response_type(accept: str | None) -> str:
    """The content type of the answer: JSON, if ``accept`` allows it."""
    if accept and not {_media_type(part) for part in accept.split(",")} & {JSON_CONTENT_TYPE, "application/*", "*/*"}:
        raise Refused(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"accept type {shown(accept)} is not supported; this endpoint answers {JSON_CONTENT_TYPE}",
        )
    return JSON_CONTENT_TYPE


def _error_answer(context: Any, status: int, message: str) -> tuple[str, str]:
    """What the toolkit does with its own errors, less the traceback: the status, the message as the
    reason phrase (one line) and as the body."""
    if context is not None:
        context.set_response_status(code=int(status), phrase=message.replace("\r", " ").replace("\n", " "))
    return message, ERROR_CONTENT_TYPE


def _jpeg_coefficient_bytes(image: JpegImagePlugin.JpegImageFile, width: int, height: int) -> int:
    """libjpeg's coefficient buffer of a multi-scan JPEG: one 8x8 block of 16-bit values per 8x8 pixels of
    each component, at its sampling (``image.layer``: id, horizontal and vertical sampling, table)."""
    layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * len(image.getbands())
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    return sum(
        math.ceil(width * layer[1] / h_max / 8) * math.ceil(height * layer[2] / v_max / 8) * _COEFFICIENT_BYTES
        for layer in layers
    )


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


def _reason(err: BaseException) -> str:
    """What an exception says, as a message may repeat it: its first line, at most ``QUOTE_LIMIT`` characters."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


def _mib(count: int) -> str:
    return f"{count / MiB:,.1f} MiB"


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
    """Turn whatever PIL raises on a bad or hostile image into a 400 or a 413 that names the image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except Refused:
        raise
    except UnidentifiedImageError as err:
        raise _bad_request(f"{name} is not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _too_many_pixels(name, f"more than {Image.MAX_IMAGE_PIXELS:,}") from err
    except MalformedMetadata as err:
        raise _bad_request(f"{name} could not be decoded: {err}; send it without EXIF data") from err
    except MemoryError as err:
        raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{name} takes more memory to decode than there is") from err
    except Exception as err:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, IndexError, ...
        raise _bad_request(f"{name} could not be decoded: {_reason(err)}") from err


def _too_many_pixels(name: str, size: str) -> Refused:
    return Refused(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"{name} has too many pixels ({size}); at most {MAX_PIXELS:,} (width x height) are accepted",
    )


def _bad_request(message: str) -> Refused:
    return Refused(HTTPStatus.BAD_REQUEST, message)
