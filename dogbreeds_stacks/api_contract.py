"""What the REST API in front of the Lambda accepts and answers, in a module free of CDK imports.

The invoker stack builds the API from these values (dogbreeds_stacks/api.py), local mode's loopback front serves the
same API from them (dogbreeds/local/apigateway.py), and ``dogbreeds predict`` sends what they accept.

Sizes, from the services' quotas:

- API Gateway takes a request payload of at most 10 MiB (a fixed quota of REST APIs);
- the Lambda's synchronous invoke takes an event of at most 6 MiB, and with binary media types API
  Gateway hands a raw image to the Lambda base64-encoded (4/3 of its size) inside that event, with the
  request's headers and context around it. So a raw image body can be at most about 4.6 MiB, a JSON
  body at most about 5.9 MiB, whatever the Lambda itself accepts (``lambda_max_image_mb``, at most 4 MiB,
  is 5.3 MiB in base64: it fits either way, and the Lambda's own 413 says what is accepted).
  Above the event limit API Gateway answers 413 itself; the request model refuses a JSON ``image_base64``
  longer than fits, before the Lambda is called.
"""

from __future__ import annotations

from dogbreeds_stacks.contract import DOG_BREEDS
from dogbreeds_stacks.names import API_PATH, API_STAGE

# Content types API Gateway hands to the Lambda base64-encoded (isBase64Encoded); anything else is text.
BINARY_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "application/octet-stream")
JSON_MEDIA_TYPE = "application/json"
# API Gateway's largest request payload (a REST API quota that cannot be raised).
API_GATEWAY_MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# The largest event of a synchronous Lambda invocation.
LAMBDA_MAX_EVENT_BYTES = 6 * 1024 * 1024
# What an event holds besides the body: headers, query, the request context, JSON quoting.
EVENT_ALLOWANCE_BYTES = 64 * 1024
# The longest API Gateway waits for a Lambda integration without a quota increase.
MAX_INTEGRATION_TIMEOUT_SECONDS = 29
# The longest URL the Lambda fetches (lambda_src/fetch.py's MAX_URL_LENGTH; a test keeps them equal).
MAX_URL_LENGTH = 2048
# The query parameter that carries top_k for a raw image body.
TOP_K_PARAMETER = "top_k"
RESOURCE_PATH = f"/{API_PATH}"
STAGE_PATH = f"/{API_STAGE}/{API_PATH}"

# Every answer API Gateway makes itself (refused signature, throttled, invalid body, the Lambda failed) has the
# Lambda's error shape: {"error": "...", "request_id": "..."}. messageString is a quoted JSON string.
GATEWAY_ERROR_TEMPLATE = '{"error": $context.error.messageString, "request_id": "$context.requestId"}'

# The stage's access log: one JSON object per request.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "caller": "$context.identity.caller",
    "userArn": "$context.identity.userArn",
    "apiKeyId": "$context.identity.apiKeyId",
    "clientId": "$context.authorizer.claims.client_id",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "protocol": "$context.protocol",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationStatus": "$context.integration.status",
    "integrationLatency": "$context.integration.latency",
    "errorType": "$context.error.responseType",
    "error": "$context.error.message",
    "wafResponseCode": "$context.wafResponseCode",
    "xrayTraceId": "$context.xrayTraceId",
}


def max_body_bytes() -> int:
    """The largest request body that still fits the Lambda's event once API Gateway has wrapped it."""
    return LAMBDA_MAX_EVENT_BYTES - EVENT_ALLOWANCE_BYTES


def max_raw_image_bytes() -> int:
    """The largest raw image body: API Gateway base64-encodes it into the event (4 bytes for every 3)."""
    return max_body_bytes() // 4 * 3


def is_binary(media_type: str) -> bool:
    """Whether API Gateway treats a request of this media type (parameters removed, lowercase) as binary."""
    return media_type in BINARY_MEDIA_TYPES


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header; API Gateway takes a request without one as JSON."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    return value or JSON_MEDIA_TYPE


def request_schema() -> dict:
    """The JSON schema (draft 4, as API Gateway models are) of a JSON request body.

    Exactly one of ``url`` and ``image_base64``, an optional integer ``top_k``, nothing else. API Gateway
    validates only bodies whose content type has a model: this one is for application/json; raw images go
    through unvalidated, and the Lambda checks them.
    """
    return {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "title": "PredictRequest",
        "description": "An image to classify: the URL of one, which the Lambda fetches, or its bytes in base64.",
        "type": "object",
        "properties": {
            "url": {"type": "string", "minLength": 1, "maxLength": MAX_URL_LENGTH},
            "image_base64": {"type": "string", "minLength": 1, "maxLength": max_body_bytes()},
            "top_k": {"type": "integer", "minimum": 1, "maximum": DOG_BREEDS},
        },
        "additionalProperties": False,
        "oneOf": [{"required": ["url"]}, {"required": ["image_base64"]}],
    }
