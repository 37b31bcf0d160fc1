from __future__ import annotations

import pytest

import handler
from dogbreeds.local.runtime import RuntimeServer
from tests.fake_runtime import CREDENTIALS, ENDPOINT


@pytest.fixture
def settings() -> handler.Settings:
    return handler.Settings(endpoint_name=ENDPOINT, max_image_bytes=64 * 1024, fetch_timeout=2.0)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler's back-off, scaled down 100 times, so retry tests take milliseconds rather than seconds."""
    scaled = {kind: seconds / 100 for kind, seconds in handler.BACKOFF_BASE_SECONDS.items()}
    monkeypatch.setattr(handler, "BACKOFF_BASE_SECONDS", scaled)


@pytest.fixture(scope="session")
def client(fake_runtime: RuntimeServer):
    """The function's own client configuration (timeouts, no retries of its own), pointed at the loopback runtime."""
    settings = handler.Settings(endpoint_name=ENDPOINT, endpoint_timeout=2.0, endpoint_attempts=3)
    return handler.make_client(settings, endpoint_url=fake_runtime.url, **CREDENTIALS)
