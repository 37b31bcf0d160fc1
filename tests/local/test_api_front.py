"""Local mode's REST API front: SigV4 checked with botocore's signer, the stage's throttle, the request model, API
Gateway's sizes and its own answers, and the proxy event handed to the Lambda handler, run in its own process as
the demo runs it, behind which the loopback SageMaker runtime answers with a fake model."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

import fetch
from dogbreeds.local import demo
from dogbreeds.local.apigateway import (
    LOCAL_ACCESS_KEY,
    LOCAL_CREDENTIALS,
    LOCAL_SECRET_KEY,
    LocalRestApi,
    TokenBucket,
)
from dogbreeds.local.lambda_host import LambdaFunction
from dogbreeds.local.runtime import RuntimeServer
from dogbreeds.ops import predict
from dogbreeds_stacks.api_contract import ACCESS_LOG_FIELDS, LAMBDA_MAX_EVENT_BYTES, MAX_URL_LENGTH, max_raw_image_bytes
from dogbreeds_stacks.settings import Settings
from tests.fake_runtime import ENDPOINT
from tests.lambda_src.servers import JPEG, PNG, PREDICTIONS, ImageServer, serve

REGION = "us-east-1"
SIGNER = predict.SigV4Signer(LOCAL_CREDENTIALS, REGION)
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access "
    "Key and signing method. Consult the service documentation for details."
)


@pytest.fixture(scope="module")
def function(fake_runtime: RuntimeServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaFunction]:
    """The handler in its own process, with the invoker stack's environment and local mode's (as the demo)."""
    task_dir = Path(shutil.copytree(demo.LAMBDA_SOURCE, tmp_path_factory.mktemp("lambda") / "task"))
    settings = Settings.load([f"endpoint_name={ENDPOINT}"])
    with LambdaFunction(
        task_dir,
        environment=demo.function_variables(settings, fake_runtime.url),
        region=REGION,
        timeout_seconds=float(settings.lambda_timeout_seconds),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def api(function: LambdaFunction) -> Iterator[LocalRestApi]:
    """The front with cdk.json's settings, except a throttle that no test here reaches."""
    settings = Settings.load(["api_throttle_rate_limit=1000", "api_throttle_burst_limit=10"])
    with LocalRestApi(function.invoke, settings, region=REGION) as front:
        yield front


def post(
    url: str, body: bytes, content_type: str | None, *, sign: predict.Authenticate = SIGNER, **headers: str
) -> predict.ApiAnswer:
    request = predict.ApiRequest(url, body, {**({"Content-Type": content_type} if content_type else {}), **headers})
    return predict.call_api(sign(request), timeout=30)


def refusal(answer: predict.ApiAnswer) -> tuple[int, str, str]:
    """Status, x-amzn-ErrorType and message of one of API Gateway's own answers (the gateway responses' shape)."""
    body = json.loads(answer.body)
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == answer.headers["x-amzn-RequestId"]
    assert answer.headers["Content-Type"] == "application/json"
    return answer.status, answer.headers["x-amzn-ErrorType"], body["error"]


# --- signed requests reach the model --------------------------------------------------------------------------


def test_a_signed_raw_image_reaches_the_model_with_top_k_from_the_query(api, model):
    answer = post(api.predict_url + "?top_k=2", JPEG, "image/jpeg")
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["predictions"] == PREDICTIONS
    assert body["endpoint"] == ENDPOINT
    (call,) = model.calls
    assert call.body == JPEG  # base64-encoded into the event by the front, decoded by the handler
    assert call.custom_attributes == "top_k=2"


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream"])
def test_every_binary_media_type_carries_the_bytes(content_type, api, model):
    assert post(api.predict_url, PNG, content_type).status == 200
    assert model.calls[0].body == PNG


def test_a_signed_json_url_is_fetched_by_the_lambda(api, model):
    with ImageServer({"/Carolina-Dog-standing-outdoors.jpg": serve(JPEG)}) as images:
        url = images.url("/Carolina-Dog-standing-outdoors.jpg")
        answer = post(api.predict_url, json.dumps({"url": url, "top_k": 3}).encode(), "application/json")
    assert answer.status == 200, answer.body
    assert isinstance(answer.json()["latency_ms"]["fetch"], float)
    assert model.calls[0].body == JPEG
    assert model.calls[0].custom_attributes == "top_k=3"


def test_signed_json_base64_reaches_the_model(api, model):
    document = {"image_base64": base64.b64encode(JPEG).decode()}
    answer = post(api.predict_url, json.dumps(document).encode(), "application/json")
    assert answer.status == 200, answer.body
    assert model.calls[0].body == JPEG


def test_a_body_without_a_content_type_is_taken_as_json(api, model):
    answer = post(api.predict_url, json.dumps({"image_base64": base64.b64encode(JPEG).decode()}).encode(), None)
    assert answer.status == 200, answer.body


def test_curl_with_aws_sigv4_reaches_the_model(api, model, tmp_path):
    curl = shutil.which("curl")
    if (
        curl is None
        or "aws-sigv4" not in subprocess.run([curl, "--help", "all"], capture_output=True, text=True).stdout
    ):
        pytest.skip("curl with --aws-sigv4 (7.75 or newer) is not installed")
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(JPEG)
    result = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--aws-sigv4",
            f"aws:amz:{REGION}:execute-api",
            "--user",
            f"{LOCAL_ACCESS_KEY}:{LOCAL_SECRET_KEY}",
            "--header",
            "Content-Type: image/jpeg",
            "--data-binary",
            f"@{photo}",
            "--write-out",
            "\n%{http_code}",
            api.predict_url + "?top_k=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    body, _, status = result.stdout.rpartition("\n")
    assert (status, result.stderr) == ("200", ""), body
    assert json.loads(body)["predictions"] == PREDICTIONS
    assert model.calls[0].custom_attributes == "top_k=1"


# --- what is refused before the Lambda ------------------------------------------------------------------------


def test_an_unsigned_request_is_refused_and_never_reaches_the_lambda(api, model):
    answer = post(api.predict_url, JPEG, "image/jpeg", sign=predict.no_authentication)
    assert refusal(answer) == (403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    assert model.calls == []


@pytest.mark.parametrize(
    ("signer", "error_type", "message"),
    [
        (
            predict.SigV4Signer(Credentials(LOCAL_ACCESS_KEY, "not-the-secret"), REGION),
            "InvalidSignatureException",
            MISMATCH,
        ),
        (
            predict.SigV4Signer(Credentials("unknown-local-key", LOCAL_SECRET_KEY), REGION),
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        (
            predict.SigV4Signer(LOCAL_CREDENTIALS, "eu-west-1"),
            "InvalidSignatureException",
            "Credential should be scoped to a valid region, not 'eu-west-1'.",
        ),
    ],
    ids=["wrong secret", "unknown key", "other region"],
)
def test_a_wrong_signature_is_refused(signer, error_type, message, api, model):
    answer = post(api.predict_url, JPEG, "image/jpeg", sign=signer)
    assert refusal(answer) == (403, error_type, message)
    assert model.calls == []


def test_a_body_changed_after_signing_is_refused(api, model):
    signed = SIGNER(predict.ApiRequest(api.predict_url, JPEG, {"Content-Type": "image/jpeg"}))
    answer = predict.call_api(dataclasses.replace(signed, body=PNG), timeout=30)
    assert refusal(answer) == (403, "InvalidSignatureException", MISMATCH)


def test_a_signature_older_than_five_minutes_is_refused(function, model):
    settings = Settings.load()
    with LocalRestApi(function.invoke, settings, region=REGION, clock=lambda: time.time() + 301) as later:
        answer = post(later.predict_url, JPEG, "image/jpeg")
    status, error_type, message = refusal(answer)
    assert (status, error_type) == (403, "InvalidSignatureException")
    assert message.startswith("Signature expired: ") and message.endswith(" - 5 min.)")


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/predict"), ("POST", "/v1/other"), ("POST", "/predict")])
def test_routes_the_api_does_not_have_are_missing_authentication_token(method, path, api, model):
    signed = SIGNER(predict.ApiRequest(f"{api.url.removesuffix('/v1')}{path}", b"", {}, method=method))
    answer = predict.call_api(signed, timeout=30)
    assert refusal(answer) == (403, "MissingAuthenticationTokenException", "Missing Authentication Token")


@pytest.mark.parametrize(
    "document",
    [
        {"url": "https://images.example/a.jpg", "image_base64": "abc"},
        {},
        {"url": "https://images.example/a.jpg", "top_k": "3"},
        {"url": "https://images.example/a.jpg", "top_k": 0},
        {"url": "https://images.example/a.jpg", "colour": "brown"},
        {"url": "x" * (MAX_URL_LENGTH + 1)},
        ["https://images.example/a.jpg"],
    ],
    ids=["both", "neither", "top_k a string", "top_k 0", "unknown key", "long url", "not an object"],
)
def test_json_the_request_model_refuses_never_reaches_the_lambda(document, api, model):
    answer = post(api.predict_url, json.dumps(document).encode(), "application/json")
    assert refusal(answer) == (400, "BadRequestException", "Invalid request body")
    assert model.calls == []


def test_the_model_s_url_limit_is_the_lambda_s():
    assert MAX_URL_LENGTH == fetch.MAX_URL_LENGTH


def test_the_stage_throttle_answers_429_with_retry_after(function, model):
    settings = Settings.load(["api_throttle_rate_limit=1", "api_throttle_burst_limit=1"])
    with LocalRestApi(function.invoke, settings, region=REGION) as throttled:
        first = post(throttled.predict_url, JPEG, "image/jpeg")
        second = post(throttled.predict_url, JPEG, "image/jpeg")
    assert first.status == 200
    assert refusal(second) == (429, "ThrottledException", "Too Many Requests")
    assert second.headers["Retry-After"] == "1"
    assert len(model.calls) == 1


def test_the_token_bucket_refills_at_the_rate_up_to_the_burst():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


# --- sizes -------------------------------------------------------------------------------------------------------


def test_an_image_larger_than_the_lambda_takes_gets_the_lambda_s_413(api, model):
    big = JPEG + bytes(4 * 1024 * 1024)
    answer = post(api.predict_url, big, "image/jpeg")
    assert answer.status == 413
    assert answer.json()["error"].startswith("the request body holds about 4,194,")
    assert model.calls == []


def test_an_image_too_large_for_the_lambda_s_event_is_api_gateway_s_413(api, model):
    assert max_raw_image_bytes() > 4 * 1024 * 1024  # every image the Lambda takes fits its event
    answer = post(api.predict_url, JPEG + bytes(LAMBDA_MAX_EVENT_BYTES * 3 // 4), "image/jpeg")
    assert refusal(answer) == (413, "RequestTooLargeException", "Request Too Long")
    assert model.calls == []


def test_a_payload_over_10_mib_is_refused_before_it_is_read(api):
    parts = urllib.parse.urlsplit(api.predict_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", parts.path)
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Content-Length", str(10 * 1024 * 1024 + 1))
    connection.endheaders()  # and no body: the front answers on the header alone
    response = connection.getresponse()
    assert (response.status, response.read()) == (413, b"HTTP content length exceeded 10485760 bytes.")
    connection.close()


# --- the event the Lambda gets, and what comes back ----------------------------------------------------------


class Recorder:
    """A function that records its events and answers as told."""

    def __init__(self, answer: Any = None, *, raise_error: bool = False, sleep: float = 0.0) -> None:
        self.events: list[dict] = []
        self.answer = answer or {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}
        self.raise_error, self.sleep = raise_error, sleep

    def __call__(self, event: dict) -> Any:
        self.events.append(event)
        time.sleep(self.sleep)
        if self.raise_error:
            raise RuntimeError("the function failed")
        return self.answer


def test_the_proxy_event_is_api_gateway_s_format_1_0_with_binary_media_types():
    recorder = Recorder()
    with LocalRestApi(recorder, Settings.load(), region=REGION) as front:
        post(front.predict_url + "?top_k=2&top_k=3", JPEG, "image/jpeg", **{"X-Custom": "a"})
        post(front.predict_url, b'{"url": "https://images.example/a.jpg"}', "application/json")
    raw, text = recorder.events
    assert raw["resource"] == "/predict" and raw["path"] == "/predict" and raw["httpMethod"] == "POST"
    assert raw["isBase64Encoded"] is True and base64.b64decode(raw["body"]) == JPEG
    assert raw["queryStringParameters"] == {"top_k": "3"}
    assert raw["multiValueQueryStringParameters"] == {"top_k": ["2", "3"]}
    assert raw["headers"]["X-Custom"] == "a" and raw["multiValueHeaders"]["X-Custom"] == ["a"]
    context = raw["requestContext"]
    assert (context["stage"], context["path"], context["resourcePath"]) == ("v1", "/v1/predict", "/predict")
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < 60
    assert context["identity"]["caller"] == context["identity"]["accessKey"] == LOCAL_ACCESS_KEY
    assert raw["pathParameters"] is None and raw["stageVariables"] is None
    assert text["isBase64Encoded"] is False and text["body"] == '{"url": "https://images.example/a.jpg"}'
    assert text["queryStringParameters"] is None


@pytest.mark.parametrize(
    ("recorder", "status", "message"),
    [
        (Recorder(raise_error=True), 502, "Internal server error"),
        (Recorder({"body": "no statusCode"}), 502, "Internal server error"),
        (Recorder(sleep=2.5), 504, "Endpoint request timed out"),
    ],
    ids=["function error", "not a proxy response", "integration timeout"],
)
def test_a_failed_integration_is_api_gateway_s_answer(recorder, status, message):
    settings = dataclasses.replace(Settings.load(), api_integration_timeout_seconds=1)
    with LocalRestApi(recorder, settings, region=REGION) as front:
        answer = post(front.predict_url, JPEG, "image/jpeg")
    assert refusal(answer)[0] == status and refusal(answer)[2] == message


def test_every_request_is_in_the_access_log_with_the_stage_s_fields(api, model):
    before = len(api.access_log)
    post(api.predict_url, JPEG, "image/jpeg")
    post(api.predict_url, JPEG, "image/jpeg", sign=predict.no_authentication)
    ok, refused = api.access_log[before:]
    assert list(ok) == list(refused) == list(ACCESS_LOG_FIELDS)
    assert (ok["status"], ok["caller"], ok["integrationStatus"], ok["resourcePath"]) == (
        200,
        LOCAL_ACCESS_KEY,
        200,
        "/predict",
    )
    assert (refused["status"], refused["errorType"], refused["integrationStatus"]) == (
        403,
        "MissingAuthenticationTokenException",
        None,
    )


def test_predict_s_client_path_reaches_the_model_and_reports_a_refusal(api, model, tmp_path):
    photo = tmp_path / "dog.jpg"
    photo.write_bytes(JPEG)
    body = predict.via_api(api.predict_url, str(photo), 2, 4 * 1024 * 1024, SIGNER)
    assert body["predictions"] == PREDICTIONS
    with pytest.raises(predict.AwsSetupError, match=r"^the API refused the request \(HTTP 403\): Missing Auth"):
        predict.via_api(api.predict_url, str(photo), None, 4 * 1024 * 1024, predict.no_authentication)
