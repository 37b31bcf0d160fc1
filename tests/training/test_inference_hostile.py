"""Hostile requests to the endpoint, through the real toolkit: every one is answered 200 or 4xx, with a body that
is its one-line message (no traceback) repeating at most 200 characters of the request, and no request costs more
than the decoding budget. A regression test for each class that once became a 500, an echo or a resource bomb,
then property-based tests (hypothesis) of the image reader and of the JSON parser."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import inference
from tests.training.inference_fixtures import (
    Answer,
    ModelWorker,
    b64,
    encoded,
    pattern,
    start_endpoint,
)

JSON = "application/json"
SHAPES = inference.JSON_SHAPES
MOST_REPEATED = 200
STATUSES = (200, 400, 413, 415)
MiB = 1024 * 1024


def assert_refused(response: Answer, status: int, message: str) -> None:
    """The answer to a refused request: its status, and its message as the reason phrase and the whole body."""
    assert (response.status, response.text) == (status, message)
    assert response.phrase == message
    assert response.content_type == inference.ERROR_CONTENT_TYPE


def assert_short(response: Answer, sent: bytes | str) -> None:
    """A status the endpoint may answer; an error body of one short line, repeating at most 200 characters of it."""
    assert response.status in STATUSES, response.text[:500]
    if response.status == 200:
        return
    text = response.text
    assert len(text) <= 400 and "\n" not in text and "Traceback" not in text, text[:500]
    sent_text = sent if isinstance(sent, str) else sent.decode("latin-1")
    for start in range(max(0, len(text) - MOST_REPEATED)):
        assert text[start : start + MOST_REPEATED + 1] not in sent_text


def png(array: np.ndarray) -> bytes:
    return encoded(Image.fromarray(array), "PNG")


def with_empty_scans(jpeg: bytes, count: int) -> bytes:
    """``jpeg`` (progressive) with ``count`` more scans that carry no data: its first scan header, repeated."""
    start = jpeg.index(b"\xff\xda")
    header = jpeg[start : start + 2 + struct.unpack(">H", jpeg[start + 2 : start + 4])[0]]
    return jpeg[:start] + header * count + jpeg[start:]


def malformed_exif() -> bytes:
    """TIFF-structured EXIF that PIL opens but cannot write back: exif_transpose raises struct.error on it."""
    entries = [(0x0100, 5, 3, 26), (0x0112, 3, 1, 6), (0x9286, 2, 0, 0)]  # a RATIONAL width, orientation 6
    body = b"II*\x00" + struct.pack("<IH", 8, len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"Exif\x00\x00" + body + struct.pack("<I", 0) + bytes.fromhex("9483dbdf6cf1b0f557")


# --- regressions: one test per class -----------------------------------------------------------------------


def test_deeply_nested_json_is_a_400(endpoint: ModelWorker) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    assert_refused(endpoint.answer(body, JSON), 400, f"the request body is JSON nested too deeply; send {SHAPES}")


@pytest.mark.parametrize(
    ("body", "custom_attributes", "message"),
    [
        (
            encoded(pattern("Red"), "JPEG"),
            "top_k=" + "9" * 5000,
            f"top_k must be an integer from 1 to 6, got '{'9' * 96}...",
        ),
        (
            b'{"image_base64": "", "top_k": ' + b"7" * 5000 + b"}",
            None,
            "the request body is not valid JSON (Exceeds the limit (4300 digits) for integer string conversion: "
            f"value has 5000 digits; use sys.set...); send {SHAPES}",
        ),
    ],
    ids=["header", "JSON"],
)
def test_a_top_k_of_thousands_of_digits_is_a_400(
    endpoint: ModelWorker, body: bytes, custom_attributes: str | None, message: str
) -> None:
    content_type = JSON if body.startswith(b"{") else "image/jpeg"
    assert_refused(endpoint.answer(body, content_type, custom_attributes=custom_attributes), 400, message)


@pytest.mark.parametrize(
    ("content_type", "status", "message"),
    [
        (JSON, 400, f"the request body is not UTF-8 text (byte 18); send {SHAPES}"),  # the toolkit decoded it: a 500
        (
            "text/csv",
            415,
            f"content type 'text/csv' is not supported; send one of {', '.join(inference.CONTENT_TYPES)}",
        ),
    ],
)
def test_a_body_that_is_not_utf_8_reaches_the_serving_code(
    endpoint: ModelWorker, content_type: str, status: int, message: str
) -> None:
    assert_refused(endpoint.answer(b'{"image_base64": "\xff\xfe"}', content_type), status, message)


def test_exif_that_pil_cannot_parse_is_a_400(endpoint: ModelWorker) -> None:
    data = encoded(pattern("Red"), "JPEG", exif=malformed_exif())
    assert_refused(
        endpoint.answer(data, "image/jpeg"),
        400,
        "the request body could not be decoded: its EXIF metadata is malformed (struct.error); send it without "
        "EXIF data",
    )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {"content_type": "text/" + "x" * 100_000},
            f"content type 'text/{'x' * 91}... is not supported; send one of {', '.join(inference.CONTENT_TYPES)}",
        ),
        (
            {"content_type": "image/png", "accept": "text/" + "y" * 100_000},
            f"accept type 'text/{'y' * 91}... is not supported; this endpoint answers application/json",
        ),
        (
            {"content_type": "image/png", "custom_attributes": "top_k=\ud800" + "z" * 100_000},
            f"top_k must be an integer from 1 to 6, got '\\ud800{'z' * 90}...",
        ),
    ],
    ids=["content type", "accept", "top_k"],
)
def test_messages_quote_at_most_100_characters_of_a_header(
    endpoint: ModelWorker, headers: dict[str, str], message: str
) -> None:
    content_type = headers.pop("content_type")
    status = 400 if message.startswith("top_k") else 415
    assert_refused(endpoint.answer(encoded(pattern("Red"), "PNG"), content_type, **headers), status, message)


@pytest.mark.parametrize(
    ("image", "image_format", "mebibytes"),
    [
        (Image.fromarray(np.zeros((6000, 6000), np.uint16)), "PNG", 515.0),  # 16-bit: 77 kB of PNG
        (Image.new("F", (5000, 5000)), "TIFF", 453.0),  # 32-bit float
        (Image.new("RGBA", (5000, 4000), (0, 0, 0, 0)), "PNG", 572.2),  # alpha: five conversions
    ],
    ids=["16-bit", "float", "alpha"],
)
def test_an_image_that_decodes_past_the_budget_is_a_413_before_decoding(
    endpoint: ModelWorker, image: Image.Image, image_format: str, mebibytes: float
) -> None:
    data = encoded(image, image_format, **({"compression": "tiff_adobe_deflate"} if image_format == "TIFF" else {}))
    assert len(data) < 1_000_000 and image.width * image.height <= inference.MAX_PIXELS
    assert_refused(
        endpoint.answer(data, "image/png"),
        413,
        f"decoding the request body would take {mebibytes:.1f} MiB of memory; at most 384.0 MiB are decoded per "
        "request: send fewer or smaller images",
    )


def test_a_16_bit_image_within_the_budget_is_served(endpoint: ModelWorker) -> None:
    gradient = np.linspace(0, 65535, 3000 * 2000).reshape(2000, 3000).astype(np.uint16)
    response = endpoint.answer(png(gradient), "image/png")
    assert response.status == 200, response.text


def test_the_budget_is_per_request_not_per_image(deployed: Path) -> None:
    one = png(np.zeros((200, 200, 3), np.uint8))
    cost = 200 * 200 * (4 + 4 + inference.TENSOR_BYTES)  # RGB: decoded, transposed copy, tensor copies
    endpoint = start_endpoint(deployed, MAX_DECODE_BYTES=str(2 * cost))
    assert endpoint.answer(json.dumps({"images_base64": [b64(one)] * 2}).encode(), JSON).status == 200
    assert_refused(
        endpoint.answer(json.dumps({"images_base64": [b64(one)] * 3}).encode(), JSON),
        413,
        "decoding the 3 images would take 1.6 MiB of memory; at most 1.1 MiB are decoded per request: send fewer "
        "or smaller images",
    )


def test_a_progressive_jpeg_of_many_empty_scans_is_a_413(endpoint: ModelWorker) -> None:
    progressive = encoded(pattern("Red_left", (600, 400)), "JPEG", progressive=True)
    assert inference.jpeg_scans(progressive) == 10
    assert endpoint.answer(with_empty_scans(progressive, 90), "image/jpeg").status == 200
    assert_refused(
        endpoint.answer(with_empty_scans(progressive, 91), "image/jpeg"),
        413,
        "the request body is a JPEG of 101 scans; at most 100 are decoded (cameras write about 10)",
    )


def test_a_progressive_jpeg_counts_its_whole_coefficient_buffer(deployed: Path) -> None:
    image = pattern("Red", (2400, 1600))
    baseline, progressive = encoded(image, "JPEG"), encoded(image, "JPEG", progressive=True)
    served = start_endpoint(deployed).model
    costs = [inference.parse_request(data, "image/jpeg", served).images[0].cost for data in (baseline, progressive)]
    # Both decode at 1/8 scale (300x200); libjpeg keeps every 8x8 block's coefficients of a progressive one.
    assert costs[0] == 300 * 200 * (4 + 4 + inference.TENSOR_BYTES)
    assert costs[1] - costs[0] == (300 * 200 + 2 * 150 * 100) * 128  # 4:2:0: Y, and Cb and Cr at half size


def test_the_endpoints_errors_carry_no_traceback(endpoint: ModelWorker) -> None:
    for response in (
        endpoint.answer(b"not an image", "image/jpeg"),
        endpoint.answer(b"{", JSON),
        endpoint.answer(b"x", "text/html"),
    ):
        assert response.status in (400, 415)
        assert "Traceback" not in response.text and "File " not in response.text and "\n" not in response.text


# --- properties ------------------------------------------------------------------------------------------------


def _seeds() -> list[bytes]:
    image = pattern("Red_top", (40, 30))
    return [
        encoded(image, "JPEG"),
        encoded(image, "JPEG", progressive=True, exif=malformed_exif()),
        encoded(image, "PNG"),
        encoded(image.convert("RGBA"), "PNG"),
        png(np.arange(1200, dtype=np.uint16).reshape(30, 40)),
        encoded(image, "GIF"),
        encoded(image, "BMP"),
        encoded(image, "TIFF"),
        encoded(image, "WEBP"),
        encoded(Image.new("F", (40, 30)), "TIFF"),
    ]


SEEDS = _seeds()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A small image of each format, its bytes then flipped, cut, repeated or spliced."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(0, 8))):
        position = rng.randrange(len(data))
        match draw(st.sampled_from(["flip", "cut", "repeat", "insert"])):
            case "flip":
                data[position] = rng.randrange(256)
            case "cut":
                del data[position:]
            case "repeat":
                data[position:position] = data[position : position + rng.randrange(1, 64)] * rng.randrange(1, 50)
            case "insert":
                data[position:position] = rng.randbytes(rng.randrange(1, 16))
        if not data:
            data = bytearray(b"\xff\xd8")
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_images() | st.binary(max_size=2000), content_type=st.sampled_from(["image/jpeg", "image/png"]))
def test_any_image_bytes_are_answered_200_or_4xx_with_a_short_message(
    endpoint: ModelWorker, data: bytes, content_type: str
) -> None:
    response = endpoint.answer(data, content_type)
    assert_short(response, data)
    if response.status != 200:
        assert response.content_type == inference.ERROR_CONTENT_TYPE


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=20,
)
images = st.sampled_from([b64(seed) for seed in SEEDS]) | st.text(max_size=200)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "image_base64": images | json_values,
        "images_base64": st.lists(images, max_size=20) | json_values,
        "top_k": st.integers(-3, 10) | json_values,
        "url": json_values,
    },
)
bodies = (
    payloads.map(lambda p: json.dumps(p).encode()) | json_values.map(lambda v: json.dumps(v).encode()) | st.binary()
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    content_type=st.sampled_from([JSON, "application/json; charset=utf-8", "text/csv", "text/plain"]),
    custom_attributes=st.none() | st.text(max_size=300),
)
def test_any_json_request_is_answered_200_or_4xx_with_a_short_message(
    endpoint: ModelWorker, body: bytes, content_type: str, custom_attributes: str | None
) -> None:
    response = endpoint.answer(body, content_type, custom_attributes=custom_attributes)
    assert_short(response, body.decode("utf-8", "replace") + (custom_attributes or ""))
