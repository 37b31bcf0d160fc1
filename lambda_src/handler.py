"""The invoker Lambda: an image (a URL to fetch, or its bytes) in, the endpoint's labelled predictions out.

Events
------
- direct invocation (the console's test event, ``aws lambda invoke``): ``{"url": "https://..."}`` or
  ``{"image_base64": "..."}``, optional ``"top_k"``;
- the proxy event of the REST API in front of the function (API Gateway's Lambda proxy integration,
  payload format 1.0): the same JSON as the body, or a raw image as the body with an ``image/*``,
  ``application/x-image`` or ``application/octet-stream`` content type (base64-encoded, with
  ``isBase64Encoded``, as API Gateway hands over its binary media types), ``top_k`` then from the query
  string. The app deploys no HTTP API or function URL: their events (payload format 2.0) are refused.

``top_k`` (1 up to the model's number of classes, which the endpoint checks) reaches the endpoint as
``CustomAttributes: top_k=N``; without it, the endpoint's own default (its ``TOP_K``, capped at its
number of classes; the function has no default of its own, which could exceed them). The image goes to
the endpoint as its bytes, ``ContentType: application/x-image``, ``Accept: application/json``.

Answer
------
``{"statusCode", "headers", "body"}``, the body JSON:

- 200: ``{"predictions": [...], "model": {...}}`` as the endpoint answered, with ``"endpoint"`` (its
  name) and ``"latency_ms": {"fetch": float | null, "endpoint": float, "total": float}``;
- otherwise: ``{"error": "<what was wrong and what is accepted>", "request_id": "<aws_request_id>"}``;
  ``status_of`` maps every exception to its status code, in one place. ``parse_event`` is the one
  boundary of the event's shape: whatever is wrong with it is a ``BadRequest`` (400), never a 500. A
  message quotes what the caller sent only through ``fetch.shown`` (ASCII, at most 100 characters).
  No stack trace ever reaches the client; the log (JSON lines on stdout) has the details.

Retries
-------
The client itself never retries (botocore's would retry a read timeout, so one slow hostile image would
occupy several model workers); ``invoke`` retries only what the model never saw or refused at once:
throttling, the service's own 5xx (not a ``ModelError``) and a connection that was never made, with
botocore's back-off (up to 2^(n-2) s before call n), and only while the Lambda has the time for another
whole call. A read timeout ends the call: a 504 that says the model was too slow for this image.

Environment
-----------
``ENDPOINT_NAME`` (required), ``MAX_IMAGE_BYTES`` (default 4 MiB), ``ALLOW_HTTP_URLS``
(``true``/``false``), ``FETCH_TIMEOUT_SECONDS`` (default 5; also the whole fetch's deadline),
``ENDPOINT_TIMEOUT_SECONDS`` (read timeout of one endpoint call, default 7), ``ENDPOINT_MAX_ATTEMPTS``
(default 3, the first call included; see "Retries"), ``API_TIMEOUT_SECONDS`` (how long API Gateway waits
for the function: for a proxy event, a retry that would end later is not started, so that the client gets
the function's answer rather than the gateway's timeout; unset: no such limit), ``LOG_LEVEL`` (default INFO)
and, for the local demo only, ``LOCAL_MODE_ALLOW_LOOPBACK=true`` (the fetch may then reach 127.0.0.0/8 and
::1). The boto3 client honours ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import random
import re
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.exceptions import ConnectionError as EndpointUnreachable

import fetch

if TYPE_CHECKING:
    import ssl

IMAGE_CONTENT_TYPE = "application/x-image"
# Content types of a raw image body, besides image/*.
RAW_IMAGE_TYPES = (IMAGE_CONTENT_TYPE, "application/octet-stream")
EVENT_SHAPES = '{"url": "https://..."} or {"image_base64": "<base64>"}, with an optional "top_k"'
MAX_TOP_K = 10_000  # a sanity bound for the header; the endpoint checks the real one (its classes)
RETRY_AFTER_SECONDS = "2"
CONNECT_TIMEOUT_SECONDS = 2.0
_MODEL_STATUSES_PASSED_ON = (400, 413, 415)
_MESSAGE_LIMIT = 500
_THROTTLING = ("ThrottlingException", "ThrottledException", "TooManyRequestsException", "Throttling")
_SERVICE_FAULTS = (500, 502, 503, 504)  # answered by SageMaker itself (a model's own errors are a ModelError)
_JSON_BODY_LIMIT_FACTOR = 2  # a JSON body carries the image in base64 (4/3 of its size) and a little more
# botocore's standard back-off: before call n, a random part of min(base * 2^(n-2), 20) seconds.
BACKOFF_BASE_SECONDS = {"throttling": 1.0, "transient": 0.05}
MAX_BACKOFF_SECONDS = 20.0
_DEADLINE_MARGIN_SECONDS = 1.0  # kept for answering after the last call


# --- configuration and the typed request --------------------------------------------------------


class ConfigError(Exception):
    """The function's environment is wrong: the operator's to fix."""


class BadRequest(Exception):
    """The event is malformed: the caller's to fix."""


class UnforeseenShape(BadRequest):
    """The event failed ``parse_event`` where no check foresaw it; the log gets its cause."""


class BadEndpointAnswer(Exception):
    """The endpoint answered 200 with something that is not predictions."""


class EndpointTooSlow(Exception):
    """The model did not answer within the read timeout: the image is too costly for it, and not retried."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within the read timeout of {seconds:g} s")
        self.seconds = seconds


@dataclass(frozen=True)
class Settings:
    endpoint_name: str
    max_image_bytes: int = 4 * 1024 * 1024
    allow_http: bool = False
    fetch_timeout: float = 5.0
    allow_loopback: bool = False
    endpoint_timeout: float = 7.0
    endpoint_attempts: int = 3
    api_timeout: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        name = env.get("ENDPOINT_NAME", "").strip()
        if not name:
            raise ConfigError("ENDPOINT_NAME is not set")
        return cls(
            endpoint_name=name,
            max_image_bytes=_env_number(env, "MAX_IMAGE_BYTES", cls.max_image_bytes, int),
            allow_http=_env_flag(env, "ALLOW_HTTP_URLS"),
            fetch_timeout=_env_number(env, "FETCH_TIMEOUT_SECONDS", cls.fetch_timeout, float),
            allow_loopback=_env_flag(env, "LOCAL_MODE_ALLOW_LOOPBACK"),
            endpoint_timeout=_env_number(env, "ENDPOINT_TIMEOUT_SECONDS", cls.endpoint_timeout, float),
            endpoint_attempts=_env_number(env, "ENDPOINT_MAX_ATTEMPTS", cls.endpoint_attempts, int),
            api_timeout=_env_number(env, "API_TIMEOUT_SECONDS", None, float),
        )


def _env_number(env: Mapping[str, str], key: str, default: Any, kind: type) -> Any:
    value = env.get(key, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not number > 0:
        raise ConfigError(f"{key} must be a positive {kind.__name__}, got {fetch.shown(value)}")
    return number


def _env_flag(env: Mapping[str, str], key: str) -> bool:
    value = env.get(key, "false").strip().lower()
    if value not in ("true", "false", ""):
        raise ConfigError(f"{key} must be true or false, got {fetch.shown(value)}")
    return value == "true"


@dataclass(frozen=True)
class Request:
    """What the event asks for: exactly one of ``url`` and ``image``."""

    source: str  # "url", "image_base64" or "body" (a raw image in a proxy event)
    url: str | None = None
    image: bytes | None = None
    top_k: int | None = None
    received_at: float | None = None  # proxy events: when API Gateway received the request (epoch seconds)


def parse_event(event: object, settings: Settings) -> Request:
    """The request in ``event`` (direct, or a REST API proxy event), validated: the one boundary of the event's
    shape, where anything wrong with it becomes a ``BadRequest`` (or one of the fetch's refusals: too large,
    not an image)."""
    try:
        return _parse_event(event, settings)
    except (BadRequest, fetch.FetchError):
        raise
    except Exception as err:  # a shape no check foresaw: still the caller's to fix, and logged with its cause
        raise UnforeseenShape(f"the event could not be read ({type(err).__name__}): send {EVENT_SHAPES}") from err


def _parse_event(event: object, settings: Settings) -> Request:
    if not isinstance(event, dict):
        raise BadRequest(f"the event must be a JSON object: send {EVENT_SHAPES}")
    if _is_version_2(event):
        raise BadRequest(
            "HTTP API and function URL events (payload format 2.0) are not accepted: this function is called "
            f"through a REST API, or directly with {EVENT_SHAPES}"
        )
    if not _is_proxy(event):
        return _from_payload(event, settings)
    return _from_proxy(event, settings)


def _from_proxy(event: dict, settings: Settings) -> Request:
    """The request in a REST API proxy event: the body, as API Gateway passes it with binary media types."""
    received_at = _received_at(event.get("requestContext"))
    headers = {key.lower(): value for key, value in _strings("headers", event.get("headers")).items()}
    query = _strings("queryStringParameters", event.get("queryStringParameters"))
    body = event.get("body")
    if body is None or body == "":
        raise BadRequest(f"the request body is empty: send {EVENT_SHAPES}")
    if not isinstance(body, str):
        raise BadRequest(f"the request body must be text: send {EVENT_SHAPES}")
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    encoded = bool(event.get("isBase64Encoded"))
    if media_type.startswith("image/") or media_type in RAW_IMAGE_TYPES:
        data = _base64_bytes("the request body", body, settings.max_image_bytes) if encoded else _utf8(body)
        image = _image_bytes("the request body", data, settings)
        return Request(source="body", image=image, top_k=_top_k(query), received_at=received_at)
    limit = settings.max_image_bytes * _JSON_BODY_LIMIT_FACTOR
    raw = _base64_bytes("the request body", body, limit) if encoded else body
    try:
        payload = json.loads(raw)
    except RecursionError as err:
        raise BadRequest(f"the request body is JSON nested too deeply: send {EVENT_SHAPES}") from err
    except ValueError as err:  # also a body that is not UTF-8, and a number of more than 4300 digits
        raise BadRequest(f"the request body is not valid JSON ({fetch.reason(err)}): send {EVENT_SHAPES}") from err
    if not isinstance(payload, dict):
        raise BadRequest(f"the request body must be a JSON object: send {EVENT_SHAPES}")
    request = _from_payload({"top_k": query.get("top_k"), **payload}, settings)
    return dataclasses.replace(request, received_at=received_at)


def _received_at(context: object) -> float:
    """When API Gateway received the request (its ``requestTimeEpoch``, in ms), else now, in epoch seconds."""
    epoch_ms = context.get("requestTimeEpoch") if isinstance(context, dict) else None
    if isinstance(epoch_ms, int) and not isinstance(epoch_ms, bool) and 0 < epoch_ms < 10**14:
        return epoch_ms / 1000
    return time.time()


def _strings(name: str, value: object) -> dict[str, str]:
    """A proxy event's map of names to strings (``headers``, ``queryStringParameters``); null is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BadRequest(f"the event's {name} must be an object of strings, got {fetch.shown(value)}")
    return value


def _utf8(text: str) -> bytes:
    """A raw body given as text, as bytes; text that cannot be encoded (lone surrogates) is refused."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRequest(
            "the request body holds characters that are not valid Unicode (lone surrogates): send the image "
            "base64-encoded, with isBase64Encoded"
        ) from err


def _is_proxy(event: dict) -> bool:
    """A REST API proxy event (payload format 1.0) has these; a direct event has url or image_base64."""
    return "requestContext" in event or "httpMethod" in event


def _is_version_2(event: dict) -> bool:
    """An HTTP API or function URL event (payload format 2.0)."""
    return event.get("version") == "2.0" or "routeKey" in event or "rawPath" in event


def _from_payload(payload: dict, settings: Settings) -> Request:
    url, encoded = payload.get("url"), payload.get("image_base64")
    if url is not None and encoded is not None:
        raise BadRequest(f"send exactly one of url and image_base64, not both: {EVENT_SHAPES}")
    if url is None and encoded is None:
        raise BadRequest(f"the event has neither url nor image_base64: send {EVENT_SHAPES}")
    top_k = _top_k(payload)
    if url is not None:
        if not isinstance(url, str):
            raise BadRequest(f"url must be a string, got {type(url).__name__}: send {EVENT_SHAPES}")
        if len(url) > fetch.MAX_URL_LENGTH:
            raise BadRequest(f"url has {len(url):,} characters; at most {fetch.MAX_URL_LENGTH:,} are accepted")
        return Request(source="url", url=url, top_k=top_k)
    data = _base64_bytes("image_base64", encoded, settings.max_image_bytes)
    return Request(source="image_base64", image=_image_bytes("image_base64", data, settings), top_k=top_k)


def _top_k(fields: Mapping[str, Any]) -> int | None:
    value = fields.get("top_k")
    if value is None:
        return None
    number = value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):  # no int() of thousands of digits
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_TOP_K:
        raise BadRequest(
            f"top_k must be a whole number from 1 to the model's number of classes, got {fetch.shown(value)}"
        )
    return number


def _base64_bytes(name: str, value: object, limit: int) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a base64 string, got {type(value).__name__}")
    if value.startswith("data:") and ";base64," in value[:100]:  # a data URL, as browsers make them
        value = value.split(",", 1)[1]
    compact = "".join(value.split())  # line breaks are allowed, as base64 tools wrap lines
    if len(compact) * 3 // 4 > limit + 2:  # refused before decoding
        raise fetch.ImageTooLarge(f"{name} holds about {len(compact) * 3 // 4:,} bytes; at most {limit:,} are accepted")
    try:
        altchars = b"-_" if ("-" in compact or "_" in compact) else None
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequest(f"{name} is not valid base64 ({fetch.reason(err)}); send the image's bytes in base64") from err


def _image_bytes(name: str, data: bytes, settings: Settings) -> bytes:
    if not data:
        raise BadRequest(f"{name} is empty; send the image's bytes")
    if len(data) > settings.max_image_bytes:
        raise fetch.ImageTooLarge(f"{name} has {len(data):,} bytes; at most {settings.max_image_bytes:,} are accepted")
    fetch.require_image(data, name)
    return data


# --- the handler --------------------------------------------------------------------------------

_settings: Settings | None = None
_client: Any = None


def handler(event: object, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``handler.handler``): settings from the environment, the shared client."""
    return handle(event, context)


def handle(
    event: object,
    context: Any,
    *,
    settings: Settings | None = None,
    client: Any = None,
    resolver: fetch.Resolver | None = None,
    tls: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """``handler`` with its dependencies injectable: settings, the sagemaker-runtime client, the
    fetch's resolver and TLS context (``ssl.SSLContext``)."""
    started = time.perf_counter()
    request_id = getattr(context, "aws_request_id", None)
    try:
        settings = settings or default_settings()
        request = parse_event(event, settings)
        image, fetch_ms = _image(request, settings, resolver, tls)
        deadline = _deadline(context, request, settings)
        answer, endpoint_ms = invoke(client or default_client(settings), settings, image, request.top_k, deadline)
    except Exception as err:
        return _error_response(err, request_id, started)
    total_ms = _ms_since(started)
    log_event(
        logging.INFO,
        "answered",
        request_id,
        status=200,
        source=request.source,
        image_bytes=len(image),
        top_k=request.top_k,
        fetch_ms=fetch_ms,
        endpoint_ms=endpoint_ms,
        total_ms=total_ms,
    )
    body = {
        "predictions": answer["predictions"],
        "model": answer["model"],
        "endpoint": settings.endpoint_name,
        "latency_ms": {"fetch": fetch_ms, "endpoint": endpoint_ms, "total": total_ms},
    }
    return _response(HTTPStatus.OK, body)


def _image(
    request: Request, settings: Settings, resolver: fetch.Resolver | None, tls: ssl.SSLContext | None
) -> tuple[bytes, float | None]:
    """The image bytes, and how long fetching them took (None when the event held them)."""
    if request.image is not None:
        return request.image, None
    started = time.perf_counter()
    policy = fetch.FetchPolicy(
        max_bytes=settings.max_image_bytes,
        timeout=settings.fetch_timeout,
        allow_http=settings.allow_http,
        allow_loopback=settings.allow_loopback,
        resolver=resolver or fetch.resolve,
        tls=tls,
    )
    fetched = fetch.fetch_image(request.url or "", policy)
    return fetched.data, _ms_since(started)


def invoke(
    client: Any, settings: Settings, image: bytes, top_k: int | None, deadline: float | None = None
) -> tuple[dict[str, Any], float]:
    """The endpoint's answer to ``image``, and its latency in ms (of all calls, back-off included).

    Up to ``settings.endpoint_attempts`` calls, another one only after an error that ``retry_delay`` allows
    and while it fits before ``deadline`` (``time.monotonic()`` seconds; None: no deadline). A read timeout
    is ``EndpointTooSlow``; the last botocore error propagates, its ``attempts`` set.
    """
    arguments = {
        "EndpointName": settings.endpoint_name,
        "Body": image,
        "ContentType": IMAGE_CONTENT_TYPE,
        "Accept": "application/json",
    }
    if top_k is not None:
        arguments["CustomAttributes"] = f"top_k={top_k}"
    started = time.perf_counter()
    attempt = 1
    while True:
        try:
            response = client.invoke_endpoint(**arguments)
            body = response["Body"].read()
            break
        except ReadTimeoutError as err:
            raise EndpointTooSlow(settings.endpoint_timeout) from err
        except (ClientError, BotoCoreError) as err:
            delay = retry_delay(err, attempt) if attempt < settings.endpoint_attempts else None
            if delay is None or not _fits(delay + settings.endpoint_timeout + _DEADLINE_MARGIN_SECONDS, deadline):
                err.attempts = attempt  # type: ignore[attr-defined]  (for the log line)
                raise
        time.sleep(delay)
        attempt += 1
    elapsed = _ms_since(started)
    try:
        answer = json.loads(body)
    except ValueError as err:
        raise BadEndpointAnswer(f"not JSON: {body[:200]!r}") from err
    if not (
        isinstance(answer, dict)
        and isinstance(answer.get("predictions"), list)
        and isinstance(answer.get("model"), dict)
    ):
        raise BadEndpointAnswer(f"no predictions and model: {body[:200]!r}")
    return answer, elapsed


def retry_delay(err: BaseException, attempt: int) -> float | None:
    """Seconds to wait before calling again after ``err`` ended call ``attempt``; None: do not call again.

    Called again: throttling, SageMaker's own 5xx (the request never ran, or the service failed around it)
    and a connection that was never made. Never: a model's error, a read timeout (the model may still be
    working on the image), a connection closed mid-call, or anything else.
    """
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        http_status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "ModelError":
            return None
        if code in _THROTTLING:
            kind = "throttling"
        elif http_status in _SERVICE_FAULTS:
            kind = "transient"
        else:
            return None
    elif isinstance(err, EndpointUnreachable):  # connection refused or timed out: nothing reached the model
        kind = "transient"
    else:
        return None
    return random.random() * min(BACKOFF_BASE_SECONDS[kind] * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def _fits(seconds: float, deadline: float | None) -> bool:
    return deadline is None or time.monotonic() + seconds <= deadline


def _lambda_deadline(context: Any) -> float | None:
    """When the Lambda's time runs out, in ``time.monotonic()`` seconds; None where the context does not say."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return time.monotonic() + remaining() / 1000 if callable(remaining) else None


def _api_deadline(request: Request, settings: Settings) -> float | None:
    """When API Gateway stops waiting for this request (proxy events), in ``time.monotonic()`` seconds."""
    if request.received_at is None or settings.api_timeout is None:
        return None
    waited = min(max(0.0, time.time() - request.received_at), settings.api_timeout)
    return time.monotonic() + settings.api_timeout - waited


def _deadline(context: Any, request: Request, settings: Settings) -> float | None:
    """The earlier of the Lambda's own deadline and API Gateway's; None when neither applies."""
    deadlines = [d for d in (_lambda_deadline(context), _api_deadline(request, settings)) if d is not None]
    return min(deadlines) if deadlines else None


def default_settings() -> Settings:
    """The settings from the environment, read on the first invocation and kept."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def default_client(settings: Settings) -> Any:
    """The sagemaker-runtime client, created on first use and reused by warm invocations."""
    global _client
    if _client is None:
        _client = make_client(settings)
    return _client


def make_client(settings: Settings, **client_arguments: Any) -> Any:
    """A sagemaker-runtime client with this function's timeouts that never retries by itself: ``invoke``
    decides (botocore's standard mode would call again after a read timeout)."""
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.endpoint_timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return boto3.client("sagemaker-runtime", config=config, **client_arguments)


# --- errors: one place for status codes ---------------------------------------------------------


def status_of(err: BaseException) -> tuple[int, str]:
    """The status code and the client's one-line message for ``err``: the only place that decides them."""
    match err:
        case BadRequest():
            return HTTPStatus.BAD_REQUEST, str(err)
        case fetch.ImageTooLarge():
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(err)
        case fetch.NotAnImage():
            return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(err)
        case fetch.FetchError():
            return HTTPStatus.BAD_REQUEST, str(err)
        case ClientError():
            return _endpoint_status(err)
        case EndpointTooSlow():
            return (
                HTTPStatus.GATEWAY_TIMEOUT,
                f"the model did not answer within {err.seconds:g} s: this image takes it too long (it is not "
                "retried); send a smaller or more ordinary photo",
            )
        case ReadTimeoutError() | ConnectTimeoutError():
            return HTTPStatus.GATEWAY_TIMEOUT, "the model endpoint could not be reached in time; retry later"
        case BotoCoreError():
            return HTTPStatus.BAD_GATEWAY, "the model endpoint could not be reached; retry later"
        case BadEndpointAnswer():
            return HTTPStatus.BAD_GATEWAY, "the model endpoint gave an answer that is not predictions"
        case ConfigError():
            return HTTPStatus.INTERNAL_SERVER_ERROR, "the function is misconfigured; its log has the details"
    return HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; its log has the details"


def _endpoint_status(err: ClientError) -> tuple[int, str]:
    code = str(err.response.get("Error", {}).get("Code", ""))
    http_status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "ModelError":
        original = err.response.get("OriginalStatusCode")
        message = first_line(err.response.get("OriginalMessage"))
        if original in _MODEL_STATUSES_PASSED_ON and message:
            return original, message
        return HTTPStatus.BAD_GATEWAY, f"the model failed on this request (status {original}); retry later"
    if code in ("ServiceUnavailable", "ModelNotReadyException") or http_status == 503:
        return HTTPStatus.SERVICE_UNAVAILABLE, "the model endpoint is not available right now; retry later"
    if code in _THROTTLING or http_status == 429:
        return HTTPStatus.TOO_MANY_REQUESTS, "the model endpoint is busy (throttled); retry in a few seconds"
    if code == "413" or http_status == 413:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the image is larger than the model endpoint accepts"
    if code == "ValidationError" and "not found" in str(err.response.get("Error", {}).get("Message", "")):
        return HTTPStatus.BAD_GATEWAY, "the model endpoint does not exist or is not in service"
    return HTTPStatus.BAD_GATEWAY, "the model endpoint failed to answer"


def first_line(text: object) -> str:
    """The first non-empty line of ``text``, shortened: what the client may see of a model's error."""
    for line in str(text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 1] + "…"
    return ""


def _error_response(err: Exception, request_id: str | None, started: float) -> dict[str, Any]:
    status, message = status_of(err)
    fields: dict[str, Any] = {"status": int(status), "error": message, "exception": type(err).__name__}
    if str(err) != message:
        fields["detail"] = str(err)
    if isinstance(err, ClientError):
        response = err.response
        fields["endpoint_error"] = response.get("Error", {}).get("Code")
        fields["endpoint_http_status"] = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        fields["model_status"] = response.get("OriginalStatusCode")
        fields["model_message"] = response.get("OriginalMessage")  # the model's whole error body
        fields["model_log"] = response.get("LogStreamArn")
    if isinstance(err, UnforeseenShape) and err.__cause__ is not None:
        fields["cause"] = "".join(traceback.format_exception(err.__cause__))
    if isinstance(err, ClientError | BotoCoreError):
        fields["attempts"] = getattr(err, "attempts", 1)
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        fields["traceback"] = "".join(traceback.format_exception(err))
    fields["total_ms"] = _ms_since(started)
    log_event(logging.ERROR if status >= 500 else logging.WARNING, "failed", request_id, **fields)
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status in (429, 503) else {}
    return _response(status, {"error": message, "request_id": request_id}, headers)


def _response(status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": int(status),
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store", **(headers or {})},
        "body": json.dumps(body),
    }


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# --- logging: one JSON object per line ----------------------------------------------------------


class _JsonLines(logging.Handler):
    """Writes each record as one JSON line to the current ``sys.stdout`` (CloudWatch Logs in Lambda)."""

    def emit(self, record: logging.LogRecord) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            **getattr(record, "fields", {}),
        }
        try:
            sys.stdout.write(json.dumps(entry, default=str) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


log = logging.getLogger("dogbreeds.invoker")
log.addHandler(_JsonLines())
log.propagate = False  # the Lambda runtime's root handler would print it a second time, as text
log.setLevel(logging.getLevelNamesMapping().get(os.environ.get("LOG_LEVEL", "").upper(), logging.INFO))


def log_event(level: int, message: str, request_id: str | None, **fields: Any) -> None:
    """One structured log line: level, message, request_id and ``fields``."""
    log.log(level, message, extra={"request_id": request_id, "fields": fields})
