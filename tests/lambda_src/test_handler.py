"""The handler, end to end: events in every shape, the real boto3 client against the loopback runtime,
and every error mapped to its status with a clean one-line message."""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import boto3
import botocore.exceptions
import pytest

import fetch
import handler
from dogbreeds.local.runtime import ModelResponse, ServiceFault
from tests.fake_runtime import CREDENTIALS, ENDPOINT
from tests.lambda_src.servers import (
    BMP,
    GIF,
    HTML,
    JPEG,
    MODEL,
    PNG,
    PREDICTIONS,
    TIFF,
    WEBP,
    FakeContext,
    ImageServer,
    body_of,
    log_lines,
    predictions,
    serve,
    toolkit_error,
)

B64 = base64.b64encode(JPEG).decode()


def call(event, settings, client, **kwargs) -> tuple[int, dict]:
    response = handler.handle(event, FakeContext(), settings=settings, client=client, **kwargs)
    assert set(response) == {"statusCode", "headers", "body"}
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], body_of(response)


def assert_error(status_body, status: int, message: str) -> None:
    got, body = status_body
    assert got == status, body
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == "req-0001"
    assert body["error"] == message or body["error"].startswith(message), body["error"]
    assert "Traceback" not in body["error"]
    assert "\n" not in body["error"]


# --- success ------------------------------------------------------------------------------------


def test_image_base64_gets_labelled_predictions(settings, client, model):
    status, body = call({"image_base64": B64}, settings, client)
    assert status == 200
    assert body["predictions"] == PREDICTIONS
    assert body["model"] == MODEL
    assert body["endpoint"] == ENDPOINT
    latency = body["latency_ms"]
    assert latency["fetch"] is None
    assert isinstance(latency["endpoint"], float)
    assert latency["total"] >= latency["endpoint"] > 0
    (sent,) = model.calls
    assert sent.endpoint_name == ENDPOINT
    assert sent.body == JPEG  # the image's own bytes, not base64
    assert sent.content_type == "application/x-image"
    assert sent.accept == "application/json"
    assert sent.custom_attributes is None  # no top_k in the event: the endpoint's own default applies


def test_the_original_test_event_fetches_the_url(settings, client, model):
    with ImageServer({"/Carolina-Dog-standing-outdoors.jpg": serve(JPEG)}) as images:
        local = dataclasses.replace(settings, allow_loopback=True, allow_http=True)
        status, body = call({"url": images.url("/Carolina-Dog-standing-outdoors.jpg")}, local, client)
    assert status == 200, body
    assert body["predictions"][0]["label"] == "Carolina dog"
    assert isinstance(body["latency_ms"]["fetch"], float)
    assert model.calls[0].body == JPEG


@pytest.mark.parametrize("image", [JPEG, PNG, GIF, WEBP, BMP, TIFF], ids=fetch.FORMATS)
def test_every_format_the_endpoint_decodes_is_sent(image, settings, client, model):
    status, _ = call({"image_base64": base64.b64encode(image).decode()}, settings, client)
    assert status == 200
    assert model.calls[0].body == image


@pytest.mark.parametrize("top_k", [1, 3, 133, "7"])
def test_top_k_is_passed_as_custom_attributes(top_k, settings, client, model):
    status, _ = call({"image_base64": B64, "top_k": top_k}, settings, client)
    assert status == 200
    assert model.calls[0].custom_attributes == f"top_k={top_k}"


def test_the_endpoint_checks_the_upper_bound_of_top_k(settings, client, model):
    model.answers = [toolkit_error(400, "top_k must be an integer from 1 to 133, got '200'")]
    assert_error(
        call({"image_base64": B64, "top_k": 200}, settings, client), 400, "top_k must be an integer from 1 to 133"
    )
    assert model.calls[0].custom_attributes == "top_k=200"


# --- proxy event shapes -------------------------------------------------------------------------


def rest_v1(
    body: str | None, *, encoded: bool = False, content_type: str = "application/json", query=None, received=None
) -> dict:
    """A REST API proxy event (payload format 1.0); the front door's events are tested whole in tests/local."""
    context = {"requestId": "gw-1", "stage": "v1", "httpMethod": "POST", "resourcePath": "/predict"}
    if received is not None:
        context["requestTimeEpoch"] = received
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": content_type, "Host": "abc.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {"Content-Type": [content_type]},
        "queryStringParameters": query,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": encoded,
    }


def http_v2(body: str | None, *, encoded: bool = False, content_type: str = "application/json", query=None) -> dict:
    return {
        "version": "2.0",
        "routeKey": "POST /classify",
        "rawPath": "/classify",
        "rawQueryString": "",
        "headers": {"content-type": content_type},
        "queryStringParameters": query,
        "requestContext": {"http": {"method": "POST", "path": "/classify"}, "requestId": "gw-2"},
        "body": body,
        "isBase64Encoded": encoded,
    }


def function_url(body: str | None, *, encoded: bool = False, content_type: str = "application/json") -> dict:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": {"content-type": content_type, "host": "abc.lambda-url.eu-west-1.on.aws"},
        "requestContext": {
            "domainName": "abc.lambda-url.eu-west-1.on.aws",
            "http": {"method": "POST", "path": "/"},
            "requestId": "fn-1",
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


JSON_BODY = json.dumps({"image_base64": B64, "top_k": 2})


@pytest.mark.parametrize(
    "event",
    [
        rest_v1(JSON_BODY),
        rest_v1(JSON_BODY, content_type="application/json; charset=utf-8"),
        rest_v1(base64.b64encode(JSON_BODY.encode()).decode(), encoded=True),
    ],
    ids=["rest-v1", "charset", "rest-v1-base64"],
)
def test_proxy_events_with_a_json_body(event, settings, client, model):
    status, body = call(event, settings, client)
    assert status == 200, body
    assert body["predictions"] == PREDICTIONS
    assert model.calls[0].body == JPEG
    assert model.calls[0].custom_attributes == "top_k=2"


@pytest.mark.parametrize(
    "content_type",
    ["image/jpeg", "image/png; charset=binary", "image/webp", "application/octet-stream", "application/x-image"],
)
def test_proxy_events_with_a_raw_image_body(content_type, settings, client, model):
    event = rest_v1(B64, encoded=True, content_type=content_type, query={"top_k": "3"})
    status, body = call(event, settings, client)
    assert status == 200, body
    assert model.calls[0].body == JPEG
    assert model.calls[0].custom_attributes == "top_k=3"


def test_a_proxy_json_body_with_a_url(settings, client, model):
    with ImageServer({"/dog.png": serve(PNG, "image/png")}) as images:
        local = dataclasses.replace(settings, allow_loopback=True, allow_http=True)
        status, _ = call(rest_v1(json.dumps({"url": images.url("/dog.png")})), local, client)
    assert status == 200
    assert model.calls[0].body == PNG


@pytest.mark.parametrize(
    "event",
    [http_v2(JSON_BODY), function_url(JSON_BODY), http_v2(B64, encoded=True, content_type="image/jpeg")],
    ids=["http-api", "function-url", "http-api-raw"],
)
def test_events_of_apis_the_app_does_not_deploy_are_refused(event, settings, client, model):
    assert_error(
        call(event, settings, client),
        400,
        "HTTP API and function URL events (payload format 2.0) are not accepted: this function is called through a "
        f"REST API, or directly with {handler.EVENT_SHAPES}",
    )
    assert model.calls == []


def test_a_bare_body_is_not_a_proxy_event(settings, client, model):
    assert_error(
        call({"body": JSON_BODY}, settings, client),
        400,
        f"the event has neither url nor image_base64: send {handler.EVENT_SHAPES}",
    )


# --- bad events ---------------------------------------------------------------------------------

SHAPES = handler.EVENT_SHAPES


@pytest.mark.parametrize(
    ("event", "status", "message"),
    [
        ({}, 400, f"the event has neither url nor image_base64: send {SHAPES}"),
        ({"image": B64}, 400, "the event has neither url nor image_base64"),
        ({"url": "https://images.example/a.jpg", "image_base64": B64}, 400, "send exactly one of url and image_base64"),
        (["https://images.example/a.jpg"], 400, f"the event must be a JSON object: send {SHAPES}"),
        ("https://images.example/a.jpg", 400, "the event must be a JSON object"),
        (None, 400, "the event must be a JSON object"),
        ({"image_base64": "not base64!!"}, 400, "image_base64 is not valid base64 ("),
        ({"image_base64": "abc"}, 400, "image_base64 is not valid base64 ("),
        ({"image_base64": 42}, 400, "image_base64 must be a base64 string, got int"),
        ({"image_base64": ""}, 400, "image_base64 is empty; send the image's bytes"),
        ({"image_base64": "  \n "}, 400, "image_base64 is empty"),
        (
            {"image_base64": base64.b64encode(HTML).decode()},
            415,
            "image_base64 is not an image in a supported format: send JPEG, PNG, GIF, WebP, BMP, TIFF",
        ),
        ({"image_base64": base64.b64encode(JPEG + bytes(70_000)).decode()}, 413, "image_base64 holds about 70,"),
        (
            {"image_base64": B64, "top_k": 0},
            400,
            "top_k must be a whole number from 1 to the model's number of classes",
        ),
        ({"image_base64": B64, "top_k": -3}, 400, "top_k must be a whole number"),
        ({"image_base64": B64, "top_k": 2.5}, 400, "top_k must be a whole number"),
        ({"image_base64": B64, "top_k": True}, 400, "top_k must be a whole number"),
        ({"image_base64": B64, "top_k": "three"}, 400, "top_k must be a whole number"),
        ({"image_base64": B64, "top_k": 10**40}, 400, "top_k must be a whole number"),
        (rest_v1("{not json"), 400, "the request body is not valid JSON (Expecting property name"),
        (rest_v1("[1, 2]"), 400, f"the request body must be a JSON object: send {SHAPES}"),
        (rest_v1(None), 400, f"the request body is empty: send {SHAPES}"),
        (rest_v1("%%%", encoded=True), 400, "the request body is not valid base64"),
        (
            rest_v1(base64.b64encode(HTML).decode(), encoded=True, content_type="image/jpeg"),
            415,
            "the request body is not an image in a supported format",
        ),
        (rest_v1("", content_type="image/jpeg"), 400, "the request body is empty"),
        (rest_v1(json.dumps({"url": 7})), 400, "url must be a string, got int"),
    ],
)
def test_bad_events_are_answered_with_what_is_accepted(event, status, message, settings, client, model):
    assert_error(call(event, settings, client), status, message)
    assert model.calls == []


def test_data_urls_and_line_wrapped_base64_are_accepted(settings, client, model):
    wrapped = "\n".join(B64[i : i + 20] for i in range(0, len(B64), 20))
    for value in (f"data:image/jpeg;base64,{B64}", wrapped, base64.urlsafe_b64encode(JPEG).decode()):
        status, _ = call({"image_base64": value}, settings, client)
        assert status == 200
    assert [c.body for c in model.calls] == [JPEG, JPEG, JPEG]


# --- endpoint errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "the request body could not be decoded: image file is truncated"),
        (413, "the request body has too many pixels (20000x20000); at most 40,000,000 (width x height) are accepted"),
        (415, "content type application/x-image is not supported; send one of image/jpeg, image/png"),
    ],
)
def test_the_endpoints_4xx_is_passed_on_with_its_first_line_only(status, message, settings, client, model, capsys):
    model.answers = [toolkit_error(status, message)]
    got, body = call({"image_base64": B64}, settings, client)
    assert (got, body) == (status, {"error": message, "request_id": "req-0001"})
    assert len(model.calls) == 1  # model errors are never retried
    (line,) = log_lines(capsys.readouterr().out)
    assert line["model_status"] == status
    assert "Traceback (most recent call last)" in line["model_message"]  # the log keeps it all


@pytest.mark.parametrize("answer", [toolkit_error(500, "CUDA error: out of memory"), RuntimeError("worker died")])
def test_a_model_failure_is_a_502_without_its_internals(answer, settings, client, model):
    model.answers = [answer]
    assert_error(
        call({"image_base64": B64}, settings, client),
        502,
        "the model failed on this request (status 500); retry later",
    )
    assert len(model.calls) == 1


def test_a_model_4xx_with_an_empty_body_is_a_502(settings, client, model):
    model.answers = [ModelResponse(400, "text/plain", b"")]
    assert_error(call({"image_base64": B64}, settings, client), 502, "the model failed on this request (status 400)")


def test_an_unknown_endpoint_is_a_502(settings, client, model):
    missing = dataclasses.replace(settings, endpoint_name="nobody-home")
    assert_error(
        call({"image_base64": B64}, missing, client), 502, "the model endpoint does not exist or is not in service"
    )
    assert model.calls == []


def test_throttling_is_retried_then_answered_429(settings, client, model, fast_backoff):
    model.answers = [ServiceFault.throttling()]
    response = handler.handle({"image_base64": B64}, FakeContext(), settings=settings, client=client)
    assert_error(
        (response["statusCode"], body_of(response)),
        429,
        "the model endpoint is busy (throttled); retry in a few seconds",
    )
    assert response["headers"]["Retry-After"] == "2"
    assert len(model.calls) == 3  # the client's total_max_attempts


def test_throttling_that_clears_within_the_retries_succeeds(settings, client, model, fast_backoff):
    model.answers = [ServiceFault.throttling(), ServiceFault.throttling(), predictions()]
    status, body = call({"image_base64": B64}, settings, client)
    assert status == 200
    assert body["predictions"] == PREDICTIONS
    assert len(model.calls) == 3


@pytest.mark.parametrize(("fault", "attempts"), [(ServiceFault.unavailable(), 3), (ServiceFault.model_not_ready(), 1)])
def test_an_unavailable_endpoint_is_a_503(fault, attempts, settings, client, model, fast_backoff):
    model.answers = [fault]
    assert_error(
        call({"image_base64": B64}, settings, client), 503, "the model endpoint is not available right now; retry later"
    )
    assert len(model.calls) == attempts


def test_an_internal_failure_of_the_service_is_a_502_after_retries(settings, client, model, fast_backoff):
    model.answers = [ServiceFault.internal_failure()]
    assert_error(call({"image_base64": B64}, settings, client), 502, "the model endpoint failed to answer")
    assert len(model.calls) == 3


def test_an_endpoint_slower_than_the_read_timeout_is_a_504_and_never_retried(fake_runtime, settings, model):
    # A slow image would be as slow again: calling again would only occupy another model worker.
    impatient = dataclasses.replace(settings, endpoint_timeout=0.2, endpoint_attempts=3)
    model.delay = 0.5
    client = handler.make_client(impatient, endpoint_url=fake_runtime.url, **CREDENTIALS)
    assert_error(
        call({"image_base64": B64}, impatient, client),
        504,
        "the model did not answer within 0.2 s: this image takes it too long (it is not retried); "
        "send a smaller or more ordinary photo",
    )
    assert len(model.calls) == 1


class ShortOnTime(FakeContext):
    def get_remaining_time_in_millis(self) -> int:
        return 2_500  # less than another call could take: its read timeout of 7 s, and a margin of 1 s


def test_no_call_is_retried_that_could_not_end_before_the_lambdas_deadline(settings, client, model, fast_backoff):
    model.answers = [ServiceFault.throttling()]
    response = handler.handle({"image_base64": B64}, ShortOnTime(), settings=settings, client=client)
    assert response["statusCode"] == 429
    assert len(model.calls) == 1


def test_no_call_is_retried_that_could_not_end_before_api_gateway_stops_waiting(settings, client, model, fast_backoff):
    """The Lambda has 30 s, API Gateway waits 29 s from when it received the request: a retry that would end after
    that is not started, and the client gets the function's 429 instead of the gateway's 504."""
    model.answers = [ServiceFault.throttling(), ServiceFault.throttling(), predictions()]
    api = dataclasses.replace(settings, endpoint_timeout=7.0, api_timeout=29.0)
    received_22_s_ago = int((time.time() - 22) * 1000)
    event = rest_v1(JSON_BODY, received=received_22_s_ago)
    response = handler.handle(event, FakeContext(), settings=api, client=client)
    assert response["statusCode"] == 429
    assert len(model.calls) == 1  # 22 s waited + 7 s + 1 s margin > 29 s: no second call
    fresh = rest_v1(JSON_BODY, received=int(time.time() * 1000))
    assert handler.handle(fresh, FakeContext(), settings=api, client=client)["statusCode"] == 200
    assert len(model.calls) == 3  # the fresh request had the time for a retry


@pytest.mark.parametrize("received", [None, "soon", True, -5, 10**20, 1.5])
def test_a_request_time_that_is_not_api_gateways_counts_from_now(received, settings):
    event = rest_v1(JSON_BODY, received=received)
    request = handler.parse_event(event, settings)
    assert abs(request.received_at - time.time()) < 5
    assert handler.parse_event({"image_base64": B64}, settings).received_at is None  # a direct event: no API


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="https://runtime"), False),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="https://runtime"), False),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="https://runtime"), True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://runtime"), True),
    ],
)
def test_only_calls_that_never_reached_the_model_are_retried(error, retried):
    assert (handler.retry_delay(error, 1) is not None) is retried


def test_an_unreachable_endpoint_is_a_502(settings):
    client = handler.make_client(
        dataclasses.replace(settings, endpoint_attempts=1), endpoint_url="http://127.0.0.1:9", **CREDENTIALS
    )
    assert_error(call({"image_base64": B64}, settings, client), 502, "the model endpoint could not be reached")


@pytest.mark.parametrize(
    "answer",
    [b"<html>502 Bad Gateway</html>", b'{"predictions": "none"}', b'{"model": {}}', b"[]"],
)
def test_an_answer_that_is_not_predictions_is_a_502(answer, settings, client, model):
    model.answers = [ModelResponse(200, "application/json", answer)]
    assert_error(
        call({"image_base64": B64}, settings, client),
        502,
        "the model endpoint gave an answer that is not predictions",
    )


class ExplodingClient:
    def invoke_endpoint(self, **kwargs):
        raise KeyError("secret internal detail")


def test_an_unexpected_exception_is_a_500_with_the_details_in_the_log_only(settings, capsys):
    response = handler.handle(
        {"image_base64": B64}, FakeContext("req-boom"), settings=settings, client=ExplodingClient()
    )
    assert response["statusCode"] == 500
    assert body_of(response) == {"error": "internal error; its log has the details", "request_id": "req-boom"}
    assert "secret" not in response["body"]
    assert "Traceback" not in response["body"]
    (line,) = log_lines(capsys.readouterr().out)
    assert line["level"] == "ERROR"
    assert line["request_id"] == "req-boom"
    assert line["exception"] == "KeyError"
    assert "secret internal detail" in line["traceback"]


# --- logging, configuration, the default client -------------------------------------------------


def test_every_log_line_is_one_json_object_with_level_message_and_request_id(settings, client, model, capsys):
    call({"image_base64": B64}, settings, client)
    call({"image_base64": "???"}, settings, client)
    lines = list(log_lines(capsys.readouterr().out))
    assert [(line["level"], line["message"], line["status"]) for line in lines] == [
        ("INFO", "answered", 200),
        ("WARNING", "failed", 400),
    ]
    assert all(line["request_id"] == "req-0001" for line in lines)
    assert lines[0]["source"] == "image_base64"
    assert lines[0]["image_bytes"] == len(JPEG)


def test_settings_from_the_stacks_environment():
    settings = handler.Settings.from_env(
        {
            "ENDPOINT_NAME": "dogbreeds",
            "MAX_IMAGE_BYTES": "4194304",
            "ALLOW_HTTP_URLS": "false",
            "FETCH_TIMEOUT_SECONDS": "5",
            "ENDPOINT_TIMEOUT_SECONDS": "7",
            "ENDPOINT_MAX_ATTEMPTS": "3",
            "API_TIMEOUT_SECONDS": "29",
        }
    )
    assert settings == handler.Settings(
        endpoint_name="dogbreeds",
        max_image_bytes=4194304,
        allow_http=False,
        fetch_timeout=5.0,
        endpoint_timeout=7.0,
        endpoint_attempts=3,
        api_timeout=29.0,
    )
    assert handler.Settings.from_env({"ENDPOINT_NAME": "e"}).api_timeout is None
    assert handler.Settings.from_env({"ENDPOINT_NAME": "e", "ALLOW_HTTP_URLS": "true"}).allow_http


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "ENDPOINT_NAME is not set"),
        ({"ENDPOINT_NAME": "e", "ENDPOINT_MAX_ATTEMPTS": "three"}, "ENDPOINT_MAX_ATTEMPTS must be a positive int"),
        ({"ENDPOINT_NAME": "e", "MAX_IMAGE_BYTES": "0"}, "MAX_IMAGE_BYTES must be a positive int"),
        ({"ENDPOINT_NAME": "e", "FETCH_TIMEOUT_SECONDS": "-1"}, "FETCH_TIMEOUT_SECONDS must be a positive float"),
        ({"ENDPOINT_NAME": "e", "ALLOW_HTTP_URLS": "1"}, "ALLOW_HTTP_URLS must be true or false"),
    ],
)
def test_bad_settings_are_refused_by_name(env, message):
    with pytest.raises(handler.ConfigError, match=message):
        handler.Settings.from_env(env)


@pytest.fixture
def fresh_module(monkeypatch):
    """The handler module as a new execution environment has it: no settings, no client yet."""
    monkeypatch.setattr(handler, "_settings", None)
    monkeypatch.setattr(handler, "_client", None)
    for key in ("AWS_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


def test_a_misconfigured_function_answers_500_and_logs_why(fresh_module, monkeypatch, capsys):
    monkeypatch.delenv("ENDPOINT_NAME", raising=False)
    response = handler.handler({"image_base64": B64}, FakeContext())
    assert response["statusCode"] == 500
    assert body_of(response)["error"] == "the function is misconfigured; its log has the details"
    (line,) = log_lines(capsys.readouterr().out)
    assert line["detail"] == "ENDPOINT_NAME is not set"


def test_the_entry_point_reads_the_environment_and_honours_the_runtime_endpoint_url(
    fresh_module, monkeypatch, fake_runtime, model
):
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    monkeypatch.setenv("ENDPOINT_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", fake_runtime.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    first = handler.handler({"image_base64": B64}, FakeContext())
    client = handler._client
    second = handler.handler({"image_base64": B64}, FakeContext())
    assert first["statusCode"] == second["statusCode"] == 200
    assert handler._client is client  # created once, reused by the warm invocation
    assert client.meta.endpoint_url == fake_runtime.url
    assert [call.custom_attributes for call in model.calls] == [None, None]
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 7.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}  # invoke decides on retries


def test_the_synthesized_function_never_enables_local_mode(assembly):
    template = assembly.template("invoker")
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == 1
    (function,) = functions
    variables = function["Properties"]["Environment"]["Variables"]
    assert function["Properties"]["Handler"] == "handler.handler"
    assert "LOCAL_MODE_ALLOW_LOOPBACK" not in variables
    assert set(variables) == {
        "ENDPOINT_NAME",
        "MAX_IMAGE_BYTES",
        "ALLOW_HTTP_URLS",
        "FETCH_TIMEOUT_SECONDS",
        "ENDPOINT_TIMEOUT_SECONDS",
        "ENDPOINT_MAX_ATTEMPTS",
        "API_TIMEOUT_SECONDS",
    }
    assert variables["ALLOW_HTTP_URLS"] in ("true", "false")
    # Every variable the stack sets is one the handler reads correctly.
    concrete = {k: v for k, v in variables.items() if isinstance(v, str)}
    handler.Settings.from_env({"ENDPOINT_NAME": "from-the-template", **concrete})
