from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.retries.standard import ExponentialBackoff

import handler
from dogbreeds.local.runtime import Backend, RuntimeServer
from tests.lambda_src.servers import FakeModel

ENDPOINT = "dogbreeds-endpoint"
CREDENTIALS = {"region_name": "eu-west-1", "aws_access_key_id": "local", "aws_secret_access_key": "local"}


@pytest.fixture(scope="session")
def backends() -> dict[str, Backend]:
    return {}


@pytest.fixture(scope="session")
def runtime(backends: dict[str, Backend]) -> Iterator[RuntimeServer]:
    """One loopback SageMaker runtime for the session; each test puts its model in ``backends``."""
    with RuntimeServer(backends) as server:
        yield server


@pytest.fixture
def model(backends: dict[str, Backend]) -> Iterator[FakeModel]:
    """The fake model behind ``ENDPOINT``: answers predictions unless a test scripts other answers."""
    fake = FakeModel()
    backends[ENDPOINT] = fake
    yield fake
    backends.pop(ENDPOINT, None)


@pytest.fixture
def settings() -> handler.Settings:
    return handler.Settings(endpoint_name=ENDPOINT, max_image_bytes=64 * 1024, fetch_timeout=2.0)


@pytest.fixture(scope="session")
def client(runtime: RuntimeServer):
    """The function's own client configuration (timeouts, standard retries), pointed at the loopback runtime."""
    settings = handler.Settings(endpoint_name=ENDPOINT, endpoint_timeout=2.0, endpoint_attempts=3)
    return handler.make_client(settings, endpoint_url=runtime.url, **CREDENTIALS)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's backoff, scaled down 100 times, so retry tests take milliseconds rather than seconds."""
    monkeypatch.setattr(
        ExponentialBackoff,
        "_DEFAULT_BACKOFF_CONFIG",
        {"throttling_base_scale": 0.01, "non_throttling_base_scale": 0.0005},
    )
