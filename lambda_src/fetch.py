"""Fetch the image at a URL a caller gave, without letting the URL reach anything but a public web server.

The guards, in the order a fetch meets them:

- the URL: at most ``MAX_URL_LENGTH`` characters, no spaces or control characters, scheme https
  (http only when the policy allows it), no credentials (``user:pass@``), a host name or a canonical
  IP address (``127.1``, ``0x7f000001`` and other shorthand spellings are refused), the scheme's own
  port (the function's security group opens no other);
- the addresses: the host is resolved once (the resolver is injectable), and every address must be
  public: loopback, private, shared (100.64/10), link-local (the instance metadata service, 169.254/16
  and fd00:ec2::254 among them), multicast, reserved, unspecified, documentation and benchmarking
  ranges are refused, in IPv4 and IPv6, also when embedded in IPv6 (IPv4-mapped, -compatible and
  -translated, NAT64, 6to4). ``allow_loopback`` (local mode) admits 127.0.0.0/8 and ::1, on any port;
- the connection goes to the vetted address itself, never to the name (no second lookup that DNS
  rebinding could answer differently); TLS is verified against the host name, which is also sent as
  SNI and in the Host header;
- redirects are followed by hand, at most ``max_redirects``, each new URL checked as the first;
- time: ``timeout`` for the connection and for each read, and an overall deadline (the resolver
  included) after which a watchdog closes the socket;
- size: ``max_bytes``, checked against Content-Length before reading and counted while reading, so a
  large or endless body is never downloaded in full;
- content: the first bytes must be one of the image formats the endpoint decodes (``FORMATS``).

Every refusal is a ``FetchError`` with a one-line message that says what was wrong and what is
accepted; ``ImageTooLarge`` and ``NotAnImage`` are its kinds that deserve their own status code. A value
the caller or a server gave is quoted by ``shown`` only: in ASCII, at most ``QUOTE_LIMIT`` characters.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import SplitResult, quote, urljoin, urlsplit

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"https": 443, "http": 80}
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "dogbreeds-invoker/1.0"
_CHUNK = 64 * 1024
_SNIFF_BYTES = 12  # enough for every signature below
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"  # reserved characters and escapes stay; only non-ASCII is quoted
QUOTE_LIMIT = 100  # characters of a value that a message repeats

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses``, as strings; raises ``OSError`` when the name does not resolve."""


class FetchError(Exception):
    """The URL is not allowed, or its server did not give an image: the caller's to fix."""


class FetchTimeout(FetchError):
    """The server was too slow: no connection, a silent read, or the overall deadline passed."""


class ImageTooLarge(FetchError):
    """More bytes than the image limit."""


class NotAnImage(FetchError):
    """Bytes that are none of the accepted image formats."""


# inference.py (the model's code, shipped apart from this function) has the same shown(); a test keeps them equal.
def shown(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``value`` as a message may quote it: in ASCII (escapes for the rest, lone surrogates included), at
    most ``limit`` characters; a list or an object only by its kind. The one way the function's messages
    quote what a caller or a server sent."""
    if isinstance(value, bool | float) or value is None:
        text = ascii(value)
    elif isinstance(value, int):  # str() of an int of more than 4300 digits raises ValueError
        digits = int(value.bit_length() * math.log10(2)) + 1
        text = str(value) if digits <= limit else f"a whole number of about {digits:,} digits"
    elif isinstance(value, str | bytes | bytearray):
        text = ascii(value[: limit + 1])
    elif isinstance(value, list | tuple):
        text = "a list"
    elif isinstance(value, dict):
        text = "an object"
    else:
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reason(err: BaseException) -> str:
    """What an exception says, as a message may repeat it: its first line, at most ``QUOTE_LIMIT`` characters."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


# --- image formats ------------------------------------------------------------------------------

FORMATS = ("JPEG", "PNG", "GIF", "WebP", "BMP", "TIFF")  # what the endpoint decodes (training/inference.py)


def image_format(data: bytes | bytearray) -> str | None:
    """The image format that ``data`` starts with, by its magic number, or None."""
    head = bytes(data[:_SNIFF_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM") and len(data) >= 26:  # file header (14) and the smallest DIB header (12)
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


def require_image(data: bytes | bytearray, name: str) -> str:
    """The format of ``data``; ``NotAnImage`` naming ``name`` and the accepted formats otherwise."""
    found = image_format(data)
    if found is None:
        raise NotAnImage(f"{name} is not an image in a supported format: send {', '.join(FORMATS)}")
    return found


# --- addresses ----------------------------------------------------------------------------------


def _networks(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in pairs)


_IPV4_NOT_PUBLIC = _networks(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (instance metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # and 255.255.255.255, the broadcast address
)
_IPV6_NOT_PUBLIC = _networks(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private (local-use NAT64)"),
    ("100::/64", "reserved (discard-only)"),
    ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
    ("2001:db8::/32", "reserved (documentation)"),
    ("3fff::/20", "reserved (documentation)"),
    ("5f00::/16", "reserved (segment routing)"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local (instance metadata)"),
    ("fec0::/10", "private (site-local)"),
    ("ff00::/8", "multicast"),
)
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Verdict(NamedTuple):
    """Whether an address may be fetched from, and the address to connect to."""

    kind: str | None  # None: public; else what it is ("private", "loopback", ...)
    connect_to: IPAddress  # the IPv4 address itself for IPv4-mapped, -compatible and -translated forms
    note: str = ""  # ", which embeds 10.0.0.1" for the embedded forms


def classify(address: IPAddress) -> Verdict:
    """What ``address`` is: public (``kind`` None) or the kind of non-public address it is."""
    if isinstance(address, ipaddress.IPv4Address):
        return Verdict(_ipv4_kind(address), address)
    embedded, connect_directly = _embedded_ipv4(address)
    if embedded is not None:
        kind = _ipv4_kind(embedded)
        return Verdict(kind, embedded if connect_directly else address, f", which embeds {embedded}")
    for network, kind in _IPV6_NOT_PUBLIC:
        if address in network:
            return Verdict(kind, address)
    if address not in _IPV6_GLOBAL_UNICAST or not address.is_global:
        return Verdict("reserved", address)
    return Verdict(None, address)


def _ipv4_kind(address: ipaddress.IPv4Address) -> str | None:
    for network, kind in _IPV4_NOT_PUBLIC:
        if address in network:
            return kind
    return None if address.is_global else "reserved"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address | None, bool]:
    """The IPv4 address inside an IPv6 one, and whether a connection should go to it directly."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, True
    if address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), True
    if address in _NAT64:  # reached through the NAT64 gateway, so connect to the IPv6 address
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), False
    if address.sixtofour is not None:
        return address.sixtofour, False
    return None, False


# --- policy and result --------------------------------------------------------------------------


def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver, without duplicates, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    timeout: float = 5.0  # seconds, for the connection and for each read
    deadline: float | None = None  # seconds for the whole fetch, redirects included; None: ``timeout``
    allow_http: bool = False
    allow_loopback: bool = False  # local mode: 127.0.0.0/8 and ::1, on any port
    max_redirects: int = 3
    resolver: Resolver = resolve
    tls: ssl.SSLContext | None = field(default=None, compare=False)  # None: the system's CA certificates

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_http else ("https",)


class Fetched(NamedTuple):
    data: bytes
    format: str
    url: str  # after redirects
    redirects: int
    content_type: str | None


class _Target(NamedTuple):
    url: str
    scheme: str
    host: str  # ASCII, lower case, without brackets
    port: int
    port_given: bool
    path: str  # the request target: path and query, percent-encoded

    @property
    def display(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def fetch_image(url: str, policy: FetchPolicy) -> Fetched:
    """The image at ``url``, under ``policy``; ``FetchError`` (or one of its kinds) otherwise."""
    deadline = _Deadline(policy.timeout if policy.deadline is None else policy.deadline)
    target = parse_url(url, policy)
    for redirects in range(policy.max_redirects + 1):
        addresses = _vetted_addresses(target, policy, deadline)
        answer = _get(target, addresses, policy, deadline)
        if answer.location is None:
            return Fetched(answer.data, answer.format, target.url, redirects, answer.content_type)
        target = parse_url(answer.location, policy, redirected_from=target)
    raise FetchError(f"the URL redirects more than {policy.max_redirects} times; give the image's own URL")


def parse_url(url: str, policy: FetchPolicy, *, redirected_from: _Target | None = None) -> _Target:
    """``url`` (a redirect's Location, relative to ``redirected_from``) checked for everything that can be
    checked before resolving its host: the target, or ``FetchError``, whatever the string holds."""
    what = "the URL" if redirected_from is None else f"the redirect from {redirected_from.display}"
    try:
        if redirected_from is not None:
            url = urljoin(redirected_from.url, url)
        return _parse_url(url, policy, what)
    except FetchError:
        raise
    except Exception as err:  # the parsing boundary: no string may fail otherwise
        raise FetchError(f"{what} is not a valid URL ({type(err).__name__}: {reason(err)})") from err


def _parse_url(url: str, policy: FetchPolicy, what: str) -> _Target:
    url = url.strip()
    accepted = " or ".join(f"{scheme}://" for scheme in policy.schemes)
    if not url:
        raise FetchError(f"{what} is empty; send an {accepted} URL")
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(f"{what} has {len(url):,} characters; at most {MAX_URL_LENGTH:,} are accepted")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in url):
        raise FetchError(f"{what} contains spaces or control characters; percent-encode them")
    if any(0xD800 <= ord(char) <= 0xDFFF for char in url):
        raise FetchError(f"{what} contains characters that are not valid Unicode (lone surrogates)")
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise FetchError(f"{what} is not a valid URL ({reason(err)})") from err
    scheme = parts.scheme.lower()
    if scheme not in policy.schemes:
        shown = f"{scheme}://" if scheme else "a URL without a scheme"
        raise FetchError(f"{what}: {shown} is not supported; send an {accepted} URL")
    if "@" in parts.netloc:
        raise FetchError(f"{what} contains credentials (user:password@); send a URL without them")
    host = _ascii_host(parts, what)
    try:
        port = parts.port
    except ValueError as err:
        raise FetchError(f"{what} has an invalid port; ports are numbers from 1 to 65535") from err
    if port == 0:
        raise FetchError(f"{what} has an invalid port; ports are numbers from 1 to 65535")
    path = quote(parts.path or "/", safe=_URL_SAFE) + (f"?{quote(parts.query, safe=_URL_SAFE)}" if parts.query else "")
    return _Target(url, scheme, host, port or DEFAULT_PORTS[scheme], port is not None, path)


def _ascii_host(parts: SplitResult, what: str) -> str:
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchError(f"{what} has no host name")
    if len(host) > 253:
        raise FetchError(f"{what} has a host name of {len(host)} characters; at most 253 are valid")
    if ":" in host:  # a bracketed IPv6 literal
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError as err:
            raise FetchError(f"{what} has an invalid IPv6 address {shown(host)}") from err
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as err:
        raise FetchError(f"{what} has an invalid host name {shown(host)}") from err
    last_label = host.rsplit(".", 1)[-1]
    if re.fullmatch(r"[0-9]+|0x[0-9a-f]*", last_label):  # an IPv4 address, or a shorthand for one
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError as err:
            raise FetchError(
                f"{what} has host {shown(host)}, not a valid IPv4 address; write addresses as four decimal numbers"
            ) from err
    if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*", host):
        raise FetchError(f"{what} has an invalid host name {shown(host)}")
    return host


def _vetted_addresses(target: _Target, policy: FetchPolicy, deadline: _Deadline) -> list[IPAddress]:
    """The addresses to connect to, all public (or loopback in local mode); ``FetchError`` otherwise."""
    literal = _literal(target.host)
    addresses = [literal] if literal is not None else _resolved(target, policy, deadline)
    if not addresses:
        raise FetchError(f"the host {target.host} has no address; give a URL whose host resolves")
    vetted: list[IPAddress] = []
    all_loopback = True
    for address in addresses:
        verdict = classify(address)
        loopback = verdict.kind == "loopback" and policy.allow_loopback
        all_loopback = all_loopback and loopback
        if verdict.kind is not None and not loopback:
            what = f"{verdict.note}{',' if verdict.note else ''} is a {verdict.kind} address"
            if str(address) != target.host:
                what = f" resolves to {address}{verdict.note}, a {verdict.kind} address"
            raise FetchError(f"the host {target.display}{what}; only images on public addresses are fetched")
        vetted.append(verdict.connect_to)
    if target.port_given and target.port != DEFAULT_PORTS[target.scheme] and not all_loopback:
        raise FetchError(
            f"the URL's port {target.port} is not allowed; {target.scheme}:// URLs are fetched from port "
            f"{DEFAULT_PORTS[target.scheme]} only"
        )
    return list(dict.fromkeys(vetted))


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolved(target: _Target, policy: FetchPolicy, deadline: _Deadline) -> list[IPAddress]:
    addresses = []
    for name in _resolve(target, policy, deadline):
        address = _literal(name)
        if address is None:
            raise FetchError(f"the host {target.host} resolved to {shown(name)}, not an IP address")
        addresses.append(address)
    return addresses


def _resolve(target: _Target, policy: FetchPolicy, deadline: _Deadline) -> Sequence[str]:
    """``policy.resolver`` under the deadline (``getaddrinfo`` has no timeout of its own)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(policy.resolver(target.host, target.port))
        except Exception as err:
            outcome.append(err)

    worker = threading.Thread(target=run, name="fetch-resolve", daemon=True)
    worker.start()
    worker.join(deadline.remaining(target.display))
    if not outcome:
        raise FetchTimeout(f"resolving {target.host} took longer than {deadline.seconds:g} s")
    if isinstance(outcome[0], (OSError, UnicodeError)):
        raise FetchError(f"the host {target.host} does not resolve; give a URL whose host exists")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[return-value]


# --- the request --------------------------------------------------------------------------------


class _Connection(http.client.HTTPConnection):
    """HTTP(S) to one vetted address, while Host, SNI and the certificate check use the host name."""

    def __init__(self, target: _Target, address: IPAddress, timeout: float, tls: ssl.SSLContext | None) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = str(address)
        self._tls = tls

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Answer(NamedTuple):
    location: str | None  # a redirect's; None: the image
    data: bytes = b""
    format: str = ""
    content_type: str | None = None


def _get(target: _Target, addresses: list[IPAddress], policy: FetchPolicy, deadline: _Deadline) -> _Answer:
    """GET ``target``: the image, or the Location of a redirect."""
    tls = (policy.tls or _default_tls()) if target.scheme == "https" else None
    connection = _connect(target, addresses, policy, deadline, tls)
    sock = connection.sock  # getresponse() hands it to the response; keep it for timeouts and the watchdog
    watchdog = threading.Timer(deadline.seconds, _abort, (sock,))
    response: http.client.HTTPResponse | None = None
    try:
        watchdog.interval = deadline.remaining(target.display)
        watchdog.daemon = True
        watchdog.start()
        connection.putrequest("GET", target.path, skip_accept_encoding=True)
        connection.putheader("Accept", "image/*")
        connection.putheader("Accept-Encoding", "identity")
        connection.putheader("User-Agent", USER_AGENT)
        connection.putheader("Connection", "close")
        connection.endheaders()
        response = connection.getresponse()
        if response.status in REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise FetchError(f"{target.display} answered a redirect without a Location; give the image's URL")
            return _Answer(location)
        if response.status != HTTPStatus.OK:
            raise FetchError(
                f"{target.display} answered HTTP {response.status} {_phrase(response.status)}; "
                "give a URL that answers 200 with the image"
            )
        return _read_image(response, sock, target, policy, deadline)
    except (TimeoutError, OSError, ValueError, http.client.HTTPException) as err:
        raise _failure(err, target, policy, deadline) from err
    finally:
        watchdog.cancel()
        if response is not None:
            response.close()
        connection.close()
        if sock is not None:
            sock.close()


def _connect(
    target: _Target,
    addresses: list[IPAddress],
    policy: FetchPolicy,
    deadline: _Deadline,
    tls: ssl.SSLContext | None,
) -> _Connection:
    """A connection to the first of ``addresses`` that answers in time."""
    failure: BaseException | None = None
    for address in addresses:
        connection = _Connection(target, address, min(policy.timeout, deadline.remaining(target.display)), tls)
        try:
            connection.connect()
        except ssl.SSLCertVerificationError as err:
            raise FetchError(
                f"the TLS certificate of {target.display} is not valid for it ({err.verify_message}); "
                "give an https:// URL with a valid certificate"
            ) from err
        except ssl.SSLError as err:
            raise FetchError(f"the TLS handshake with {target.display} failed ({err.reason})") from err
        except OSError as err:
            failure = err
            continue
        return connection
    if isinstance(failure, TimeoutError):
        raise FetchTimeout(f"{target.display} did not accept a connection within {policy.timeout:g} s")
    raise FetchError(f"could not connect to {target.display} ({reason(failure)}); give a URL whose server is reachable")


def _read_image(
    response: http.client.HTTPResponse, sock: socket.socket, target: _Target, policy: FetchPolicy, deadline: _Deadline
) -> _Answer:
    """The body, read in chunks: never more than ``max_bytes`` + 1, and refused as soon as it is no image."""
    limit = policy.max_bytes
    if response.length is not None and response.length > limit:
        raise ImageTooLarge(
            f"the image at {target.display} has {response.length:,} bytes; at most {limit:,} are accepted"
        )
    data = bytearray()
    found: str | None = None
    while True:
        sock.settimeout(min(policy.timeout, deadline.remaining(target.display)))
        chunk = response.read1(min(_CHUNK, limit + 1 - len(data)))  # what has arrived, up to that
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ImageTooLarge(
                f"the image at {target.display} has more than {limit:,} bytes; at most {limit:,} are accepted"
            )
        if found is None and len(data) >= _SNIFF_BYTES:  # refuse a non-image before reading it all
            found = require_image(data, f"the content at {target.display}")
    if deadline.passed():  # the watchdog shut the socket: what arrived is a truncated body
        raise FetchTimeout(deadline.message(target.display))
    if response.length:  # http.client answers b"" when the server closes early; Content-Length tells
        raise FetchError(f"{target.display} closed the connection before the whole image arrived")
    if not data:
        raise FetchError(f"{target.display} answered an empty body; give the URL of an image")
    found = found or require_image(data, f"the content at {target.display}")
    return _Answer(None, bytes(data), found, response.getheader("Content-Type"))


def _failure(err: BaseException, target: _Target, policy: FetchPolicy, deadline: _Deadline) -> FetchError:
    if deadline.passed():
        return FetchTimeout(deadline.message(target.display))
    if isinstance(err, TimeoutError):
        return FetchTimeout(f"{target.display} sent nothing for {policy.timeout:g} s")
    if isinstance(err, http.client.IncompleteRead):
        return FetchError(f"{target.display} closed the connection before the whole image arrived")
    if isinstance(err, http.client.HTTPException | ValueError):
        return FetchError(f"{target.display} answered a malformed HTTP response ({type(err).__name__})")
    return FetchError(f"the connection to {target.display} failed ({reason(err)})")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _abort(sock: socket.socket | None) -> None:
    """The watchdog: end a fetch past its deadline, whatever read it is blocked in."""
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the TCP socket itself, below any TLS layer


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self._end

    def remaining(self, host: str) -> float:
        """Seconds left; ``FetchTimeout`` naming ``host`` when none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise FetchTimeout(self.message(host))
        return left

    def message(self, host: str) -> str:
        return f"{host} did not send the image within {self.seconds:g} s"


_TLS: ssl.SSLContext | None = None


def _default_tls() -> ssl.SSLContext:
    """The system's CA certificates, loaded on the first https fetch and kept for warm invocations."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
    return _TLS
