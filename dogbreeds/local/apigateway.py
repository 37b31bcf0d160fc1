"""A loopback stand-in for the REST API in front of the Lambda: ``POST /v1/predict`` as the invoker stack serves it.

``LocalRestApi`` answers HTTP on 127.0.0.1 and does, in API Gateway's order, what the stack configures:

1. routing: only ``POST /<stage>/predict`` exists; anything else is API Gateway's 403 "Missing Authentication
   Token";
2. payload size: more than API Gateway's 10 MiB is its plain-text 413;
3. IAM authorization: the SigV4 signature (``Authorization`` header, service execute-api, this region) is
   computed again with botocore's own signer from the fake local credentials and compared; a missing, expired,
   foreign or wrong signature is a 403 with API Gateway's message (api_auth=cognito and api_key are not
   emulated: the front always checks SigV4);
4. the stage's throttle (``Settings.api_rate_limit``, ``api_burst_limit``), a token bucket: 429;
5. the request model (dogbreeds_stacks/api_contract.py's schema) for JSON bodies, with jsonschema: 400 "Invalid request
   body"; raw images are not validated, as in API Gateway;
6. the Lambda proxy event (payload format 1.0) as API Gateway builds it with the API's binary media types:
   their bodies base64-encoded (``isBase64Encoded``), other bodies as text; an event larger than a Lambda
   invocation takes is API Gateway's 413 "Request Too Long";
7. the function, called through ``invoke`` (the demo's ``LambdaFunction``, one execution environment: one
   call at a time), with the integration timeout (504 "Endpoint request timed out"); an error of the function
   or an answer that is not a proxy response is API Gateway's 502 "Internal server error".

Its own answers (steps 1-7) have the body the stack's gateway responses give them, ``{"error", "request_id"}``,
except the 10 MiB refusal, which API Gateway answers before any gateway response. Each request is written to
``access_log`` with the stage's access-log fields. WAF is not emulated.
"""

from __future__ import annotations

import base64
import calendar
import concurrent.futures
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dogbreeds.local.loopback import LoopbackServer
from dogbreeds_stacks.api_contract import (
    ACCESS_LOG_FIELDS,
    API_GATEWAY_MAX_PAYLOAD_BYTES,
    LAMBDA_MAX_EVENT_BYTES,
    RESOURCE_PATH,
    STAGE_PATH,
    is_binary,
    media_type,
    request_schema,
)
from dogbreeds_stacks.names import API_STAGE
from dogbreeds_stacks.settings import Settings

# Fake credentials that only this front accepts (the demo signs with them; no real key is read or needed).
LOCAL_ACCESS_KEY = "local-dogbreeds-key"
LOCAL_SECRET_KEY = "local-mode-secret-not-an-aws-key"  # noqa: S105 (a fake, accepted only here)
LOCAL_CREDENTIALS = Credentials(LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY)
LOCAL_ACCOUNT = "123456789012"
SERVICE = "execute-api"
SIGNATURE_WINDOW_SECONDS = 300  # API Gateway refuses a signature more than 5 minutes off its clock
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_ALGORITHM = "AWS4-HMAC-SHA256"
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access "
    "Key and signing method. Consult the service documentation for details."
)


class GatewayError(Exception):
    """An answer API Gateway makes itself: its status, error type (x-amzn-ErrorType) and message."""

    def __init__(self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message
        self.headers = dict(headers or {})


def _forbidden(error_type: str, message: str) -> GatewayError:
    return GatewayError(403, error_type, message)


# --- SigV4, checked with botocore's signer -------------------------------------------------------------------


def verify_signature(
    method: str,
    target: str,
    headers: Message,
    body: bytes,
    *,
    secrets: Mapping[str, str],
    region: str,
    now: float,
) -> str:
    """The access key that signed the request; GatewayError(403) with API Gateway's message otherwise.

    ``target`` is the path and query as sent. The signature is computed again by botocore's ``SigV4Auth`` over
    the headers the client lists as signed, with the client's timestamp, and compared in constant time.
    """
    authorization = headers.get("Authorization")
    if not authorization:
        raise _forbidden("MissingAuthenticationTokenException", "Missing Authentication Token")
    scheme, _, rest = authorization.strip().partition(" ")
    parts = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not parts.get(name)]
    if scheme != _ALGORITHM or missing:
        raise _forbidden(
            "IncompleteSignatureException",
            f"Authorization header requires the {_ALGORITHM} scheme with 'Credential', 'SignedHeaders' and "
            f"'Signature' parameters"
            + (f"; missing: {', '.join(missing)}" if missing and scheme == _ALGORITHM else ""),
        )
    scope = parts["Credential"].split("/")
    if len(scope) != 5:
        raise _forbidden(
            "IncompleteSignatureException", "Credential must have 5 parts: key/date/region/service/aws4_request"
        )
    access_key, date, scope_region, service, terminator = scope
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, _AMZ_DATE))
    except ValueError:
        raise _forbidden(
            "IncompleteSignatureException",
            "Authorization header requires existence of a 'X-Amz-Date' header in ISO-8601 basic format",
        ) from None
    secret = secrets.get(access_key)
    if secret is None:
        raise _forbidden("UnrecognizedClientException", "The security token included in the request is invalid.")
    if date != amz_date[:8]:
        raise _forbidden(
            "InvalidSignatureException",
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != "
            f"'{amz_date[:8]}', from '{amz_date}'.",
        )
    if scope_region != region:
        raise _forbidden(
            "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{scope_region}'."
        )
    if service != SERVICE or terminator != "aws4_request":
        raise _forbidden("InvalidSignatureException", f"Credential should be scoped to correct service: '{SERVICE}'.")
    _check_time(amz_date, signed_at, now)
    names = parts["SignedHeaders"].lower().split(";")
    if "host" not in names:
        raise _forbidden("InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
    content_sha256 = headers.get("X-Amz-Content-SHA256")
    if content_sha256 is not None and content_sha256 != hashlib.sha256(body).hexdigest():
        raise _forbidden("InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not match.")
    signed = {name: ",".join(headers.get_all(name) or []) for name in names}
    if not all(signed.values()):
        raise _forbidden("InvalidSignatureException", _SIGNATURE_MISMATCH)
    request = AWSRequest(method=method, url=f"http://{signed['host']}{target}", headers=signed, data=body)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret), SERVICE, region)
    if signer.signed_headers(signer.headers_to_sign(request)) != ";".join(sorted(names)):
        raise _forbidden("InvalidSignatureException", _SIGNATURE_MISMATCH)  # a header botocore never signs
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, parts["Signature"].strip()):
        raise _forbidden("InvalidSignatureException", _SIGNATURE_MISMATCH)
    return access_key


def _check_time(amz_date: str, signed_at: float, now: float) -> None:
    def stamp(seconds: float) -> str:
        return time.strftime(_AMZ_DATE, time.gmtime(seconds))

    if signed_at < now - SIGNATURE_WINDOW_SECONDS:
        raise _forbidden(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {stamp(now - SIGNATURE_WINDOW_SECONDS)} "
            f"({stamp(now)} - 5 min.)",
        )
    if signed_at > now + SIGNATURE_WINDOW_SECONDS:
        raise _forbidden(
            "InvalidSignatureException",
            f"Signature not yet current: {amz_date} is still later than {stamp(now + SIGNATURE_WINDOW_SECONDS)} "
            f"({stamp(now)} + 5 min.)",
        )


# --- throttling ----------------------------------------------------------------------------------------------


class TokenBucket:
    """The stage's throttle: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.updated = float(burst), clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


# --- the front ------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Incoming:
    """One HTTP request as the server read it."""

    method: str
    target: str  # path and query, as sent
    headers: Message
    body: bytes
    source_ip: str = "127.0.0.1"
    protocol: str = "HTTP/1.1"
    received: float = field(default_factory=time.time)


Invoke = Callable[[dict], Any]


class LocalRestApi(LoopbackServer):
    """``POST /v1/predict`` on loopback, in front of ``invoke(event) -> proxy response``; a context manager."""

    thread_name = "local-rest-api"

    def __init__(
        self,
        invoke: Invoke,
        settings: Settings,
        *,
        region: str = "us-east-1",
        secrets: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import jsonschema  # a dependency of sagemaker-core, which the app installs

        self.invoke_function = invoke
        self.settings = settings
        self.region = region
        self.secrets = dict(secrets or {LOCAL_ACCESS_KEY: LOCAL_SECRET_KEY})
        self.host, self.port = host, port
        self.clock = clock
        self.timeout = float(settings.api_integration_timeout_seconds)
        self.throttle = TokenBucket(settings.api_rate_limit, settings.api_burst_limit)
        self.validator = jsonschema.Draft4Validator(request_schema())
        self.api_id = "local"
        self.access_log: list[dict[str, object]] = []
        # One execution environment: one call at a time, as the demo's LambdaFunction takes them.
        self._function = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambda-call")
        super().__init__()

    # --- lifecycle --------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The stage's base URL (as the stack's PredictUrl, without the resource)."""
        host, port = self.server_address
        return f"http://{host}:{port}/{API_STAGE}"

    @property
    def predict_url(self) -> str:
        return self.url + RESOURCE_PATH

    def make_server(self) -> ThreadingHTTPServer:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                answer = front.receive(self)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

            def log_message(self, format: str, *args: object) -> None:  # the base class's signature
                pass

        return ThreadingHTTPServer((self.host, self.port), Handler)

    def after_stop(self) -> None:
        self._function.shutdown(wait=False, cancel_futures=True)

    # --- one request -------------------------------------------------------------------------------------------

    def receive(self, handler: BaseHTTPRequestHandler) -> Answer:
        """Read the request from the connection (refusing a payload over 10 MiB unread), then ``handle`` it."""
        length = handler.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > API_GATEWAY_MAX_PAYLOAD_BYTES):
            handler.close_connection = True
            text = f"HTTP content length exceeded {API_GATEWAY_MAX_PAYLOAD_BYTES} bytes."
            return Answer(413, {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"}, text.encode())
        if handler.headers.get("Transfer-Encoding"):
            handler.close_connection = True
            return self._error(
                GatewayError(411, "LengthRequiredException", "send the body with a Content-Length"), uuid.uuid4()
            )
        body = handler.rfile.read(int(length)) if length else b""
        incoming = Incoming(
            handler.command,
            handler.path,
            handler.headers,
            body,
            source_ip=handler.client_address[0],
            protocol=handler.request_version,
            received=self.clock(),
        )
        return self.handle(incoming)

    def handle(self, incoming: Incoming) -> Answer:
        request_id = uuid.uuid4()
        entry: dict[str, object] = {"caller": None, "integrationLatency": None, "integrationStatus": None}
        try:
            answer = self._through_the_gateway(incoming, request_id, entry)
        except GatewayError as refusal:
            answer = self._error(refusal, request_id)
            entry |= {"errorType": refusal.error_type, "error": refusal.message}
        self._log(incoming, request_id, answer, entry)
        return answer

    def _through_the_gateway(self, incoming: Incoming, request_id: uuid.UUID, entry: dict[str, object]) -> Answer:
        path, _, query = incoming.target.partition("?")
        if incoming.method != "POST" or path != STAGE_PATH:
            raise _forbidden("MissingAuthenticationTokenException", "Missing Authentication Token")
        caller = verify_signature(
            incoming.method,
            incoming.target,
            incoming.headers,
            incoming.body,
            secrets=self.secrets,
            region=self.region,
            now=incoming.received,
        )
        entry["caller"] = caller
        if not self.throttle.take():
            raise GatewayError(429, "ThrottledException", "Too Many Requests", {"Retry-After": "1"})
        kind = media_type(incoming.headers.get("Content-Type"))
        if kind == "application/json":
            self._validate(incoming.body)
        event = self.proxy_event(incoming, request_id, caller, path=path, query=query)
        if len(json.dumps(event).encode()) > LAMBDA_MAX_EVENT_BYTES:
            raise GatewayError(413, "RequestTooLargeException", "Request Too Long")
        started = time.perf_counter()
        try:
            response = self._function.submit(self.invoke_function, event).result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise GatewayError(504, "IntegrationTimeout", "Endpoint request timed out") from None
        except Exception:  # the function failed (an unhandled error, a crash, its own timeout)
            raise GatewayError(502, "InternalServerErrorException", "Internal server error") from None
        finally:
            entry["integrationLatency"] = round((time.perf_counter() - started) * 1000)
        answer = _proxy_answer(response)
        entry["integrationStatus"] = answer.status
        answer.headers |= {"x-amzn-RequestId": str(request_id), "X-Amzn-Trace-Id": _trace_id(incoming.received)}
        return answer

    def _validate(self, body: bytes) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            raise GatewayError(400, "BadRequestException", "Invalid request body") from None
        if not self.validator.is_valid(document):
            raise GatewayError(400, "BadRequestException", "Invalid request body")

    def proxy_event(
        self, incoming: Incoming, request_id: uuid.UUID, caller: str | None, *, path: str, query: str
    ) -> dict[str, Any]:
        """The Lambda proxy integration's event (payload format 1.0), as API Gateway builds it for this API."""
        headers: dict[str, list[str]] = {}
        for name, value in incoming.headers.items():
            headers.setdefault(name, []).append(value)
        headers["X-Forwarded-For"] = [incoming.source_ip]
        headers["X-Forwarded-Proto"] = ["http"]
        headers["X-Amzn-Trace-Id"] = [_trace_id(incoming.received)]
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        multi_query: dict[str, list[str]] = {}
        for name, value in pairs:
            multi_query.setdefault(name, []).append(value)
        binary = is_binary(media_type(incoming.headers.get("Content-Type")))
        if not incoming.body:
            body = None
        elif binary:
            body = base64.b64encode(incoming.body).decode("ascii")
        else:
            body = incoming.body.decode("utf-8", errors="replace")
        received = incoming.received
        resource = RESOURCE_PATH
        return {
            "resource": resource,
            "path": path.removeprefix(f"/{API_STAGE}"),
            "httpMethod": incoming.method,
            "headers": {name: values[-1] for name, values in headers.items()},
            "multiValueHeaders": headers,
            "queryStringParameters": {name: values[-1] for name, values in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": resource,
                "httpMethod": incoming.method,
                "extendedRequestId": str(request_id)[:16],
                "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(received)),
                "path": path,
                "accountId": LOCAL_ACCOUNT,
                "protocol": incoming.protocol,
                "stage": API_STAGE,
                "domainPrefix": self.api_id,
                "requestTimeEpoch": int(received * 1000),
                "requestId": str(request_id),
                "identity": {
                    "cognitoIdentityPoolId": None,
                    "accountId": LOCAL_ACCOUNT if caller else None,
                    "cognitoIdentityId": None,
                    "caller": caller,
                    "sourceIp": incoming.source_ip,
                    "principalOrgId": None,
                    "accessKey": caller,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                    "userArn": self._user_arn(caller),
                    "userAgent": incoming.headers.get("User-Agent"),
                    "user": caller,
                },
                "domainName": incoming.headers.get("Host", f"{self.host}:{self.port}"),
                "apiId": self.api_id,
            },
            "body": body,
            "isBase64Encoded": binary and body is not None,
        }

    def _user_arn(self, caller: str | None) -> str | None:
        return f"arn:aws:iam::{LOCAL_ACCOUNT}:user/local" if caller else None

    # --- answers and the access log ----------------------------------------------------------------------------

    def _error(self, refusal: GatewayError, request_id: uuid.UUID) -> Answer:
        """An answer of API Gateway's own, with the body and headers of the stack's gateway responses."""
        body = json.dumps({"error": refusal.message, "request_id": str(request_id)}).encode()
        headers = {
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            "x-amzn-RequestId": str(request_id),
            "x-amzn-ErrorType": refusal.error_type,
            **refusal.headers,
        }
        return Answer(refusal.status, headers, body)

    def _log(self, incoming: Incoming, request_id: uuid.UUID, answer: Answer, entry: dict[str, object]) -> None:
        """One access-log entry with the stage's fields (dogbreeds_stacks/api_contract.py's ACCESS_LOG_FIELDS)."""
        caller = entry.get("caller")
        values: dict[str, object] = {
            "requestId": str(request_id),
            "extendedRequestId": str(request_id)[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(incoming.received)),
            "ip": incoming.source_ip,
            "userAgent": incoming.headers.get("User-Agent"),
            "caller": caller,
            "userArn": self._user_arn(caller),  # type: ignore[arg-type]
            "apiKeyId": None,
            "clientId": None,
            "httpMethod": incoming.method,
            "resourcePath": RESOURCE_PATH if incoming.target.partition("?")[0] == STAGE_PATH else None,
            "protocol": incoming.protocol,
            "status": answer.status,
            "responseLength": len(answer.body),
            "responseLatency": round((self.clock() - incoming.received) * 1000),
            "integrationStatus": entry.get("integrationStatus"),
            "integrationLatency": entry.get("integrationLatency"),
            "errorType": entry.get("errorType"),
            "error": entry.get("error"),
            "wafResponseCode": None,
            "xrayTraceId": None,
        }
        self.access_log.append({name: values[name] for name in ACCESS_LOG_FIELDS})


def _proxy_answer(response: object) -> Answer:
    """The HTTP answer of a Lambda proxy response; API Gateway's 502 when it is not one."""
    malformed = GatewayError(502, "InternalServerErrorException", "Internal server error")
    if not isinstance(response, dict) or not isinstance(response.get("statusCode"), int):
        raise malformed
    headers = response.get("headers") or {}
    body = response.get("body")
    if not isinstance(headers, dict) or not (body is None or isinstance(body, str)):
        raise malformed
    try:
        data = base64.b64decode(body or "") if response.get("isBase64Encoded") else (body or "").encode()
    except ValueError:
        raise malformed from None
    return Answer(response["statusCode"], {str(k): str(v) for k, v in headers.items()}, data)


def _trace_id(received: float) -> str:
    return f"Root=1-{int(received):08x}-{uuid.uuid4().hex[:24]}"
