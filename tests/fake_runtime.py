"""A loopback SageMaker runtime with a scripted fake model behind it: the fixtures the Lambda's tests and
the runtime's own tests share (a pytest plugin of the root conftest)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.retries.standard import ExponentialBackoff

from dogbreeds.local.runtime import Backend, RuntimeServer
from tests.lambda_src.servers import FakeModel

ENDPOINT = "dogbreeds-endpoint"
CREDENTIALS = {"region_name": "eu-west-1", "aws_access_key_id": "local", "aws_secret_access_key": "local"}


@pytest.fixture(scope="session")
def backends() -> dict[str, Backend]:
    return {}


@pytest.fixture(scope="session")
def fake_runtime(backends: dict[str, Backend]) -> Iterator[RuntimeServer]:
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
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's backoff, scaled down 100 times, so retry tests take milliseconds rather than seconds."""
    monkeypatch.setattr(
        ExponentialBackoff,
        "_DEFAULT_BACKOFF_CONFIG",
        {"throttling_base_scale": 0.01, "non_throttling_base_scale": 0.0005},
    )
