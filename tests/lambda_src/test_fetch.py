"""The URL fetch's guards: hostile URLs, addresses, redirects and servers, each answered with its 4xx.

Names resolve through an injected resolver, so any name can point at any address without DNS; the
servers are on loopback, reachable only in local mode (``allow_loopback``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import time

import pytest

import fetch
import handler
from tests.lambda_src.servers import (
    GIF,
    HTML,
    JPEG,
    PNG,
    FakeContext,
    ImageServer,
    body_of,
    certificates,
    claims_length,
    endless_chunks,
    redirect,
    resolver_to,
    send,
    serve,
    stalls,
    trickles,
)

PUBLIC = "93.184.215.14"  # never connected to: every test with it is refused before connecting


def call(event, settings, client, **kwargs) -> tuple[int, dict]:
    response = handler.handle(event, FakeContext(), settings=settings, client=client, **kwargs)
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], body_of(response)


@pytest.fixture
def local(settings) -> handler.Settings:
    """Local mode with http allowed, as the local demo runs, and short timeouts."""
    return dataclasses.replace(settings, allow_loopback=True, allow_http=True, fetch_timeout=0.5)


# --- addresses ----------------------------------------------------------------------------------

NON_PUBLIC = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local (instance metadata)"),
    ("169.254.170.2", "link-local"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 (a hostile answer, never bound)
    ("224.0.0.251", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("198.18.0.1", "reserved (benchmarking)"),
    ("192.0.2.10", "reserved (documentation)"),
    ("192.0.0.170", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fd00:ec2::254", "private (unique local)"),
    ("fe80::1", "link-local"),
    ("fec0::1", "private (site-local)"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "reserved (documentation)"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved (IETF protocol assignments, Teredo)"),
    ("100::1", "reserved (discard-only)"),
    ("4000::1", "reserved"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:0:10.0.0.1", "private"),  # IPv4-translated
    ("::7f00:1", "loopback"),  # IPv4-compatible 127.0.0.1
    ("::a9fe:a9fe", "link-local"),  # IPv4-compatible 169.254.169.254
    ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of the metadata address
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("64:ff9b:1::a00:1", "private (local-use NAT64)"),
    ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of the metadata address
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("2002:c0a8:101::", "private"),  # 6to4 of 192.168.1.1
]


@pytest.mark.parametrize(("address", "kind"), NON_PUBLIC)
def test_a_name_resolving_to_a_non_public_address_is_refused(address, kind, settings, client, model):
    asked: list[tuple[str, int]] = []
    status, body = call(
        {"url": "https://images.example/dog.jpg"}, settings, client, resolver=resolver_to(address, calls=asked)
    )
    assert status == 400
    assert body["error"].startswith(f"the host images.example resolves to {ipaddress.ip_address(address)}")
    assert f"a {kind}" in body["error"]
    assert body["error"].endswith("only images on public addresses are fetched")
    assert body["request_id"] == "req-0001"
    assert asked == [("images.example", 443)]
    assert model.calls == []


@pytest.mark.parametrize(("address", "kind"), NON_PUBLIC)
def test_classify_names_the_kind(address, kind):
    assert fetch.classify(ipaddress.ip_address(address)).kind.startswith(kind)


@pytest.mark.parametrize(
    ("address", "connect_to"),
    [
        ("8.8.8.8", "8.8.8.8"),
        ("93.184.215.14", "93.184.215.14"),
        ("2606:4700:4700::1111", "2606:4700:4700::1111"),
        ("::ffff:8.8.8.8", "8.8.8.8"),  # mapped: connect to the IPv4 address itself
        ("64:ff9b::808:808", "64:ff9b::808:808"),  # NAT64 of a public address: through the gateway
        ("2002:808:808::1", "2002:808:808::1"),  # 6to4 of a public address
    ],
)
def test_public_addresses_are_accepted(address, connect_to):
    verdict = fetch.classify(ipaddress.ip_address(address))
    assert verdict.kind is None
    assert verdict.connect_to == ipaddress.ip_address(connect_to)


def test_every_address_must_be_public_not_just_the_first(settings, client, model):
    status, body = call(
        {"url": "https://images.example/dog.jpg"}, settings, client, resolver=resolver_to(PUBLIC, "10.0.0.7")
    )
    assert status == 400
    assert "resolves to 10.0.0.7, a private address" in body["error"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1/dog.jpg", "the host 127.0.0.1 is a loopback address"),
        ("https://169.254.169.254/latest/meta-data/", "the host 169.254.169.254 is a link-local"),
        ("https://[::1]/dog.jpg", "the host [::1] is a loopback address"),
        ("https://[fd00:ec2::254]/latest/", "the host [fd00:ec2::254] is a private (unique local) address"),
        ("https://[::ffff:a9fe:a9fe]/", "which embeds 169.254.169.254, is a link-local"),  # str() varies by version
        ("https://2130706433/dog.jpg", "'2130706433', not a valid IPv4 address"),
        ("https://0x7f000001/dog.jpg", "'0x7f000001', not a valid IPv4 address"),
        ("https://127.1/dog.jpg", "'127.1', not a valid IPv4 address"),
        ("https://0177.0.0.1/dog.jpg", "'0177.0.0.1', not a valid IPv4 address"),
    ],
)
def test_address_literals_and_their_shorthands_are_checked_without_dns(url, message, settings, client, model):
    def no_dns(host, port):
        raise AssertionError("an address literal must not be resolved")

    status, body = call({"url": url}, settings, client, resolver=no_dns)
    assert status == 400
    assert message in body["error"]
    assert model.calls == []


def test_local_mode_admits_loopback_and_nothing_else(local, client, model):
    for address in ("10.0.0.1", "169.254.169.254", "fd00:ec2::254", "100.64.1.1", "0.0.0.0"):  # noqa: S104
        status, body = call({"url": "http://images.example/dog.jpg"}, local, client, resolver=resolver_to(address))
        assert status == 400, address
        assert "only images on public addresses are fetched" in body["error"]
    assert model.calls == []


def test_local_mode_is_off_unless_the_variable_says_true():
    assert handler.Settings.from_env({"ENDPOINT_NAME": "e"}).allow_loopback is False
    assert handler.Settings.from_env({"ENDPOINT_NAME": "e", "LOCAL_MODE_ALLOW_LOOPBACK": "true"}).allow_loopback
    with pytest.raises(handler.ConfigError, match="LOCAL_MODE_ALLOW_LOOPBACK must be true or false"):
        handler.Settings.from_env({"ENDPOINT_NAME": "e", "LOCAL_MODE_ALLOW_LOOPBACK": "yes"})


# --- the URL itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "file:// is not supported; send an https:// URL"),
        ("ftp://images.example/dog.jpg", "ftp:// is not supported; send an https:// URL"),
        ("gopher://images.example:70/_GET", "gopher:// is not supported"),
        ("http://images.example/dog.jpg", "http:// is not supported; send an https:// URL"),
        ("data:image/png;base64,iVBORw0KGgo=", "data:// is not supported"),
        ("javascript:alert(1)", "javascript:// is not supported"),
        ("images.example/dog.jpg", "a URL without a scheme is not supported"),
        ("https://user:secret@images.example/dog.jpg", "contains credentials (user:password@)"),
        ("https://images.example@169.254.169.254/", "contains credentials"),
        ("https://images.example:99999/dog.jpg", "invalid port; ports are numbers from 1 to 65535"),
        ("https://images.example:0/dog.jpg", "invalid port"),
        ("https:///dog.jpg", "has no host name"),
        ("https://images example/dog.jpg", "contains spaces or control characters"),
        ("https://images.example/dog\r\nX-Injected: 1", "contains spaces or control characters"),
        ("https://bad_host!/dog.jpg", "invalid host name"),
        ("", "neither url nor image_base64"),
    ],
)
def test_urls_refused_before_any_lookup(url, message, settings, client, model):
    asked: list = []
    status, body = call(
        {"url": url} if url else {"url": None}, settings, client, resolver=resolver_to(PUBLIC, calls=asked)
    )
    assert status == 400
    assert message in body["error"]
    assert asked == []
    assert model.calls == []


def test_a_port_other_than_the_schemes_is_refused(settings, client, model):
    status, body = call({"url": "https://images.example:22/dog.jpg"}, settings, client, resolver=resolver_to(PUBLIC))
    assert status == 400
    assert body["error"] == ("the URL's port 22 is not allowed; https:// URLs are fetched from port 443 only")
    status, _ = call({"url": "https://images.example:443/x"}, settings, client, resolver=resolver_to("10.0.0.1"))
    assert status == 400  # the default port spelt out is fine; the address is what is refused here


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (12345, "url must be a string, got int"),
        (["https://images.example/dog.jpg"], "url must be a string, got list"),
        ({"href": "https://images.example"}, "url must be a string, got dict"),
        ("https://images.example/" + "a" * 2100, "url has 2,123 characters; at most 2,048 are accepted"),
        ("   ", "the URL is empty"),
    ],
)
def test_malformed_url_values(url, message, settings, client, model):
    status, body = call({"url": url}, settings, client, resolver=resolver_to(PUBLIC))
    assert status == 400
    assert message in body["error"]


def test_a_name_that_does_not_resolve(settings, client, model):
    def nxdomain(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    status, body = call({"url": "https://no-such-host.example/dog.jpg"}, settings, client, resolver=nxdomain)
    assert status == 400
    assert body["error"] == "the host no-such-host.example does not resolve; give a URL whose host exists"


def test_a_resolver_slower_than_the_deadline(local, client, model):
    def slow(host, port):
        time.sleep(2)
        return ["127.0.0.1"]

    started = time.monotonic()
    status, body = call(
        {"url": "http://slow-dns.example/dog.jpg"}, dataclasses.replace(local, fetch_timeout=0.2), client, resolver=slow
    )
    assert time.monotonic() - started < 1.0
    assert status == 400
    assert "resolving slow-dns.example took longer than 0.2 s" in body["error"]


# --- servers: redirects, sizes, time, content ---------------------------------------------------


@pytest.fixture
def images():
    with ImageServer({}) as server:
        yield server


def test_local_mode_fetches_from_loopback_pinned_to_the_vetted_address(local, client, model, images):
    images.routes["/dog.jpg"] = serve(JPEG)
    asked: list = []
    status, body = call(
        {"url": images.url("/dog.jpg", host="dogs.example")},
        local,
        client,
        resolver=resolver_to("127.0.0.1", calls=asked),
    )
    assert status == 200, body
    assert isinstance(body["latency_ms"]["fetch"], float)
    assert asked == [("dogs.example", images.port)]  # one lookup; the connection went to its answer
    assert images.requests == [("/dog.jpg", f"dogs.example:{images.port}", None)]  # the name in Host
    assert model.calls[0].body == JPEG


def test_redirects_are_followed_and_each_one_is_checked(local, client, model, images):
    images.routes["/a"] = redirect("/b", 301)
    images.routes["/b"] = redirect(images.url("/dog.png"), 307)
    images.routes["/dog.png"] = serve(PNG, "image/png")
    status, body = call({"url": images.url("/a")}, local, client, resolver=resolver_to("127.0.0.1"))
    assert status == 200, body
    assert [path for path, _, _ in images.requests] == ["/a", "/b", "/dog.png"]
    assert model.calls[0].body == PNG


@pytest.mark.parametrize(
    ("location", "resolves_to", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/", None, "the host 169.254.169.254 is a link-local"),
        ("http://[fd00:ec2::254]/latest/", None, "the host [fd00:ec2::254] is a private (unique local) address"),
        ("http://internal.example/admin", "10.0.0.5", "the host internal.example resolves to 10.0.0.5, a private"),
        ("file:///etc/passwd", None, "the redirect from 127.0.0.1: file:// is not supported"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", None, "gopher:// is not supported"),
        ("http://admin:pw@images.example/", None, "the redirect from 127.0.0.1 contains credentials"),
    ],
)
def test_redirects_to_forbidden_places_are_refused(location, resolves_to, message, local, client, model, images):
    images.routes["/go"] = redirect(location)
    names = {"127.0.0.1": "127.0.0.1", "internal.example": resolves_to}
    status, body = call(
        {"url": images.url("/go")}, local, client, resolver=lambda host, port: [names.get(host) or "127.0.0.1"]
    )
    assert status == 400
    assert message in body["error"]
    assert model.calls == []


def test_redirect_loops_stop_after_three(local, client, model, images):
    images.routes["/loop"] = redirect("/loop")
    status, body = call({"url": images.url("/loop")}, local, client, resolver=resolver_to("127.0.0.1"))
    assert status == 400
    assert body["error"] == "the URL redirects more than 3 times; give the image's own URL"
    assert len(images.requests) == 4


def test_too_large_by_content_length_is_refused_before_reading(local, client, model, images):
    images.routes["/huge.jpg"] = claims_length(10**9)
    status, body = call({"url": images.url("/huge.jpg")}, local, client)
    assert status == 413
    assert body["error"] == "the image at 127.0.0.1 has 1,000,000,000 bytes; at most 65,536 are accepted"


def test_too_large_while_streaming_stops_reading(local, client, model, images):
    sent: list[int] = []
    images.routes["/endless.jpg"] = endless_chunks(b"\x00" * 16384, sent)
    started = time.monotonic()
    status, body = call({"url": images.url("/endless.jpg")}, local, client)
    assert status == 413
    assert body["error"] == "the image at 127.0.0.1 has more than 65,536 bytes; at most 65,536 are accepted"
    assert time.monotonic() - started < 1.0
    assert model.calls == []


def test_a_server_that_stops_sending_times_out(local, client, model, images):
    images.routes["/slow.jpg"] = stalls(JPEG[:20], seconds=3)
    started = time.monotonic()
    status, body = call({"url": images.url("/slow.jpg")}, dataclasses.replace(local, fetch_timeout=0.3), client)
    assert time.monotonic() - started < 1.5
    assert status == 400
    assert body["error"] in (
        "127.0.0.1 sent nothing for 0.3 s",
        "127.0.0.1 did not send the image within 0.3 s",
    )


def test_a_silent_server_times_out_before_the_headers(local, client, model, images):
    images.routes["/silent.jpg"] = stalls(b"", seconds=3, headers=False)
    status, body = call({"url": images.url("/silent.jpg")}, dataclasses.replace(local, fetch_timeout=0.3), client)
    assert status == 400
    assert "0.3 s" in body["error"]


def test_the_overall_deadline_ends_a_trickle_that_no_read_timeout_catches(images):
    """One byte every 50 ms never trips a 1 s read timeout; the 0.4 s deadline ends it."""
    images.routes["/trickle.jpg"] = trickles(JPEG * 4, every=0.05)
    images.routes["/trickle-headers.jpg"] = trickles(JPEG, every=0.01, in_headers=True)
    policy = fetch.FetchPolicy(max_bytes=65536, timeout=1.0, deadline=0.4, allow_http=True, allow_loopback=True)
    for path in ("/trickle.jpg", "/trickle-headers.jpg"):
        started = time.monotonic()
        with pytest.raises(fetch.FetchTimeout, match=r"127\.0\.0\.1 did not send the image within 0\.4 s"):
            fetch.fetch_image(images.url(path), policy)
        assert time.monotonic() - started < 0.8, path


@pytest.mark.parametrize(
    ("route", "status", "message"),
    [
        (
            serve(HTML, "image/jpeg"),
            415,
            "the content at 127.0.0.1 is not an image in a supported format: send JPEG, PNG, GIF, WebP, BMP, TIFF",
        ),
        (serve(b"", "image/jpeg"), 400, "127.0.0.1 answered an empty body; give the URL of an image"),
        (serve(b"%PDF-1.7\n" + b"x" * 100, "application/pdf"), 415, "is not an image in a supported format"),
        (
            lambda h: send(h, 404, b"gone", "text/plain"),
            400,
            "127.0.0.1 answered HTTP 404 Not Found; give a URL that answers 200 with the image",
        ),
        (redirect("", 302), 400, "answered a redirect without a Location"),
    ],
)
def test_what_the_server_answers_must_be_an_image(route, status, message, local, client, model, images):
    images.routes["/x"] = route
    got, body = call({"url": images.url("/x")}, local, client)
    assert got == status
    assert message in body["error"]
    assert model.calls == []


def test_a_non_image_is_refused_from_its_first_bytes(local, client, model, images):
    images.routes["/page"] = stalls(HTML, seconds=3)  # sends 51 bytes of a 50,000-byte body, then waits
    started = time.monotonic()
    status, _ = call({"url": images.url("/page")}, dataclasses.replace(local, fetch_timeout=2.0), client)
    assert status == 415
    assert time.monotonic() - started < 1.0  # refused at once, not after waiting for the rest


def test_a_body_cut_short_is_refused(local, client, model, images):
    images.routes["/short.jpg"] = claims_length(50_000)  # sends len(JPEG) bytes, then closes
    status, body = call({"url": images.url("/short.jpg")}, local, client)
    assert status == 400
    assert body["error"] == "127.0.0.1 closed the connection before the whole image arrived"


def test_nothing_listening(local, client, model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        status, body = call({"url": f"http://127.0.0.1:{port}/dog.jpg"}, local, client)
    assert status == 400
    assert body["error"].startswith("could not connect to 127.0.0.1")


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return certificates(tmp_path_factory.mktemp("tls"), "images.test")


def test_https_is_verified_against_the_host_name_sent_as_sni(tls, local, client, model):
    with ImageServer({"/dog.gif": serve(GIF, "image/gif")}, tls=tls.server) as images:
        https = dataclasses.replace(local, allow_http=False)
        status, body = call(
            {"url": images.url("/dog.gif", host="images.test", scheme="https")},
            https,
            client,
            resolver=resolver_to("127.0.0.1"),
            tls=tls.client,
        )
        assert status == 200, body
        assert images.requests == [("/dog.gif", f"images.test:{images.port}", "images.test")]
        assert model.calls[0].body == GIF


def test_a_certificate_for_another_name_is_refused(tls, local, client, model):
    with ImageServer({"/dog.gif": serve(GIF, "image/gif")}, tls=tls.server) as images:
        status, body = call(
            {"url": images.url("/dog.gif", host="impostor.test", scheme="https")},
            local,
            client,
            resolver=resolver_to("127.0.0.1"),
            tls=tls.client,
        )
    assert status == 400
    assert body["error"].startswith("the TLS certificate of impostor.test is not valid for it (Hostname mismatch")
    assert model.calls == []


def test_an_untrusted_certificate_is_refused(tls, local, client, model):
    with ImageServer({"/dog.gif": serve(GIF, "image/gif")}, tls=tls.server) as images:
        status, body = call(
            {"url": images.url("/dog.gif", host="images.test", scheme="https")},
            local,
            client,
            resolver=resolver_to("127.0.0.1"),  # the system's CA certificates: the test CA is not among them
        )
    assert status == 400
    assert "the TLS certificate of images.test is not valid for it" in body["error"]


def test_https_may_not_redirect_to_http_unless_http_is_allowed(tls, local, client, model, images):
    images.routes["/dog.jpg"] = serve(JPEG)
    with ImageServer({"/down": redirect(images.url("/dog.jpg", host="images.test"))}, tls=tls.server) as secure:
        https = dataclasses.replace(local, allow_http=False)
        status, body = call(
            {"url": secure.url("/down", host="images.test", scheme="https")},
            https,
            client,
            resolver=resolver_to("127.0.0.1"),
            tls=tls.client,
        )
    assert status == 400
    assert body["error"] == "the redirect from images.test: http:// is not supported; send an https:// URL"
    assert images.requests == []


# --- image formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (JPEG, "JPEG"),
        (PNG, "PNG"),
        (GIF, "GIF"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "WebP"),
        (b"BM" + bytes(30), "BMP"),
        (b"II*\0" + bytes(8), "TIFF"),
        (b"MM\0*" + bytes(8), "TIFF"),
        (HTML, None),
        (b"BM", None),
        (b"", None),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"\x1f\x8b\x08\x00", None),
    ],
)
def test_image_format_by_magic_number(data, name):
    assert fetch.image_format(data) == name
