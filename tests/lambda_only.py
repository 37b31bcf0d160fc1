"""pytest plugin for `make test-lambda`: tests/lambda_src on the Lambda's own Python, with no CDK installed.

The suite's root conftest synthesizes the app (it imports the CDK), so `make test-lambda` stops conftest
discovery at tests/lambda_src (--confcutdir) and loads this plugin instead: it brings the loopback SageMaker
runtime the Lambda's tests call, and skips the tests that read the synthesized app (`make test` runs them).
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fake_runtime"]

# The root conftest's fixtures that synthesize the app.
APP_FIXTURES = frozenset({"assembly", "foundation"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="reads the synthesized app, which needs the CDK: `make test` runs it")
    for item in items:
        if APP_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)
