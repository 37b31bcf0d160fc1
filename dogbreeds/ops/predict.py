"""``dogbreeds predict IMAGE_OR_URL``: classify one image through the deployed Lambda, or the endpoint.

Through the Lambda's ``live`` alias (the invoker stack's AliasArn output): ``{"url": ...}`` for an
http(s) URL, which the Lambda fetches, or ``{"image_base64": ...}`` for a local file. With
``--endpoint``, the image's bytes go straight to the SageMaker endpoint (a URL is fetched here first).
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.download import USER_AGENT
from dogbreeds.ops.errors import OpsError, UsageError, client_error_code
from stacks.contract import DOG_BREEDS

ENDPOINT_MAX_BYTES = 6 * 1024 * 1024  # the InvokeEndpoint payload limit
FETCH_TIMEOUT_SECONDS = 10


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


# --- the two ways in --------------------------------------------------------------------------------


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
    parser.add_argument(
        "--endpoint", action="store_true", help="call the SageMaker endpoint directly with the image's bytes"
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON instead of a table")


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if args.top_k is not None and not 1 <= args.top_k <= DOG_BREEDS:
        raise UsageError(f"--top-k {args.top_k}: accepted is 1 to {DOG_BREEDS}")
    if not is_url(args.image) and not Path(args.image).expanduser().is_file():
        # A usage error, before any AWS call.
        raise UsageError(f"{args.image}: no such file (IMAGE_OR_URL is a local image file or an http(s) URL)")
    stacks = Stacks(aws, config)
    started = time.perf_counter()
    if args.endpoint:
        endpoint_name = stacks.output("endpoint", "EndpointName")
        started = time.perf_counter()
        body = via_endpoint(aws, endpoint_name, args.image, args.top_k)
        through = f"endpoint {endpoint_name}"
    else:
        alias_arn = stacks.output("invoker", "AliasArn")
        max_bytes = config.settings.lambda_max_image_mb * 1024 * 1024
        started = time.perf_counter()
        body = via_lambda(aws, alias_arn, args.image, args.top_k, max_bytes)
        through = f"Lambda {alias_arn.rsplit(':', 2)[-2]}:{alias_arn.rsplit(':', 1)[-1]}"
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
