"""Fixtures for the operator CLI's tests: an isolated AWS environment, moto, stubbed clients, the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import boto3
import pytest
from moto import mock_aws

from dogbreeds import cli
from dogbreeds.ops import aws as aws_module
from tests.dogbreeds.fakes import REGION, FakeSession, FakeStacks, stack_outputs

BUCKET = "dogbreeds-artifacts-test"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No real AWS configuration can leak in: fake keys, no config files, no instance metadata."""
    import os

    for var in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def fake(aws_env, monkeypatch: pytest.MonkeyPatch) -> FakeSession:
    """Every stack deployed (FakeStacks); moto behind the clients that are not stubbed."""
    with mock_aws():
        session = FakeSession(FakeStacks(stack_outputs(bucket=BUCKET)))
        opened: list[tuple] = []

        def new_session(profile, region):
            opened.append((profile, region))
            return session

        monkeypatch.setattr(aws_module, "new_session", new_session)
        session.opened = opened
        yield session


@pytest.fixture
def bucket(fake: FakeSession) -> str:
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return BUCKET


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``dogbreeds <args>``: the exit code and what it printed."""

    def run(*args: str) -> Result:
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
