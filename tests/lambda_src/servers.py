"""Loopback servers and fakes for the Lambda tests: a scriptable image server (HTTP or HTTPS), a fake
model behind the runtime server, a Lambda context, and the smallest files of each image format."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dogbreeds.local.runtime import Invocation, ModelResponse, ServiceFault

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 64
GIF = b"GIF89a\x01\x00\x01\x00" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
BMP = b"BM" + b"\x00" * 60
TIFF = b"II*\x00\x08\x00\x00\x00" + b"\x00" * 32
HTML = b"<!doctype html><html><body>not a dog</body></html>"

PREDICTIONS = [
    {"label": "Carolina dog", "index": 42, "probability": 0.912345},
    {"label": "Dingo", "index": 0, "probability": 0.05},
]
MODEL = {"backbone": "resnet50", "num_classes": 133, "version": "0123456789ab"}


class FakeContext:
    """The parts of the Lambda context the handler reads."""

    def __init__(self, request_id: str = "req-0001") -> None:
        self.aws_request_id = request_id
        self.function_name = "dogbreeds-invoker"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@dataclass
class FakeModel:
    """A backend: answers each invocation with the next of ``answers`` (the last one repeats);
    an answer may be a ModelResponse, or an exception to raise."""

    answers: list[ModelResponse | BaseException] = field(default_factory=list)
    delay: float = 0.0
    calls: list[Invocation] = field(default_factory=list)

    def __call__(self, invocation: Invocation) -> ModelResponse:
        self.calls.append(invocation)
        if self.delay:
            time.sleep(self.delay)
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1] if self.answers else predictions()
        if isinstance(answer, BaseException):
            raise answer
        return answer


def predictions(top_k: int = 2) -> ModelResponse:
    return ModelResponse(
        200, "application/json", json.dumps({"predictions": PREDICTIONS[:top_k], "model": MODEL}).encode()
    )


def toolkit_error(status: int, message: str) -> ModelResponse:
    """The inference toolkit's error answer: the message, then the Python traceback."""
    body = (
        f"{message}\nTraceback (most recent call last):\n"
        '  File "/opt/ml/model/code/inference.py", line 140, in input_fn\n'
        "    raise _bad_request(message)\n"
        f"sagemaker_inference.errors.GenericInferenceToolkitError: {message}\n"
    )
    return ModelResponse(status, "text/plain", body.encode())


THROTTLED = ServiceFault.throttling()


# --- a scriptable image server ------------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


class ImageServer:
    """A loopback HTTP(S) server; ``routes`` maps a path to a function that answers the request.
    ``requests`` records (path, Host header, SNI name) of every request."""

    def __init__(self, routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str | None, str | None]] = []
        self._tls = tls
        self._sni = threading.local()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    def __enter__(self) -> ImageServer:
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                sni = getattr(self.connection, "sni_name", None)
                server_ref.requests.append((self.path, self.headers.get("Host"), sni))
                route = server_ref.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    send(self, 404, b"not found", "text/plain")
                    return
                # The client hanging up is what many tests expect of it.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def get_request(inner) -> tuple[socket.socket, object]:
                sock, address = inner.socket.accept()
                if server_ref._tls is not None:
                    sock = server_ref._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                return sock, address

        if self._tls is not None:

            def remember_sni(sock: ssl.SSLSocket, name: str | None, context: ssl.SSLContext) -> None:
                sock.sni_name = name  # type: ignore[attr-defined]

            self._tls.sni_callback = remember_sni
        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "image/jpeg") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def serve(body: bytes, content_type: str = "image/jpeg") -> Route:
    return lambda handler: send(handler, 200, body, content_type)


def redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def claims_length(length: int) -> Route:
    """Announces a huge body and sends a little of it."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(JPEG)

    return route


def endless_chunks(chunk: bytes, sent: list[int]) -> Route:
    """A chunked JPEG that never ends (until the client hangs up); ``sent`` counts the bytes written."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(JPEG), JPEG))
        sent.append(len(JPEG))
        for _ in range(10_000):  # at most 10,000 chunks: the test fails rather than hangs
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent.append(len(chunk))

    return route


def stalls(after: bytes, seconds: float, *, headers: bool = True, length: int = 50_000) -> Route:
    """Sends headers announcing ``length`` bytes (or no headers) and ``after``, then nothing for ``seconds``."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        if headers:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(length))
            handler.end_headers()
        handler.wfile.write(after)
        handler.wfile.flush()
        time.sleep(seconds)

    return route


def trickles(data: bytes, every: float, *, in_headers: bool = False) -> Route:
    """Sends one byte every ``every`` seconds: of the body, or of the status line and headers."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        if in_headers:
            payload = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 2000 + b"\r\n\r\n" + data
        else:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.flush()
            payload = data
        for byte in payload:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)

    return route


# --- TLS --------------------------------------------------------------------------------------


@dataclass
class Certificates:
    server: ssl.SSLContext  # presents a certificate for ``host``
    client: ssl.SSLContext  # trusts the test CA only


def certificates(directory: Path, host: str) -> Certificates:
    """A test CA and a server certificate for ``host`` (and 127.0.0.1), with EC keys (fast)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("dogbreeds test CA"))
        .issuer_name(name("dogbreeds test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "server.pem", directory / "server.key")
    client = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    return Certificates(server, client)


def resolver_to(*addresses: str, calls: list[tuple[str, int]] | None = None) -> Callable[[str, int], list[str]]:
    """A resolver that answers ``addresses`` for any name (and records what it was asked)."""

    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append((host, port))
        return list(addresses)

    return resolve


def body_of(response: dict) -> dict:
    return json.loads(response["body"])


def log_lines(text: str) -> Iterator[dict]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)
