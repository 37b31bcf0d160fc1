"""The invoker Lambda: an image (a URL to fetch, or its bytes) in, the endpoint's labelled predictions out.

Events
------
- direct invocation: ``{"url": "https://..."}`` or ``{"image_base64": "..."}``, optional ``"top_k"``;
- the same JSON as the body of an API Gateway proxy event (REST v1, HTTP v2) or a function URL event,
  the body base64-encoded when ``isBase64Encoded``; or a raw image as the body with an ``image/*``
  (or ``application/x-image``) content type, ``top_k`` then from the query string.

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
  ``status_of`` maps every exception to its status code, in one place. No stack trace ever reaches
  the client; the log (JSON lines on stdout) has the details.

Environment
-----------
``ENDPOINT_NAME`` (required), ``MAX_IMAGE_BYTES`` (default 4 MiB), ``ALLOW_HTTP_URLS``
(``true``/``false``), ``FETCH_TIMEOUT_SECONDS`` (default 5; also the whole fetch's deadline),
``ENDPOINT_TIMEOUT_SECONDS`` (read timeout of one endpoint call, default 7), ``ENDPOINT_MAX_ATTEMPTS``
(default 3, botocore's standard retry mode), ``LOG_LEVEL`` (default INFO) and, for the local demo
only, ``LOCAL_MODE_ALLOW_LOOPBACK=true`` (the fetch may then reach 127.0.0.0/8 and ::1). The boto3
client honours ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
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

import fetch

if TYPE_CHECKING:
    import ssl

IMAGE_CONTENT_TYPE = "application/x-image"
EVENT_SHAPES = '{"url": "https://..."} or {"image_base64": "<base64>"}, with an optional "top_k"'
MAX_TOP_K = 10_000  # a sanity bound for the header; the endpoint checks the real one (its classes)
RETRY_AFTER_SECONDS = "2"
CONNECT_TIMEOUT_SECONDS = 2.0
_MODEL_STATUSES_PASSED_ON = (400, 413, 415)
_MESSAGE_LIMIT = 500
_THROTTLING = ("ThrottlingException", "ThrottledException", "TooManyRequestsException", "Throttling")
_JSON_BODY_LIMIT_FACTOR = 2  # a JSON body carries the image in base64 (4/3 of its size) and a little more


# --- configuration and the typed request --------------------------------------------------------


class ConfigError(Exception):
    """The function's environment is wrong: the operator's to fix."""


class BadRequest(Exception):
    """The event is malformed: the caller's to fix."""


class BadEndpointAnswer(Exception):
    """The endpoint answered 200 with something that is not predictions."""


@dataclass(frozen=True)
class Settings:
    endpoint_name: str
    max_image_bytes: int = 4 * 1024 * 1024
    allow_http: bool = False
    fetch_timeout: float = 5.0
    allow_loopback: bool = False
    endpoint_timeout: float = 7.0
    endpoint_attempts: int = 3

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
        raise ConfigError(f"{key} must be a positive {kind.__name__}, got {value!r}")
    return number


def _env_flag(env: Mapping[str, str], key: str) -> bool:
    value = env.get(key, "false").strip().lower()
    if value not in ("true", "false", ""):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value == "true"


@dataclass(frozen=True)
class Request:
    """What the event asks for: exactly one of ``url`` and ``image``."""

    source: str  # "url", "image_base64" or "body" (a raw image in a proxy event)
    url: str | None = None
    image: bytes | None = None
    top_k: int | None = None


def parse_event(event: object, settings: Settings) -> Request:
    """The request in ``event`` (direct, or an API Gateway / function URL proxy event), validated."""
    if not isinstance(event, dict):
        raise BadRequest(f"the event must be a JSON object: send {EVENT_SHAPES}")
    if not _is_proxy(event):
        return _from_payload(event, settings)
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    query = event.get("queryStringParameters") or {}
    body = event.get("body")
    if body is None or body == "":
        raise BadRequest(f"the request body is empty: send {EVENT_SHAPES}")
    if not isinstance(body, str):
        raise BadRequest(f"the request body must be text: send {EVENT_SHAPES}")
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    encoded = bool(event.get("isBase64Encoded"))
    if media_type.startswith("image/") or media_type == IMAGE_CONTENT_TYPE:
        data = _base64_bytes("the request body", body, settings.max_image_bytes) if encoded else body.encode()
        return Request(source="body", image=_image_bytes("the request body", data, settings), top_k=_top_k(query))
    limit = settings.max_image_bytes * _JSON_BODY_LIMIT_FACTOR
    raw = _base64_bytes("the request body", body, limit) if encoded else body
    try:
        payload = json.loads(raw)
    except ValueError as err:
        raise BadRequest(f"the request body is not valid JSON ({err}): send {EVENT_SHAPES}") from err
    if not isinstance(payload, dict):
        raise BadRequest(f"the request body must be a JSON object: send {EVENT_SHAPES}")
    return _from_payload({"top_k": query.get("top_k"), **payload}, settings)


def _is_proxy(event: dict) -> bool:
    if any(key in event for key in ("requestContext", "httpMethod", "routeKey", "rawPath")):
        return True
    return "body" in event and "url" not in event and "image_base64" not in event


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
    number = int(value) if isinstance(value, str) and value.strip().isdecimal() else value
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_TOP_K:
        raise BadRequest(f"top_k must be a whole number from 1 to the model's number of classes, got {value!r}")
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
        raise BadRequest(f"{name} is not valid base64 ({err}); send the image's bytes in base64") from err


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
        answer, endpoint_ms = invoke(client or default_client(settings), settings, image, request.top_k)
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


def invoke(client: Any, settings: Settings, image: bytes, top_k: int | None) -> tuple[dict[str, Any], float]:
    """The endpoint's answer to ``image`` (botocore errors propagate), and its latency in ms."""
    arguments = {
        "EndpointName": settings.endpoint_name,
        "Body": image,
        "ContentType": IMAGE_CONTENT_TYPE,
        "Accept": "application/json",
    }
    if top_k is not None:
        arguments["CustomAttributes"] = f"top_k={top_k}"
    started = time.perf_counter()
    response = client.invoke_endpoint(**arguments)
    body = response["Body"].read()
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
    """A sagemaker-runtime client with this function's timeouts and bounded retries (botocore's
    standard mode: throttling and 5xx are retried with backoff, model errors never are)."""
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.endpoint_timeout,
        retries={"mode": "standard", "total_max_attempts": settings.endpoint_attempts},
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
        case ReadTimeoutError() | ConnectTimeoutError():
            return HTTPStatus.GATEWAY_TIMEOUT, "the model endpoint did not answer in time; retry later"
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
        fields["model_message"] = response.get("OriginalMessage")  # the whole body, traceback included
        fields["model_log"] = response.get("LogStreamArn")
        fields["attempts"] = response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
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
