"""Hostile events: every shape is answered 200 or 4xx with a short message that repeats at most 200 characters
of what was sent. A regression test for each class of event that once became a 500 or an echo, then
property-based tests (hypothesis) of the event parser and of the URL guard's parsing."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fetch
import handler
from tests.lambda_src.servers import JPEG, FakeContext, body_of, predictions

B64 = base64.b64encode(JPEG).decode()
SHAPES = handler.EVENT_SHAPES
MOST_REPEATED = 200  # characters of the input an answer may repeat
LONGEST_MESSAGE = 400


class StubClient:
    """An endpoint that answers predictions at once; it records what it was sent."""

    def __init__(self) -> None:
        self.calls = 0

    def invoke_endpoint(self, **arguments: Any) -> dict:
        self.calls += 1
        return {"Body": _Body(predictions().body)}


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def no_dns(host: str, port: int) -> list[str]:
    raise OSError("no DNS in these tests")


def answer(event: object, settings: handler.Settings) -> tuple[int, str]:
    """The status and the error message (empty on 200) of the handler's answer to ``event``."""
    response = handler.handle(event, FakeContext(), settings=settings, client=StubClient(), resolver=no_dns)
    body = body_of(response)
    return response["statusCode"], body.get("error", "")


def strings_in(value: object) -> list[str]:
    """Every string in a JSON-like value, keys included, as the text a message could repeat."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (*strings_in(key), *strings_in(item))]
    if isinstance(value, list | tuple):
        return [text for item in value for text in strings_in(item)]
    return [str(value)] if isinstance(value, int | float) and len(repr(value)) < 4000 else []


def assert_short(message: str, sent: object) -> None:
    """At most ``LONGEST_MESSAGE`` characters, one line, and no run of more than ``MOST_REPEATED`` of ``sent``."""
    assert len(message) <= LONGEST_MESSAGE, message[:500]
    assert "\n" not in message
    texts = [text for text in strings_in(sent) if len(text) > MOST_REPEATED]
    for start in range(max(0, len(message) - MOST_REPEATED)):
        window = message[start : start + MOST_REPEATED + 1]
        assert not any(window in text for text in texts), window


def nested(depth: int, inner: object = 1) -> object:
    for _ in range(depth):
        inner = [inner]
    return inner


def http_event(body: str | None, *, headers: object = None, query: object = None, encoded: bool = False) -> dict:
    """The REST API's proxy event (payload format 1.0), the only proxy event the function is deployed behind."""
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"content-type": "application/json"} if headers is None else headers,
        "queryStringParameters": query,
        "requestContext": {"resourcePath": "/predict", "httpMethod": "POST", "requestTimeEpoch": 1_700_000_000_000},
        "body": body,
        "isBase64Encoded": encoded,
    }


# --- regressions: one test per class of hostile event -----------------------------------------------------


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (http_event("[" * 100_000 + "]" * 100_000), f"the request body is JSON nested too deeply: send {SHAPES}"),
        (
            http_event(json.dumps({"image_base64": B64, "top_k": nested(50)})),
            "top_k must be a whole number from 1 to the model's number of classes, got a list",
        ),
        (
            {"image_base64": B64, "top_k": nested(100_000)},  # a direct event, as the runtime parsed it
            "top_k must be a whole number from 1 to the model's number of classes, got a list",
        ),
    ],
    ids=["body", "top_k in a body", "top_k of a direct event"],
)
def test_deeply_nested_json_is_a_400(event: dict, message: str, settings: handler.Settings) -> None:
    assert answer(event, settings) == (400, message)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            http_event(B64, headers=["content-type", "image/jpeg"]),
            "the event's headers must be an object of strings, got a list",
        ),
        (http_event(B64, headers="image/jpeg"), "the event's headers must be an object of strings, got 'image/jpeg'"),
        (
            http_event(B64, headers={"content-type": 42}),
            "the event's headers must be an object of strings, got an object",
        ),
        (
            http_event(json.dumps({"image_base64": B64}), query=["top_k", "3"]),
            "the event's queryStringParameters must be an object of strings, got a list",
        ),
        (
            http_event(json.dumps({"image_base64": B64}), query="top_k=3"),
            "the event's queryStringParameters must be an object of strings, got 'top_k=3'",
        ),
    ],
    ids=["headers a list", "headers a string", "a header a number", "query a list", "query a string"],
)
def test_event_fields_of_the_wrong_json_type_are_a_400(event: dict, message: str, settings: handler.Settings) -> None:
    assert answer(event, settings) == (400, message)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"url": "https://images.example/dog\ud800.jpg"}, "the URL contains characters that are not valid Unicode"),
        ({"url": "https://images.example/?q=\udcff"}, "the URL contains characters that are not valid Unicode"),
        ({"url": "https://\udc80.example/dog.jpg"}, "the URL contains characters that are not valid Unicode"),
        (
            http_event(json.dumps({"url": "https://images.example/\ud83d.jpg"})),  # "\ud83d" in JSON: a lone surrogate
            "the URL contains characters that are not valid Unicode",
        ),
        (
            http_event("\xff\xd8\xff\ud800", headers={"content-type": "image/jpeg"}),
            "the request body holds characters that are not valid Unicode (lone surrogates): send the image "
            "base64-encoded, with isBase64Encoded",
        ),
        ({"image_base64": "/9j/\ud800"}, "image_base64 is not valid base64 (string argument should contain only ASCII"),
    ],
    ids=["URL path", "URL query", "URL host", "URL in a JSON body", "raw body", "base64"],
)
def test_strings_that_cannot_be_encoded_are_a_400(event: dict, message: str, settings: handler.Settings) -> None:
    status, error = answer(event, settings)
    assert (status, error[: len(message)]) == (400, message)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            http_event(B64, headers={"content-type": "image/jpeg"}, query={"top_k": "9" * 5000}, encoded=True),
            f"top_k must be a whole number from 1 to the model's number of classes, got '{'9' * 96}...",
        ),
        (
            {"image_base64": B64, "top_k": "1" * 5000},
            f"top_k must be a whole number from 1 to the model's number of classes, got '{'1' * 96}...",
        ),
        (
            {"image_base64": B64, "top_k": 10**5000},  # an int the runtime parsed; str() of it would raise
            "top_k must be a whole number from 1 to the model's number of classes, got a whole number of about "
            "5,001 digits",
        ),
        (
            http_event('{"image_base64": "' + B64 + '", "top_k": ' + "7" * 5000 + "}"),
            "the request body is not valid JSON (Exceeds the limit (4300 digits) for integer string conversion: "
            f"value has 5000 digits; use sys.set...): send {SHAPES}",
        ),
    ],
    ids=["query", "direct event", "a huge int", "JSON body"],
)
def test_a_top_k_of_thousands_of_digits_is_a_400(event: dict, message: str, settings: handler.Settings) -> None:
    assert answer(event, settings) == (400, message)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"url": "https://" + "a" * 240 + ".example-/"}, f"the URL has an invalid host name '{'a' * 96}..."),
        ({"url": "https://[" + "1" * 1000 + "]/"}, f"the URL is not a valid URL ('{'1' * 96}...)"),
        ({"url": "https://" + "1." * 120 + "1/"}, f"the URL has host '{'1.' * 48}..."),
        (
            {"image_base64": B64, "top_k": "x" * 100_000},
            f"top_k must be a whole number from 1 to the model's number of classes, got '{'x' * 96}...",
        ),
    ],
    ids=["host name", "IPv6 literal", "IPv4 shorthand", "top_k"],
)
def test_messages_quote_at_most_100_characters_of_a_value(
    event: dict, message: str, settings: handler.Settings
) -> None:
    status, error = answer(event, settings)
    assert (status, error[: len(message)]) == (400, message)
    assert_short(error, event)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("abc", "'abc'"),
        ("\ud800x", "'\\ud800x'"),
        ("é" * 200, "'" + "\\xe9" * 24 + "..."),
        ({"a": 1}, "an object"),
        ([1], "a list"),
        (2.5, "2.5"),
        (True, "True"),
        (None, "None"),
        (-(10**300), "a whole number of about 301 digits"),
        (b"\xff" * 3, "b'\\xff\\xff\\xff'"),
    ],
)
def test_shown_quotes_any_value_in_ascii_within_100_characters(value: object, text: str) -> None:
    assert fetch.shown(value) == text
    assert len(fetch.shown(value)) <= fetch.QUOTE_LIMIT


def _quoting_code(path: Path) -> tuple[str, str]:
    """``shown``'s body without its docstring, and ``QUOTE_LIMIT``'s value, as parsed from ``path``."""
    tree = ast.parse(path.read_text())
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "shown"]
    (limit,) = [n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "QUOTE_LIMIT"]
    return ast.dump(ast.Module(body=function.body[1:], type_ignores=[])), ast.unparse(limit.value)


def test_the_endpoint_quotes_values_as_the_function_does():
    """The Lambda's asset and the model's code/ are shipped apart, so each carries ``shown``: the same code."""
    root = Path(__file__).resolve().parents[2]
    assert _quoting_code(root / "lambda_src" / "fetch.py") == _quoting_code(root / "training" / "inference.py")


# --- properties ------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(["url", "image_base64", "top_k", "body", "headers", "isBase64Encoded", "x"])
payloads = st.dictionaries(keys, json_values | st.just(B64) | st.just("https://images.example/a.jpg"), max_size=4)
string_maps = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=3)
headers = string_maps | st.just({"content-type": "image/jpeg"}) | json_values
bodies = st.none() | st.text(max_size=400) | payloads.map(json.dumps) | st.just(B64) | json_values
proxy_events = st.fixed_dictionaries(
    {"requestContext": st.just({}) | st.dictionaries(st.just("requestTimeEpoch"), json_values), "body": bodies},
    optional={
        "headers": headers,
        "queryStringParameters": string_maps | json_values,
        "isBase64Encoded": json_values,
        "httpMethod": json_values,
        "version": st.just("2.0") | json_values,
    },
)
events = payloads | proxy_events | json_values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event=events)
def test_any_event_is_answered_200_or_4xx_with_a_short_message(event: object, settings: handler.Settings) -> None:
    status, error = answer(event, settings)
    assert status in (200, 400, 413, 415), error
    assert (error == "") == (status == 200)
    assert_short(error, event)


urls = (
    st.text(max_size=300)
    | st.builds(
        "{}://{}{}/{}".format,
        st.sampled_from(["https", "http", "HTTPS", "ftp", ""]),
        st.text(max_size=80),
        st.sampled_from(["", ":443", ":0", ":99999", ":x"]),
        st.text(max_size=80),
    )
    | st.builds("https://{}/".format, st.text(alphabet="[]:.0123456789abcdefx%@", max_size=60))
)


@settings(max_examples=400, deadline=None)
@given(url=urls, allow_http=st.booleans())
def test_any_string_parses_to_a_target_or_a_fetch_error_with_a_short_message(url: str, allow_http: bool) -> None:
    policy = fetch.FetchPolicy(max_bytes=1024, allow_http=allow_http)
    try:
        target = fetch.parse_url(url, policy)
    except fetch.FetchError as err:
        assert_short(str(err), url)
        return
    assert target.scheme in policy.schemes
    assert target.host.isascii() and target.path.isascii()
    assert 1 <= target.port <= 65535
