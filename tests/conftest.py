from __future__ import annotations

import os

# As in app.py: no jsii Node.js 20 end-of-life banner, in this process (set before anything imports aws_cdk)
# or in the synths and CDK CLI runs the tests start.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import pytest

from dogbreeds_stacks.settings import Settings, defaults
from tests.synth import Assembly, synthesize

# The loopback SageMaker runtime with a fake model (tests/lambda_src and tests/local use it).
pytest_plugins = ["tests.fake_runtime"]


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The defaults from cdk.json."""
    return Settings.from_mapping(defaults())


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """The whole app with default settings, synthesized once (cdk-nag runs as part of it)."""
    return synthesize(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def foundation(assembly: Assembly) -> dict:
    return assembly.template("foundation")
