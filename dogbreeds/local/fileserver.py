"""The files of one folder over HTTP on a loopback port: the web server that an image URL points at."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote


class FileServer:
    """``GET /<name>`` answers ``directory/<name>``; a context manager, serving in a daemon thread.

    ``requests`` lists what was asked for, as ``(method, path, status)``.
    """

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory)
        self.host, self.port = host, port
        self.requests: list[tuple[str, str, int]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the file server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url_of(self, name: str) -> str:
        return f"{self.url}/{quote(name)}"

    def start(self) -> FileServer:
        if self._server is not None:
            return self
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                requests.append((self.command, self.path, int(code) if str(code).isdigit() else 0))

            def log_message(self, format: str, *args: object) -> None:  # the base class's signature
                pass

        self._server = ThreadingHTTPServer(
            (self.host, self.port), functools.partial(Handler, directory=str(self.directory))
        )
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="file-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
