"""predict: through the Lambda alias, or the endpoint directly (Stubber), and the error answers."""

from __future__ import annotations

import base64
import io
import json

from botocore.response import StreamingBody

from dogbreeds.ops.errors import EXIT_FAILED, EXIT_USAGE
from stacks.names import LAMBDA_ALIAS
from tests.dogbreeds.fakes import ACCOUNT, NAMES, REGION, serving

ALIAS = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{NAMES.lambda_function}:{LAMBDA_ALIAS}"
URL = "https://example.com/Carolina-Dog-standing-outdoors.jpg"
PREDICTIONS = [
    {"label": "Carolina dog", "index": 42, "probability": 0.91},
    {"label": "Canaan dog", "index": 40, "probability": 0.05},
]
MODEL = {"backbone": "resnet50", "num_classes": 133, "version": "dogbreeds-train-0123456789ab"}


def payload(document: dict) -> StreamingBody:
    raw = json.dumps(document).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def lambda_answer(status: int, body: dict, **extra) -> dict:
    return {
        "StatusCode": 200,
        "Payload": payload(
            {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
        ),
        **extra,
    }


def invoke_params(event: dict) -> dict:
    return {"FunctionName": ALIAS, "InvocationType": "RequestResponse", "Payload": json.dumps(event).encode()}


def test_a_url_goes_to_the_lambda_alias(fake, run_cli):
    body = {
        "predictions": PREDICTIONS,
        "model": MODEL,
        "endpoint": NAMES.endpoint,
        "latency_ms": {"fetch": 41.2, "endpoint": 120.4, "total": 165.0},
    }
    fake.stub("lambda").add_response("invoke", lambda_answer(200, body), invoke_params({"url": URL, "top_k": 2}))
    result = run_cli("predict", URL, "--top-k", "2")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    lines = result.out.splitlines()
    assert lines[:3] == [
        "rank  breed         probability",
        "   1  Carolina dog        91.0%",
        "   2  Canaan dog           5.0%",
    ]
    assert "model: resnet50, 133 classes, version dogbreeds-train-0123456789ab" in result.out
    through = f"(Lambda {NAMES.lambda_function}:{LAMBDA_ALIAS})"
    assert f"{through}; Lambda reports fetch 41 ms, endpoint 120 ms, total 165 ms" in result.out


def test_a_local_file_goes_as_base64(fake, run_cli, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    event = {"image_base64": base64.b64encode(image.read_bytes()).decode()}
    body = {"predictions": PREDICTIONS[:1], "model": MODEL, "latency_ms": {"fetch": None, "endpoint": 80, "total": 90}}
    fake.stub("lambda").add_response("invoke", lambda_answer(200, body), invoke_params(event))
    result = run_cli("predict", str(image), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == body


def test_a_lambda_error_answer_prints_its_message(fake, run_cli):
    body = {"error": "The URL did not answer with an image (text/html).", "request_id": "req-123"}
    fake.stub("lambda").add_response("invoke", lambda_answer(422, body))
    result = run_cli("predict", URL)
    assert result.code == EXIT_FAILED
    assert result.err == (
        "error: prediction failed, HTTP 422: The URL did not answer with an image (text/html). (request req-123)\n"
    )
    assert result.out == ""


def test_an_unhandled_lambda_failure_is_reported(fake, run_cli):
    crash = {"errorMessage": "Task timed out after 30.00 seconds", "errorType": "Sandbox.Timedout"}
    fake.stub("lambda").add_response(
        "invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": payload(crash)}
    )
    result = run_cli("predict", URL)
    assert result.code == EXIT_FAILED
    assert result.err == "error: the Lambda failed (Sandbox.Timedout): Task timed out after 30.00 seconds\n"


def test_a_file_too_large_for_the_lambda_is_refused_before_calling(fake, run_cli, tmp_path):
    image = tmp_path / "big.jpg"
    image.write_bytes(b"x" * (1024 * 1024 + 1))
    result = run_cli("-c", "lambda_max_image_mb=1", "predict", str(image))
    assert result.code == EXIT_USAGE
    assert "the most accepted is 1048576 bytes" in result.err
    assert "lambda" not in fake.created


def test_endpoint_gets_the_bytes_and_top_k(fake, run_cli, tmp_path):
    image = tmp_path / "dog.png"
    image.write_bytes(b"\x89PNG fake")
    answer = {"predictions": PREDICTIONS, "model": MODEL}
    raw = json.dumps(answer).encode()
    fake.stub("sagemaker-runtime").add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"},
        {
            "EndpointName": NAMES.endpoint,
            "ContentType": "application/x-image",
            "Accept": "application/json",
            "Body": b"\x89PNG fake",
            "CustomAttributes": "top_k=2",
        },
    )
    result = run_cli("predict", "--endpoint", str(image), "--top-k", "2")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert "   1  Carolina dog        91.0%" in result.out
    assert f"round trip (endpoint {NAMES.endpoint})" in result.out
    assert "lambda" not in fake.created


def test_endpoint_fetches_a_url_here_first(fake, run_cli):
    answer = json.dumps({"predictions": PREDICTIONS, "model": MODEL}).encode()
    with serving(b"JPEG bytes") as server:
        fake.stub("sagemaker-runtime").add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(answer), len(answer))},
            {
                "EndpointName": NAMES.endpoint,
                "ContentType": "application/x-image",
                "Accept": "application/json",
                "Body": b"JPEG bytes",
            },
        )
        result = run_cli("predict", "--endpoint", server.url + "/dog.jpg")
    assert result.code == 0, result.err
    assert [r["path"] for r in server.requests] == ["/dog.jpg"]


def test_endpoint_model_error_prints_only_the_first_line(fake, run_cli, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(b"not an image")
    fake.stub("sagemaker-runtime").add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        service_message="Received client error (415) from primary with message ...",
        http_status_code=424,
        modeled_fields={
            "OriginalStatusCode": 415,
            "OriginalMessage": "cannot identify image file\nTraceback (most recent call last):\n  File ...",
        },
    )
    result = run_cli("predict", "--endpoint", str(image))
    assert result.code == EXIT_FAILED
    assert result.err == "error: the endpoint refused the image (HTTP 415): cannot identify image file\n"


def test_a_missing_function_is_one_error_line(fake, run_cli):
    fake.stub("lambda").add_client_error("invoke", "ResourceNotFoundException", f"Function not found: {ALIAS}", 404)
    result = run_cli("predict", URL)
    assert result.code == EXIT_FAILED
    assert result.err == f"error: AWS Invoke failed: ResourceNotFoundException: Function not found: {ALIAS}\n"


def test_a_missing_endpoint_is_one_error_line(fake, run_cli, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(b"jpeg")
    message = f"Endpoint {NAMES.endpoint} of account {ACCOUNT} not found."
    fake.stub("sagemaker-runtime").add_client_error("invoke_endpoint", "ValidationError", message)
    result = run_cli("predict", "--endpoint", str(image))
    assert result.code == EXIT_FAILED
    assert result.err == f"error: AWS InvokeEndpoint failed: ValidationError: {message}\n"
