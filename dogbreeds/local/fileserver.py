"""The files of one folder over HTTP on a loopback port: the web server that an image URL points at."""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from dogbreeds.local.loopback import LoopbackServer


class FileServer(LoopbackServer):
    """``GET /<name>`` answers ``directory/<name>``; a context manager, serving in a daemon thread.

    ``requests`` lists what was asked for, as ``(method, path, status)``.
    """

    thread_name = "file-server"

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory)
        self.host, self.port = host, port
        self.requests: list[tuple[str, str, int]] = []
        super().__init__()

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def url_of(self, name: str) -> str:
        return f"{self.url}/{quote(name)}"

    def make_server(self) -> ThreadingHTTPServer:
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                requests.append((self.command, self.path, int(code) if str(code).isdigit() else 0))

            def log_message(self, format: str, *args: object) -> None:  # the base class's signature
                pass

        return ThreadingHTTPServer((self.host, self.port), functools.partial(Handler, directory=str(self.directory)))
