"""inference.py served through the real SageMaker inference toolkit, as the PyTorch inference container runs it.

The model is a stand-in (inference_fixtures.fit_stand_in_model) that tells red-on-white patterns apart,
packaged as model.tar.gz and deployed as on an endpoint instance. Local mode's worker
(dogbreeds.local.serving.ModelWorker) serves it, one per module and one for each model environment a test
sets, and the tests send requests with the headers SageMaker sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import inference
from model import readable_label
from tests.training.inference_fixtures import (
    CLASS_NAMES,
    RED,
    Answer,
    ModelWorker,
    RequestProcessor,
    ServerContext,
    b64,
    encoded,
    pattern,
    png_header_only,
    start_endpoint,
)

LABELS = [readable_label(name) for name in CLASS_NAMES]  # "Red", "White", "Red left", ...
JSON = "application/json"
ACCEPTED_JSON = '{"image_base64": "<base64>"} or {"images_base64": ["<base64>", ...]}, with an optional "top_k"'
# The pixel cap's 413, for an image of the request body.
TOO_MANY_PIXELS = "the request body has too many pixels ({}); at most 40,000,000 (width x height) are accepted"


def jpeg(name: str, size: tuple[int, int] = (60, 40)) -> bytes:
    return encoded(pattern(name, size), "JPEG", quality=90)


def json_body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def top_label(response: Answer) -> str:
    assert response.status == 200, response.text
    return response.json()["predictions"][0]["label"]


def assert_error(response: Answer, status: int, message: str) -> None:
    """An error answer: the status, the message as reason phrase and as the whole body, no traceback."""
    assert (response.status, response.text) == (status, message)
    assert response.phrase == message
    assert response.content_type == inference.ERROR_CONTENT_TYPE


# --- the contract with the toolkit and the model server -------------------------------------------------------


def test_model_fn_loads_the_artifact_without_network_access(deployed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    served = start_endpoint(deployed).model
    assert served.labels == tuple(LABELS)
    assert served.version == hashlib.sha256((deployed / "model.pth").read_bytes()).hexdigest()[:12]
    assert (served.device.type, served.network.training, served.default_top_k) == ("cpu", False, 5)


def test_a_jpeg_answers_the_top_5_with_readable_labels_and_the_model(endpoint: ModelWorker, deployed: Path) -> None:
    response = endpoint.answer(jpeg("Red_left"), "image/jpeg")
    assert (response.status, response.content_type) == (200, JSON)
    answer = response.json()
    assert set(answer) == {"predictions", "model"}
    predictions = answer["predictions"]
    assert predictions[0]["label"] == "Red left"
    assert len(predictions) == 5
    assert all(p["label"] == LABELS[p["index"]] for p in predictions)
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[0] > 0.9
    assert sum(probabilities) <= 1.000001
    assert all(round(p, 6) == p for p in probabilities)
    version = hashlib.sha256((deployed / "model.pth").read_bytes()).hexdigest()[:12]
    assert answer["model"] == {"backbone": "resnet18", "num_classes": 6, "version": version}


@pytest.mark.parametrize(
    ("content_type", "image_format"),
    [
        ("image/jpeg", "JPEG"),
        ("image/png", "PNG"),
        ("application/x-image", "WEBP"),
        ("Image/JPEG; charset=binary", "JPEG"),
        ("image/jpeg", "PNG"),  # the bytes decide the format
    ],
)
def test_image_content_types(endpoint: ModelWorker, content_type: str, image_format: str) -> None:
    assert top_label(endpoint.answer(encoded(pattern("Red_top"), image_format), content_type)) == "Red top"


@pytest.mark.parametrize("accept", [None, "*/*", JSON, "text/html, application/json;q=0.9", "application/*"])
def test_json_is_answered_to_every_accept_that_allows_it(endpoint: ModelWorker, accept: str | None) -> None:
    response = endpoint.answer(jpeg("White"), "image/jpeg", accept=accept)
    assert (response.status, response.content_type, top_label(response)) == (200, JSON, "White")


def test_an_accept_without_json_is_a_415(endpoint: ModelWorker) -> None:
    assert_error(
        endpoint.answer(jpeg("White"), "image/jpeg", accept="text/csv"),
        415,
        "accept type 'text/csv' is not supported; this endpoint answers application/json",
    )


@pytest.mark.parametrize(("content_type", "shown"), [("text/plain", "'text/plain'"), (None, "(none)")])
def test_an_unsupported_content_type_is_a_415_that_lists_the_accepted(
    endpoint: ModelWorker, content_type: str | None, shown: str
) -> None:
    assert_error(
        endpoint.answer(jpeg("White"), content_type),
        415,
        f"content type {shown} is not supported; send one of image/jpeg, image/png, application/x-image, {JSON}",
    )


def test_an_unexpected_exception_is_a_500_whose_details_only_the_log_gets(
    endpoint: ModelWorker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(endpoint.model.network, "forward", fail)
    assert_error(
        endpoint.answer(jpeg("White"), "image/jpeg"),
        500,
        "the model server failed on this request (RuntimeError); its log has the details",
    )
    assert "CUDA error: an illegal memory access" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text


# --- real-format images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [2, 3, 5, 6, 7, 8])
def test_a_jpeg_is_seen_in_its_exif_orientation(endpoint: ModelWorker, orientation: int) -> None:
    # Stored so that a viewer shows "Red left"; read without the tag it is another pattern.
    undo = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = pattern("Red_left", (60, 40)).transpose(undo)
    exif = Image.Exif()
    exif[0x0112] = orientation
    assert top_label(endpoint.answer(encoded(stored, "JPEG", exif=exif), "image/jpeg")) == "Red left"
    assert top_label(endpoint.answer(encoded(stored, "JPEG"), "image/jpeg")) != "Red left"


def test_a_png_with_alpha_is_seen_on_white(endpoint: ModelWorker) -> None:
    # The right half is transparent red: on white it is "Red left"; with the alpha dropped it would be "Red".
    image = Image.new("RGBA", (60, 40), (*RED, 255))
    image.paste((*RED, 0), (30, 0, 60, 40))
    assert top_label(endpoint.answer(encoded(image, "PNG"), "image/png")) == "Red left"
    assert top_label(endpoint.answer(encoded(image.convert("RGB"), "PNG"), "image/png")) == "Red"


def test_palette_pngs_with_and_without_transparency(endpoint: ModelWorker) -> None:
    image = Image.new("P", (60, 40), 0)
    image.putpalette([*RED, *RED, 255, 255, 255])
    image.paste(1, (0, 20, 60, 40))  # the bottom half: entry 1, red too, unless entry 1 is transparent
    assert top_label(endpoint.answer(encoded(image, "PNG"), "image/png")) == "Red"
    assert top_label(endpoint.answer(encoded(image, "PNG", transparency=1), "image/png")) == "Red top"
    image.paste(2, (0, 20, 60, 40))
    assert top_label(endpoint.answer(encoded(image, "PNG"), "image/png")) == "Red top"


def test_a_cmyk_jpeg(endpoint: ModelWorker) -> None:
    cmyk = pattern("Red_bottom", (60, 40)).convert("CMYK")
    assert top_label(endpoint.answer(encoded(cmyk, "JPEG", quality=95), "image/jpeg")) == "Red bottom"


def test_grayscale_and_16_bit_images_answer_as_their_8_bit_rgb_equivalents(endpoint: ModelWorker) -> None:
    gradient = np.linspace(0, 65535, 60 * 40).reshape(40, 60).astype(np.uint16)
    sixteen_bit = Image.fromarray(gradient)
    eight_bit = Image.fromarray(np.rint(gradient / 257).astype(np.uint8))
    rgb = endpoint.answer(encoded(eight_bit.convert("RGB"), "PNG"), "image/png")
    assert rgb.status == 200
    assert endpoint.answer(encoded(sixteen_bit, "PNG"), "image/png").json() == rgb.json()
    assert endpoint.answer(encoded(eight_bit, "PNG"), "image/png").json() == rgb.json()


def test_a_truncated_jpeg_is_a_400(endpoint: ModelWorker) -> None:
    data = encoded(pattern("Red", (400, 300), random.Random(0)), "JPEG")
    response = endpoint.answer(data[: len(data) // 2], "image/jpeg")
    assert response.status == 400
    assert re.fullmatch(
        r"the request body could not be decoded: image file is truncated \(\d+ bytes not processed\)", response.message
    )


@pytest.mark.parametrize(
    "body",
    [random.Random(0).randbytes(5000), encoded(pattern("Red"), "PPM")],
    ids=["random bytes", "an image in another format"],
)
def test_bytes_that_are_not_an_image_in_a_supported_format_are_a_400(endpoint: ModelWorker, body: bytes) -> None:
    assert_error(
        endpoint.answer(body, "application/x-image"),
        400,
        "the request body is not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP, TIFF)",
    )


@pytest.mark.parametrize("content_type", ["image/jpeg", JSON])
def test_an_empty_body_is_a_400(endpoint: ModelWorker, content_type: str) -> None:
    assert_error(endpoint.answer(b"", content_type), 400, "the request body is empty")


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [
        (8000, 8000, "8000x8000"),  # over MAX_PIXELS, under PIL's own limit
        (10000, 10000, "more than 89,478,485"),  # PIL's DecompressionBombWarning
        (20000, 20000, "more than 89,478,485"),  # PIL's DecompressionBombError
    ],
)
def test_a_decompression_bomb_is_a_413_before_any_pixel_is_decoded(
    endpoint: ModelWorker, width: int, height: int, size: str
) -> None:
    # A few dozen bytes declaring the size; had the pixels been decoded, the missing data would be a 400.
    assert_error(endpoint.answer(png_header_only(width, height), "image/png"), 413, TOO_MANY_PIXELS.format(size))


def test_the_pixel_cap_is_set_by_max_pixels(deployed: Path) -> None:
    endpoint = start_endpoint(deployed, MAX_PIXELS="2000")
    assert top_label(endpoint.answer(jpeg("Red", (50, 40)), "image/jpeg")) == "Red"
    assert_error(
        endpoint.answer(jpeg("Red", (50, 41)), "image/jpeg"),
        413,
        "the request body has too many pixels (50x41); at most 2,000 (width x height) are accepted",
    )


def test_an_image_over_6_mib_is_a_413(endpoint: ModelWorker) -> None:
    assert_error(
        endpoint.answer(bytes(6 * 1024 * 1024 + 1), "image/jpeg"),
        413,
        "the request body has 6,291,457 bytes; at most 6,291,456 are accepted",
    )


def test_the_byte_cap_is_set_by_max_image_bytes(deployed: Path) -> None:
    endpoint = start_endpoint(deployed, MAX_IMAGE_BYTES="1000")
    small, large = jpeg("Red", (100, 80)), encoded(pattern("Red", (100, 80), random.Random(0)), "JPEG")
    assert len(small) <= 1000 < len(large)
    assert top_label(endpoint.answer(json_body(image_base64=b64(small)), JSON)) == "Red"
    assert_error(
        endpoint.answer(json_body(image_base64=b64(large)), JSON),
        413,
        f"image_base64 has {len(large):,} bytes; at most 1,000 are accepted",
    )


# --- JSON requests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [JSON, "application/json; charset=utf-8"])
def test_one_base64_image(endpoint: ModelWorker, content_type: str) -> None:
    # The toolkit hands the body over as str for exactly "application/json", else as bytes.
    response = endpoint.answer(json_body(image_base64=b64(jpeg("Red_right"))), content_type)
    assert top_label(response) == "Red right"
    assert set(response.json()) == {"predictions", "model"}


def test_base64_may_be_wrapped_in_lines(endpoint: ModelWorker) -> None:
    encoded_lines = base64.encodebytes(jpeg("Red_right")).decode()  # 76 characters a line, as `base64` writes
    assert "\n" in encoded_lines
    assert top_label(endpoint.answer(json_body(image_base64=encoded_lines), JSON)) == "Red right"


def test_a_batch_of_three_answers_one_list_per_image_in_order(endpoint: ModelWorker) -> None:
    images = [b64(jpeg(name)) for name in ("Red_bottom", "White", "Red")]
    response = endpoint.answer(json_body(images_base64=images, top_k=2), JSON)
    assert response.status == 200, response.text
    answer = response.json()
    assert [predictions[0]["label"] for predictions in answer["predictions"]] == ["Red bottom", "White", "Red"]
    assert [len(predictions) for predictions in answer["predictions"]] == [2, 2, 2]
    assert answer["model"] == endpoint.model.description


def test_more_images_than_max_batch_is_a_413(deployed: Path) -> None:
    endpoint = start_endpoint(deployed, MAX_BATCH="2")
    assert endpoint.answer(json_body(images_base64=[b64(jpeg("Red"))] * 2), JSON).status == 200
    assert_error(
        endpoint.answer(json_body(images_base64=[b64(jpeg("Red"))] * 3), JSON),
        413,
        "a request holds at most 2 images, got 3",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"{not json",
            f"the request body is not valid JSON (Expecting property name enclosed in double quotes: "
            f"line 1 column 2 (char 1)); send {ACCEPTED_JSON}",
        ),
        (json.dumps([{"image_base64": "AAAA"}]).encode(), f"the JSON body must be an object: send {ACCEPTED_JSON}"),
        (json_body(image="AAAA"), f"send exactly one of image_base64 and images_base64: {ACCEPTED_JSON}"),
        (
            json_body(image_base64="AAAA", images_base64=["AAAA"]),
            f"send exactly one of image_base64 and images_base64: {ACCEPTED_JSON}",
        ),
        (
            json_body(images_base64="AAAA"),
            f"images_base64 must be a non-empty list of base64 strings: send {ACCEPTED_JSON}",
        ),
        (
            json_body(images_base64=[]),
            f"images_base64 must be a non-empty list of base64 strings: send {ACCEPTED_JSON}",
        ),
        (json_body(image_base64=42), "image_base64 must be a base64 string"),
        (json_body(image_base64="not base64!"), "image_base64 is not valid base64 (Only base64 data is allowed)"),
        (json_body(image_base64=""), "image_base64 is empty"),
        (
            json_body(images_base64=[b64(jpeg("Red")), b64(b"GIF89a?")]),
            "images_base64[1] is not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP, TIFF)",
        ),
        (
            json_body(url="https://example.com/dog.jpg"),
            "the endpoint does not fetch URLs: send the image bytes, or call the Lambda function, which fetches URLs",
        ),
    ],
    ids=[
        "not JSON",
        "a list",
        "no image",
        "both keys",
        "images not a list",
        "no images",
        "not a string",
        "not base64",
        "empty image",
        "one image of a batch broken",
        "a URL",
    ],
)
def test_malformed_json_requests_are_a_400_that_shows_what_is_accepted(
    endpoint: ModelWorker, body: bytes, message: str
) -> None:
    assert_error(endpoint.answer(body, JSON), 400, message)


# --- top k ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("custom_attributes", "fields", "count"),
    [
        ("top_k=3", {}, 3),
        ("trace=abc; top_k=2", {}, 2),
        (" top_k = 1 ,trace=abc", {}, 1),
        ("trace=abc", {}, 5),
        (None, {"top_k": 6}, 6),
        ("top_k=3", {"top_k": 1}, 1),  # the body's top_k wins over the header's
        (None, {"top_k": "4"}, 4),
    ],
)
def test_top_k_per_request(
    endpoint: ModelWorker, custom_attributes: str | None, fields: dict[str, object], count: int
) -> None:
    body = json_body(image_base64=b64(jpeg("Red")), **fields)
    response = endpoint.answer(body, JSON, custom_attributes=custom_attributes)
    assert response.status == 200, response.text
    assert len(response.json()["predictions"]) == count


@pytest.mark.parametrize(
    ("custom_attributes", "fields", "shown"),
    [
        ("top_k=0", {}, "'0'"),
        ("top_k=7", {}, "'7'"),
        ("top_k=three", {}, "'three'"),
        (None, {"top_k": 2.5}, "2.5"),
        (None, {"top_k": True}, "True"),
        (None, {"top_k": -1}, "-1"),
    ],
)
def test_a_top_k_outside_1_to_the_number_of_classes_is_a_400(
    endpoint: ModelWorker, custom_attributes: str | None, fields: dict[str, object], shown: str
) -> None:
    body = json_body(image_base64=b64(jpeg("Red")), **fields)
    assert_error(
        endpoint.answer(body, JSON, custom_attributes=custom_attributes),
        400,
        f"top_k must be an integer from 1 to 6, got {shown}",
    )


def test_the_custom_attributes_header_name_is_case_insensitive(endpoint: ModelWorker) -> None:
    context = ServerContext(Path("unused"))
    context.request_processor = [RequestProcessor({"x-amzn-sagemaker-custom-attributes": "top_k=2"})]
    answer, _ = inference.transform_fn(endpoint.model, jpeg("Red"), "image/jpeg", JSON, context)
    assert len(json.loads(answer)["predictions"]) == 2


@pytest.mark.parametrize(("top_k", "count"), [("2", 2), ("50", 6)])
def test_the_default_top_k_is_set_by_top_k(deployed: Path, top_k: str, count: int) -> None:
    endpoint = start_endpoint(deployed, TOP_K=top_k)
    assert len(endpoint.answer(jpeg("Red"), "image/jpeg").json()["predictions"]) == count
    assert len(endpoint.answer(jpeg("Red"), "image/jpeg", custom_attributes="top_k=4").json()["predictions"]) == 4


def test_a_top_k_setting_that_is_not_a_positive_integer_stops_the_worker(deployed: Path) -> None:
    with pytest.raises(ValueError, match=r"^TOP_K must be a positive integer, got '0'$"):
        start_endpoint(deployed, TOP_K="0")
