"""A loopback stand-in for the SageMaker runtime API (InvokeEndpoint), for the local demo and the tests.

A ``RuntimeServer`` serves backends (each stands for a model container) under endpoint names, and answers
as the real service does, so a plain boto3 client raises the same errors with the same fields. What it
answers, case by case: docs/local-mode.md.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
import traceback
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import unquote

from dogbreeds.local.loopback import LoopbackServer

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
VARIANT = "AllTraffic"
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's request limit for real-time endpoints
_INVOCATIONS_PATH = re.compile(r"^/endpoints/([^/?]+)/invocations(?:\?.*)?$")
_SIGNED_REGION = re.compile(r"Credential=[^/,]+/\d{8}/([a-z0-9-]+)/")
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.sagemaker/"
_DRAIN_CHUNK = 1 << 16


class Invocation(NamedTuple):
    """One InvokeEndpoint request, as the model container would see it."""

    endpoint_name: str
    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None


class ModelResponse(NamedTuple):
    """What the model container answered."""

    status: int
    content_type: str
    body: bytes


Backend = Callable[[Invocation], ModelResponse]


class ServiceFault(Exception):
    """Raised by a backend to make the service itself fail, before any model is reached.

    ``ServiceFault(400, "ThrottlingException", "Rate exceeded")`` reaches boto3 as that error code
    (``ClientError.response["Error"]["Code"]``) with that HTTP status, so botocore's retry rules
    treat it as they treat the real one.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def throttling(cls) -> ServiceFault:
        return cls(HTTPStatus.BAD_REQUEST, "ThrottlingException", "Rate exceeded")

    @classmethod
    def unavailable(cls) -> ServiceFault:
        return cls(HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailable", "Service Unavailable")

    @classmethod
    def model_not_ready(cls) -> ServiceFault:
        return cls(HTTPStatus.TOO_MANY_REQUESTS, "ModelNotReadyException", "Model is not ready to serve requests")

    @classmethod
    def internal_failure(cls) -> ServiceFault:
        return cls(HTTPStatus.INTERNAL_SERVER_ERROR, "InternalFailure", "An internal failure occurred")


class _Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class RuntimeServer(LoopbackServer):
    """InvokeEndpoint on a loopback port, served by ``backends`` (endpoint name -> backend).

    A ``ThreadingHTTPServer`` in a daemon thread; ``url`` is valid after ``start()``. ``backends`` is
    read on every request, so a mutable mapping may gain or lose endpoints while the server runs.
    """

    thread_name = "sagemaker-runtime"
    poll_interval = 0.05

    def __init__(self, backends: Mapping[str, Backend], *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not _is_loopback(host):
            raise ValueError(f"RuntimeServer binds loopback addresses only (127.0.0.0/8, ::1, localhost), got {host!r}")
        self.backends = backends
        self.host = host
        self.port = port
        self.url = ""
        super().__init__()

    def make_server(self) -> ThreadingHTTPServer:
        server_class = _IPv6Server if ":" in self.host else _Server
        server = server_class((self.host, self.port), _handler_for(self))
        host, port = server.server_address[:2]
        self.port = port
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return server

    def answer(self, path: str, headers: Mapping[str, str], body: bytes | None) -> _Answer:
        """The service's answer to ``POST path``; ``body`` is None when it was over the limit (not read)."""
        match = _INVOCATIONS_PATH.match(path)
        if match is None:
            return _error(HTTPStatus.NOT_FOUND, "UnknownOperationException", f"No operation at {path}")
        if body is None:
            return _json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"message": _too_large_message()})
        name = unquote(match.group(1))
        region = _region(headers.get("Authorization", ""))
        backend = self.backends.get(name)
        if backend is None:
            return _error(
                HTTPStatus.BAD_REQUEST, "ValidationError", f"Endpoint {name} of account {ACCOUNT_ID} not found."
            )
        invocation = Invocation(
            endpoint_name=name,
            body=body,
            content_type=headers.get("Content-Type"),
            accept=headers.get("Accept"),
            custom_attributes=headers.get("X-Amzn-SageMaker-Custom-Attributes"),
        )
        try:
            model = backend(invocation)
        except ServiceFault as fault:
            return _error(fault.status, fault.code, fault.message)
        except Exception as err:  # the container's server turns an uncaught exception into a 500
            text = f"{err}\n{''.join(traceback.format_exception(err))}"
            model = ModelResponse(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", text.encode())
        if model.status < 400:
            return _Answer(
                HTTPStatus.OK,
                {"Content-Type": model.content_type, "x-Amzn-Invoked-Production-Variant": VARIANT},
                model.body,
            )
        return _model_error(name, region, model)


def _model_error(name: str, region: str, model: ModelResponse) -> _Answer:
    """SageMaker's ModelError: the model's status and whole body, wrapped in a 424."""
    original = model.body.decode("utf-8", errors="replace")
    kind = "client" if model.status < 500 else "server"
    log_group = f"/aws/sagemaker/Endpoints/{name}"
    console = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group={log_group}"
    )
    return _json(
        HTTPStatus.FAILED_DEPENDENCY,
        {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "LogStreamArn": f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{log_group}",
            "Message": f'Received {kind} error ({model.status}) from primary with message "{original}". '
            f"See {console} in account {ACCOUNT_ID} for more information.",
            "OriginalMessage": original,
            "OriginalStatusCode": model.status,
        },
        error_type="ModelError",
    )


def _error(status: int, code: str, message: str) -> _Answer:
    return _json(status, {"message": message}, error_type=code)


def _json(status: int, payload: dict, *, error_type: str | None = None) -> _Answer:
    headers = {"Content-Type": "application/json"}
    if error_type:
        headers["x-amzn-ErrorType"] = f"{error_type}:{_ERROR_NAMESPACE}"
    return _Answer(status, headers, json.dumps(payload).encode())


def _too_large_message() -> str:
    return f"HTTP content length exceeded {MAX_PAYLOAD_BYTES} bytes."


def _region(authorization: str) -> str:
    match = _SIGNED_REGION.search(authorization)
    return match.group(1) if match else DEFAULT_REGION


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a backend still sleeping past a client's timeout must not hold up stop()

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the client gave up waiting (its read timeout): there is no one to answer
        super().handle_error(request, client_address)


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def _handler_for(runtime: RuntimeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
        disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart (delayed ACK)
        server_version = "LocalSageMakerRuntime"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_PAYLOAD_BYTES:
                self._drain(length)
                body = None
            else:
                body = self.rfile.read(length)
            answer = runtime.answer(self.path, self.headers, body)
            self.send_response(answer.status)
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def _drain(self, length: int) -> None:
            """Read and drop the body, so the client sees the answer rather than a reset connection."""
            while length > 0:
                chunk = self.rfile.read(min(length, _DRAIN_CHUNK))
                if not chunk:
                    break
                length -= len(chunk)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
