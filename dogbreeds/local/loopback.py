"""What local mode's HTTP stand-ins share: an HTTP server on a loopback port, in a daemon thread.

``LoopbackServer`` is the lifecycle (start once, stop once, a context manager); each stand-in says how its
server is made (``make_server``) and what it does once the server is stopped (``after_stop``).
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackServer:
    """Serves ``make_server()`` in a daemon thread from ``start()`` to ``stop()``; ``with`` does both."""

    thread_name = "loopback-http"
    poll_interval = 0.5  # seconds between serve_forever's checks for shutdown()

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def make_server(self) -> ThreadingHTTPServer:
        raise NotImplementedError

    def after_stop(self) -> None:
        """What a stand-in releases once its server has stopped."""

    @property
    def server_address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError(f"the {self.thread_name} server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = self.make_server()
        server.daemon_threads = True
        _host, port = server.server_address[:2]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name=f"{self.thread_name}:{port}",
            daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)
        self.after_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
