"""predict: through the REST API (local mode's front, which checks the SigV4 signature, in front of the real handler),
with each api_auth; through the Lambda alias or the endpoint directly (Stubber); and the error answers."""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from botocore.response import StreamingBody

import handler
from dogbreeds.local.apigateway import LocalRestApi
from dogbreeds.ops.errors import EXIT_AWS, EXIT_FAILED, EXIT_USAGE
from dogbreeds_stacks.names import LAMBDA_ALIAS
from dogbreeds_stacks.settings import Settings
from tests.dogbreeds.fakes import ACCOUNT, NAMES, REGION, serving
from tests.lambda_src.servers import HTML, JPEG, FakeContext

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
    result = run_cli("predict", URL, "--top-k", "2", "--lambda")
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
    result = run_cli("predict", str(image), "--json", "--lambda")
    assert result.code == 0, result.err
    assert json.loads(result.out) == body


def test_a_lambda_error_answer_prints_its_message(fake, run_cli):
    body = {"error": "The URL did not answer with an image (text/html).", "request_id": "req-123"}
    fake.stub("lambda").add_response("invoke", lambda_answer(422, body))
    result = run_cli("predict", URL, "--lambda")
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
    result = run_cli("predict", URL, "--lambda")
    assert result.code == EXIT_FAILED
    assert result.err == "error: the Lambda failed (Sandbox.Timedout): Task timed out after 30.00 seconds\n"


@pytest.mark.parametrize("way", [(), ("--lambda",)], ids=["api", "lambda"])
def test_a_file_too_large_for_the_lambda_is_refused_before_calling(way, fake, run_cli, tmp_path):
    image = tmp_path / "big.jpg"
    image.write_bytes(b"x" * (1024 * 1024 + 1))
    result = run_cli("-c", "lambda_max_image_mb=1", "predict", str(image), *way)
    assert result.code == EXIT_USAGE
    assert "the most accepted is 1048576 bytes" in result.err
    assert fake.created == [], "no AWS call"


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
    result = run_cli("predict", URL, "--lambda")
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


# --- through the API --------------------------------------------------------------------------------------------

ANSWER = {"predictions": PREDICTIONS, "model": MODEL}


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


class Endpoint:
    """A sagemaker-runtime client that answers predictions and records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def invoke_endpoint(self, **arguments) -> dict:
        self.sent.append(arguments)
        return {"Body": _Body(json.dumps(ANSWER).encode())}


class Function:
    """The real handler, in process, behind the front: it records the proxy events it is given."""

    def __init__(self) -> None:
        self.endpoint = Endpoint()
        self.events: list[dict] = []
        self.settings = handler.Settings(endpoint_name=NAMES.endpoint, api_timeout=29.0)

    def __call__(self, event: dict) -> dict:
        self.events.append(event)
        return handler.handle(event, FakeContext(), settings=self.settings, client=self.endpoint)


@contextmanager
def front(fake, *overrides: str, region: str = REGION) -> Iterator[tuple[LocalRestApi, Function]]:
    """Local mode's REST API (in the fake account's region), as the invoker stack's PredictUrl."""
    function = Function()
    credentials = fake.real.get_credentials().get_frozen_credentials()  # the test environment's (moto's) keys
    secrets = {credentials.access_key: credentials.secret_key}
    with LocalRestApi(function, Settings.load(list(overrides)), region=region, secrets=secrets) as api:
        fake.stacks.stacks[NAMES.stack("invoker")]["PredictUrl"] = api.predict_url
        yield api, function


def test_a_file_goes_to_the_stack_s_api_as_raw_bytes_signed_with_sigv4(fake, run_cli, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    with front(fake) as (api, function):
        url = api.predict_url
        result = run_cli("predict", str(image), "--top-k", "2")
    assert result.code == 0, result.err
    printed = [line for line in result.out.splitlines() if not line.startswith("{")]  # the handler's log lines
    assert printed[:2] == ["rank  breed         probability", "   1  Carolina dog        91.0%"]
    assert f"round trip (API {url}, iam); Lambda reports fetch -, endpoint " in result.out
    (event,) = function.events
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == JPEG
    assert event["headers"]["Content-Type"] == "image/jpeg"
    assert event["queryStringParameters"] == {"top_k": "2"}
    signer = fake.real.get_credentials().access_key
    assert event["requestContext"]["identity"]["caller"] == signer  # the session's credentials signed it
    (sent,) = function.endpoint.sent
    assert (sent["Body"], sent["CustomAttributes"]) == (JPEG, "top_k=2")
    assert fake.stacks.asked == [NAMES.stack("invoker")]
    assert "lambda" not in fake.created


def test_a_url_goes_to_the_api_as_json(fake, run_cli):
    with front(fake) as (_, function):
        function.settings = handler.Settings(endpoint_name=NAMES.endpoint)
        result = run_cli("predict", URL, "--top-k", "3", "--json")
    (event,) = function.events
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == {"url": URL, "top_k": 3}
    assert event["headers"]["Content-Type"] == "application/json"
    assert result.code == EXIT_FAILED  # the handler tried to fetch it (no network here): its error answer is shown
    assert result.err.startswith("error: prediction failed, HTTP ")


def test_api_url_names_the_api_without_reading_the_stacks(fake, run_cli, tmp_path):
    image = tmp_path / "dog.png"
    image.write_bytes(JPEG)
    with front(fake) as (api, _):
        result = run_cli("predict", "--api-url", api.predict_url, str(image))
    assert result.code == 0, result.err
    assert fake.stacks.asked == []


@pytest.mark.parametrize("url", ["http://example.com/v1/predict", "ftp://127.0.0.1/v1/predict", "https://"])
def test_api_url_must_be_https_or_loopback(url, fake, run_cli, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    result = run_cli("predict", "--api-url", url, str(image))
    assert result.code == EXIT_USAGE
    assert result.err == (
        f"error: --api-url {url}: accepted is an https:// URL, or http:// on a loopback address (local mode)\n"
    )


def test_a_signature_for_another_region_is_refused_with_what_to_check(fake, run_cli, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    with front(fake, region="us-east-1") as (_, function):
        result = run_cli("predict", str(image))
    assert result.code == EXIT_AWS
    assert result.err.startswith(
        f"error: the API refused the request (HTTP 403): Credential should be scoped to a valid region, not "
        f"'{REGION}'. (request "
    )
    assert "execute-api:Invoke" in result.err
    assert function.events == []


def test_the_function_s_error_answer_through_the_api(fake, run_cli, tmp_path):
    page = tmp_path / "page.jpg"
    page.write_bytes(HTML)
    with front(fake) as (_, function):
        result = run_cli("predict", str(page))
    assert result.code == EXIT_FAILED
    assert result.err.startswith(
        "error: prediction failed, HTTP 415: the request body is not an image in a supported format"
    )
    assert function.endpoint.sent == []


def test_throttling_says_to_retry(fake, run_cli, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    with front(fake, "api_throttle_rate_limit=1", "api_throttle_burst_limit=1"):
        assert run_cli("predict", str(image)).code == 0
        result = run_cli("predict", str(image))
    assert result.code == EXIT_FAILED
    assert result.err.startswith("error: the API is throttling requests (HTTP 429): Too Many Requests (request ")


# --- api_auth=api_key and cognito: what is sent (a recording server stands in for the API and the pool) -----------


class Recording(http.server.ThreadingHTTPServer):
    """Answers predictions, and a token at /oauth2/token; records (path, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, bytes]] = []
        recording = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recording.requests.append((self.path, dict(self.headers.items()), body))
                answer = {"access_token": "token-123"} if self.path == "/oauth2/token" else ANSWER
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def recording() -> Iterator[Recording]:
    server = Recording()
    yield server
    server.shutdown()
    server.server_close()


def test_api_key_from_the_stack_goes_in_x_api_key(fake, run_cli, recording, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    fake.stacks.stacks[NAMES.stack("invoker")] |= {"PredictUrl": recording.url + "/v1/predict", "ApiKeyId": "k1"}
    fake.stub("apigateway").add_response(
        "get_api_key", {"id": "k1", "value": "the-key"}, {"apiKey": "k1", "includeValue": True}
    )
    result = run_cli("-c", "api_auth=api_key", "predict", str(image))
    assert result.code == 0, result.err
    ((path, headers, body),) = recording.requests
    assert (path, headers["X-Api-Key"], body) == ("/v1/predict", "the-key", JPEG)
    assert "Authorization" not in headers


def test_api_key_from_the_environment_needs_no_lookup(fake, run_cli, recording, tmp_path, monkeypatch):
    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    monkeypatch.setenv("DOGBREEDS_API_KEY", "env-key")
    result = run_cli("-c", "api_auth=api_key", "predict", "--api-url", recording.url + "/v1/predict", str(image))
    assert result.code == 0, result.err
    assert recording.requests[0][1]["X-Api-Key"] == "env-key"
    assert "apigateway" not in fake.created


def test_cognito_gets_a_client_credentials_token_then_calls_the_api_with_it(fake, run_cli, recording, tmp_path):
    image = tmp_path / "dog.jpg"
    image.write_bytes(JPEG)
    fake.stacks.stacks[NAMES.stack("invoker")] |= {
        "PredictUrl": recording.url + "/v1/predict",
        "UserPoolId": "eu-west-1_pool",
        "UserPoolClientId": "client-1",
        "TokenUrl": recording.url + "/oauth2/token",
    }
    fake.stub("cognito-idp").add_response(
        "describe_user_pool_client",
        {"UserPoolClient": {"ClientId": "client-1", "ClientSecret": "s3cret-of-the-app-client-24"}},
        {"UserPoolId": "eu-west-1_pool", "ClientId": "client-1"},
    )
    result = run_cli("-c", "api_auth=cognito", "predict", str(image))
    assert result.code == 0, result.err
    (token_path, token_headers, form), (api_path, api_headers, _) = recording.requests
    assert token_path == "/oauth2/token"  # noqa: S105 (a path)
    assert (
        token_headers["Authorization"] == "Basic " + base64.b64encode(b"client-1:s3cret-of-the-app-client-24").decode()
    )
    assert form == b"grant_type=client_credentials&scope=dogbreeds%2Fpredict"
    assert (api_path, api_headers["Authorization"]) == ("/v1/predict", "token-123")
