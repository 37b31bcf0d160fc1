"""``dogbreeds predict IMAGE_OR_URL``: classify one image through the deployed REST API (or, to tell where a
problem lies, the Lambda or the endpoint directly).

Through the API (the invoker stack's PredictUrl output, or --api-url): a local file goes as its raw bytes
(the API's binary media types), a URL as ``{"url": ...}``, which the Lambda fetches; ``--top-k`` as
``?top_k=`` or in the JSON. Authenticated as the setting api_auth says: iam signs the request with SigV4
(botocore's signer, for the service execute-api, with the profile's credentials), cognito sends an access
token of the stack's app client (client-credentials grant; or DOGBREEDS_API_TOKEN), api_key sends the
stack's API key (or DOGBREEDS_API_KEY).

--lambda invokes the Lambda's live alias directly (lambda:InvokeFunction), past the API's authentication,
throttle and WAF: an API problem and a function problem then look different. --endpoint sends the image's
bytes straight to the SageMaker endpoint (a URL is fetched here first).
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.download import USER_AGENT
from dogbreeds.ops.errors import AwsSetupError, OpsError, UsageError, client_error_code
from dogbreeds_stacks.api_contract import JSON_MEDIA_TYPE, TOP_K_PARAMETER
from dogbreeds_stacks.contract import DOG_BREEDS

ENDPOINT_MAX_BYTES = 6 * 1024 * 1024  # the InvokeEndpoint payload limit
FETCH_TIMEOUT_SECONDS = 10
API_SERVICE = "execute-api"
# The client waits a little longer than API Gateway waits for the Lambda, so that the gateway's 504 arrives.
API_TIMEOUT_MARGIN_SECONDS = 5
API_KEY_VARIABLE = "DOGBREEDS_API_KEY"
API_TOKEN_VARIABLE = "DOGBREEDS_API_TOKEN"  # noqa: S105 (the variable's name)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Image signatures and the media type the API sends each as; anything else goes as application/octet-stream
# (binary too), and the Lambda tells the format from the bytes.
_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def read_image(source: str, max_bytes: int) -> bytes:
    path = Path(source).expanduser()
    if not path.is_file():
        raise UsageError(f"{source}: no such file (IMAGE_OR_URL is a local image file or an http(s) URL)")
    size = path.stat().st_size
    if size > max_bytes:
        raise UsageError(f"{source} is {size} bytes; the most accepted is {max_bytes} bytes")
    return path.read_bytes()


def fetch_image(url: str, max_bytes: int) -> bytes:
    """The image at ``url``, fetched from this machine (for --endpoint, which never fetches URLs)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310 (http(s) checked)
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as err:
        raise OpsError(f"GET {url} answered HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise OpsError(f"could not fetch {url}: {getattr(err, 'reason', err)}") from None
    if len(data) > max_bytes:
        raise OpsError(f"{url} is larger than {max_bytes} bytes")
    return data


def media_type_of(data: bytes) -> str:
    """The media type the API is sent an image as: one of its binary media types."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


# --- the API ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request to the API, before and after it is authenticated."""

    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        try:
            document = json.loads(self.body or b"null")
        except ValueError:
            return {}
        return document if isinstance(document, dict) else {}


Authenticate = Callable[[ApiRequest], ApiRequest]


def no_authentication(request: ApiRequest) -> ApiRequest:
    return request


@dataclass(frozen=True)
class SigV4Signer:
    """Signs a request for API Gateway's IAM authorization with botocore's SigV4 signer."""

    credentials: Credentials
    region: str

    def __call__(self, request: ApiRequest) -> ApiRequest:
        signed = AWSRequest(method=request.method, url=request.url, data=request.body, headers=dict(request.headers))
        SigV4Auth(self.credentials, API_SERVICE, self.region).add_auth(signed)
        return replace(request, headers={name: str(value) for name, value in signed.headers.items()})


@dataclass(frozen=True)
class HeaderCredential:
    """Sends a fixed header: an API key (x-api-key) or a Cognito access token (Authorization)."""

    name: str
    value: str

    def __call__(self, request: ApiRequest) -> ApiRequest:
        return replace(request, headers={**request.headers, self.name: self.value})


def api_request(url: str, source: str, top_k: int | None, max_bytes: int) -> ApiRequest:
    """A URL as JSON ``{"url": ...}``; a file as its raw bytes, ``top_k`` in the query string."""
    headers = {"User-Agent": USER_AGENT, "Accept": JSON_MEDIA_TYPE}
    if is_url(source):
        document: dict[str, object] = {"url": source}
        if top_k is not None:
            document["top_k"] = top_k
        body = json.dumps(document).encode()
        return ApiRequest(url, body, {**headers, "Content-Type": JSON_MEDIA_TYPE})
    data = read_image(source, max_bytes)
    if top_k is not None:
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + urllib.parse.urlencode({TOP_K_PARAMETER: top_k})
    return ApiRequest(url, data, {**headers, "Content-Type": media_type_of(data)})


def call_api(request: ApiRequest, timeout: float) -> ApiAnswer:
    """Send ``request`` as it is (its headers are what was signed); the answer, whatever its status."""
    http = urllib.request.Request(  # noqa: S310 (the URL was checked: https, or http on loopback)
        request.url, data=request.body, headers=request.headers, method=request.method
    )
    # Local mode's front is on loopback: no proxy, whatever the environment says.
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(request.url) else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(http, timeout=timeout) as response:
            return ApiAnswer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as err:
        with err:
            return ApiAnswer(err.code, dict(err.headers.items()), err.read())
    except (urllib.error.URLError, OSError) as err:
        raise AwsSetupError(f"could not reach the API at {request.url}: {getattr(err, 'reason', err)}") from None


def via_api(
    url: str, source: str, top_k: int | None, max_bytes: int, authenticate: Authenticate, *, timeout: float = 35.0
) -> dict:
    """The API's answer body; AwsSetupError for a refused authentication, OpsError for any other error answer."""
    request = api_request(url, source, top_k, max_bytes)
    answer = call_api(authenticate(request), timeout)
    return api_body(answer)


def api_body(answer: ApiAnswer) -> dict:
    """The predictions of a 200; one clear error otherwise (the API and the Lambda answer {"error", "request_id"})."""
    body = answer.json()
    if answer.status == 200 and isinstance(body.get("predictions"), list):
        return body
    message = body.get("error") or body.get("message") or answer.body[:200].decode("utf-8", "replace") or "no message"
    request_id = body.get("request_id") or _header(answer.headers, "x-amzn-RequestId")
    suffix = f" (request {request_id})" if request_id else ""
    if answer.status == 200:
        raise OpsError(f"the API's answer has no predictions: {answer.body[:200]!r}")
    if answer.status in (401, 403):
        raise AwsSetupError(
            f"the API refused the request (HTTP {answer.status}): {message}{suffix}. The caller needs "
            "execute-api:Invoke on it (api_auth=iam), a valid token (cognito) or key (api_key), and the API's "
            "region (--region)."
        )
    if answer.status == 429:
        raise OpsError(f"the API is throttling requests (HTTP 429): {message}{suffix}; retry in a few seconds")
    raise OpsError(f"prediction failed, HTTP {answer.status}: {message}{suffix}")


def check_api_url(url: str) -> str:
    """https, or plain http only to a loopback address (local mode's front): signed requests stay encrypted."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and _is_loopback(url):
        return url
    raise UsageError(f"--api-url {url}: accepted is an https:// URL, or http:// on a loopback address (local mode)")


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def authenticator(config: Config, aws: Aws, stacks: Stacks) -> Authenticate:
    """How requests to the API authenticate, as the setting api_auth says."""
    auth = config.settings.api_auth
    if auth == "iam":
        credentials = aws.session.get_credentials()
        return SigV4Signer(credentials.get_frozen_credentials(), aws.region)
    if auth == "api_key":
        key = os.environ.get(API_KEY_VARIABLE) or _api_key(aws, stacks.output("invoker", "ApiKeyId"))
        return HeaderCredential("x-api-key", key)
    token = os.environ.get(API_TOKEN_VARIABLE) or cognito_token(aws, config, stacks)
    return HeaderCredential("Authorization", token)


def _api_key(aws: Aws, key_id: str) -> str:
    return aws.client("apigateway").get_api_key(apiKey=key_id, includeValue=True)["value"]


def cognito_token(aws: Aws, config: Config, stacks: Stacks) -> str:
    """An access token of the stack's app client, by the client-credentials grant (its secret read from Cognito)."""
    outputs = stacks.outputs("invoker")
    client_id = outputs["UserPoolClientId"]
    described = aws.client("cognito-idp").describe_user_pool_client(
        UserPoolId=outputs["UserPoolId"], ClientId=client_id
    )
    secret = described["UserPoolClient"]["ClientSecret"]
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": config.names.api_oauth_scope})
    request = ApiRequest(
        check_api_url(outputs["TokenUrl"]),
        form.encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic}"},
    )
    answer = call_api(request, FETCH_TIMEOUT_SECONDS)
    token = answer.json().get("access_token")
    if answer.status != 200 or not isinstance(token, str):
        raise AwsSetupError(f"the user pool refused a token (HTTP {answer.status}): {answer.body[:200]!r}")
    return token


# --- the Lambda and the endpoint, directly ----------------------------------------------------------------


def via_lambda(aws: Aws, alias_arn: str, source: str, top_k: int | None, max_bytes: int) -> dict:
    """The Lambda's answer body; OpsError with its message for an error answer."""
    event: dict[str, object] = (
        {"url": source}
        if is_url(source)
        else {"image_base64": base64.b64encode(read_image(source, max_bytes)).decode("ascii")}
    )
    if top_k is not None:
        event["top_k"] = top_k
    response = aws.client("lambda").invoke(
        FunctionName=alias_arn, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
    )
    raw = response["Payload"].read()
    try:
        payload = json.loads(raw or b"null")
    except json.JSONDecodeError:
        raise OpsError(f"the Lambda answered something that is not JSON: {raw[:200]!r}") from None
    if response.get("FunctionError"):
        detail = payload if isinstance(payload, dict) else {}
        raise OpsError(
            f"the Lambda failed ({detail.get('errorType', response['FunctionError'])}): "
            f"{detail.get('errorMessage', raw[:200])}"
        )
    if not isinstance(payload, dict) or "statusCode" not in payload:
        raise OpsError(f"the Lambda's answer has no statusCode: {raw[:200]!r}")
    body = payload.get("body")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            body = {"error": body}
    body = body if isinstance(body, dict) else {}
    status = int(payload["statusCode"])
    if status >= 400:
        request_id = f" (request {body['request_id']})" if body.get("request_id") else ""
        raise OpsError(f"prediction failed, HTTP {status}: {body.get('error', 'no message')}{request_id}")
    if not isinstance(body.get("predictions"), list):
        raise OpsError(f"the Lambda's answer has no predictions: {payload.get('body')!r:.200}")
    return body


def via_endpoint(aws: Aws, endpoint_name: str, source: str, top_k: int | None) -> dict:
    data = fetch_image(source, ENDPOINT_MAX_BYTES) if is_url(source) else read_image(source, ENDPOINT_MAX_BYTES)
    extra = {"CustomAttributes": f"top_k={top_k}"} if top_k is not None else {}
    runtime = aws.client("sagemaker-runtime")
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name,
            ContentType="application/x-image",
            Accept="application/json",
            Body=data,
            **extra,
        )
    except Exception as err:
        if client_error_code(err) != "ModelError":
            raise
        # The model's own error: its first line is the message, the rest a traceback.
        original = err.response.get("OriginalMessage") or err.response.get("Error", {}).get("OriginalMessage")
        status = err.response.get("OriginalStatusCode") or err.response.get("Error", {}).get("OriginalStatusCode")
        message = (original or err.response.get("Error", {}).get("Message", "")).strip().splitlines()
        raise OpsError(
            f"the endpoint refused the image (HTTP {status}): {message[0] if message else 'no message'}"
        ) from None
    body = json.loads(response["Body"].read())
    if not isinstance(body, dict) or not isinstance(body.get("predictions"), list):
        raise OpsError(f"the endpoint's answer has no predictions: {str(body)[:200]}")
    return body


# --- output -----------------------------------------------------------------------------------------


def table(predictions: list[dict]) -> str:
    width = max([len("breed"), *(len(str(p.get("label", ""))) for p in predictions)])
    lines = [f"{'rank':>4}  {'breed':<{width}}  {'probability':>11}"]
    for rank, p in enumerate(predictions, start=1):
        lines.append(f"{rank:>4}  {p.get('label', '?'):<{width}}  {100 * float(p.get('probability', 0)):>10.1f}%")
    return "\n".join(lines)


def _ms(value: object) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def latency_line(round_trip_ms: float, body: dict, through: str) -> str:
    text = f"latency: {round_trip_ms:.0f} ms round trip ({through})"
    reported = body.get("latency_ms")
    if isinstance(reported, dict):
        text += (
            f"; Lambda reports fetch {_ms(reported.get('fetch'))}, endpoint {_ms(reported.get('endpoint'))}, "
            f"total {_ms(reported.get('total'))}"
        )
    return text


# --- the command ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE_OR_URL", help="a local image file, or an http(s) URL of one")
    parser.add_argument("--top-k", type=int, help="predictions to return (default: the deployed setting top_k)")
    way = parser.add_mutually_exclusive_group()
    way.add_argument(
        "--api-url",
        metavar="URL",
        help="the API's POST URL (default: the invoker stack's PredictUrl output); http:// only on loopback, "
        "for local mode's front",
    )
    way.add_argument(
        "--lambda",
        dest="via_lambda",
        action="store_true",
        help="invoke the Lambda's live alias directly, past the API (default: through the API)",
    )
    way.add_argument(
        "--endpoint", action="store_true", help="call the SageMaker endpoint directly with the image's bytes"
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON instead of a table")


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if args.top_k is not None and not 1 <= args.top_k <= DOG_BREEDS:
        raise UsageError(f"--top-k {args.top_k}: accepted is 1 to {DOG_BREEDS}")
    if not is_url(args.image) and not Path(args.image).expanduser().is_file():
        # A usage error, before any AWS call.
        raise UsageError(f"{args.image}: no such file (IMAGE_OR_URL is a local image file or an http(s) URL)")
    api_url = check_api_url(args.api_url) if getattr(args, "api_url", None) else None
    max_bytes = config.settings.lambda_max_image_mb * 1024 * 1024
    if not is_url(args.image) and not args.endpoint:
        read_image(args.image, max_bytes)  # too large is a usage error, before any AWS call
    stacks = Stacks(aws, config)
    if args.endpoint:
        endpoint_name = stacks.output("endpoint", "EndpointName")
        started = time.perf_counter()
        body = via_endpoint(aws, endpoint_name, args.image, args.top_k)
        through = f"endpoint {endpoint_name}"
    elif getattr(args, "via_lambda", False):
        alias_arn = stacks.output("invoker", "AliasArn")
        started = time.perf_counter()
        body = via_lambda(aws, alias_arn, args.image, args.top_k, max_bytes)
        through = f"Lambda {alias_arn.rsplit(':', 2)[-2]}:{alias_arn.rsplit(':', 1)[-1]}"
    else:
        url = api_url or stacks.output("invoker", "PredictUrl")
        authenticate = authenticator(config, aws, stacks)
        timeout = config.settings.api_integration_timeout_seconds + API_TIMEOUT_MARGIN_SECONDS
        started = time.perf_counter()
        body = via_api(url, args.image, args.top_k, max_bytes, authenticate, timeout=timeout)
        through = f"API {url}, {config.settings.api_auth}"
    round_trip_ms = (time.perf_counter() - started) * 1000
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(table(body["predictions"]))
    model = body.get("model") or {}
    if model:
        print(
            f"model: {model.get('backbone', '?')}, {model.get('num_classes', '?')} classes, "
            f"version {model.get('version', '?')}"
        )
    print(latency_line(round_trip_ms, body, through))
    return 0
