"""The Lambda stand-in: one process per execution environment, its own environment, Lambda's context and errors."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from dogbreeds.local.lambda_host import LambdaError, LambdaFunction, function_environment
from tests.local.processes import processes_mentioning

TOY_HANDLER = """
import os
import time

calls = 0


def handler(event, context):
    global calls
    calls += 1
    print("log line of call", calls)
    if event.get("raise"):
        raise ValueError(event["raise"])
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("unserializable"):
        return {1, 2}
    return {
        "calls": calls,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env": {name: os.environ.get(name) for name in event.get("env", [])},
    }
"""


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "app.py").write_text(textwrap.dedent(TOY_HANDLER))
    return folder


def test_the_function_s_environment_is_built_not_inherited(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "AWS_PROFILE": "production",
        "AWS_ACCESS_KEY_ID": "AKIAREAL",
        "AWS_SESSION_TOKEN": "real",
        "AWS_ENDPOINT_URL": "https://real.example",
        "PYTHONPATH": "/repo",
        "NO_PROXY": "corp.example",
    }
    environment = function_environment(
        {"ENDPOINT_NAME": "e"},
        task_dir=tmp_path,
        function_name="f",
        region="eu-west-1",
        memory_mb=512,
        base_environment=base,
    )
    assert {name for name in environment if name.startswith("AWS_")} == {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_EC2_METADATA_DISABLED",
    }
    assert environment["AWS_ACCESS_KEY_ID"] == "local"
    assert environment["AWS_CONFIG_FILE"] == environment["AWS_SHARED_CREDENTIALS_FILE"] == os.devnull
    assert environment["AWS_REGION"] == "eu-west-1"
    assert "PYTHONPATH" not in environment
    assert environment["NO_PROXY"] == "corp.example,127.0.0.1,localhost,::1"
    assert environment["ENDPOINT_NAME"] == "e"
    assert environment["PATH"] == "/usr/bin"


def test_a_warm_environment_keeps_its_module_and_gives_each_call_lambda_s_context(task_dir: Path) -> None:
    with LambdaFunction(task_dir, "app.handler", function_name="toy", timeout_seconds=30) as function:
        first = function.invoke({}, request_id="r-1")
        second = function.invoke({"env": ["AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT"]}, request_id="r-2")
        log = function.log_text()
    assert first["calls"] == 1 and second["calls"] == 2
    assert (first["request_id"], second["request_id"]) == ("r-1", "r-2")
    assert first["function_name"] == "toy"
    assert 0 < first["remaining_ms"] <= 30_000
    assert second["env"] == {"AWS_LAMBDA_FUNCTION_NAME": "toy", "LAMBDA_TASK_ROOT": str(task_dir)}
    assert "log line of call 1\nlog line of call 2\n" in log  # prints go to the log, not into the answer


def test_an_unhandled_error_is_lambda_s_error_payload(task_dir: Path) -> None:
    with LambdaFunction(task_dir, "app.handler") as function:
        with pytest.raises(LambdaError) as raised:
            function.invoke({"raise": "no good"})
        assert raised.value.payload["errorType"] == "ValueError"
        assert raised.value.payload["errorMessage"] == "no good"
        assert function.invoke({})["calls"] == 2  # the environment survives an error
        with pytest.raises(LambdaError) as raised:
            function.invoke({"unserializable": True})
        assert raised.value.payload["errorType"] == "Runtime.MarshalError"


def test_a_handler_that_cannot_be_imported_fails_every_call(task_dir: Path) -> None:
    (task_dir / "broken.py").write_text("raise RuntimeError('missing configuration')\n")
    with LambdaFunction(task_dir, "broken.handler") as function:
        for _ in range(2):
            with pytest.raises(LambdaError, match=r"^RuntimeError: missing configuration$"):
                function.invoke({})


def test_a_call_past_the_timeout_ends_the_environment(task_dir: Path) -> None:
    with LambdaFunction(task_dir, "app.handler", timeout_seconds=0.5) as function:
        function.invoke({})  # the cold start has its own allowance
        with pytest.raises(LambdaError, match=r"^Sandbox\.Timedout: Task timed out after 0\.50 seconds$"):
            function.invoke({"sleep": 30})
        assert function.process is None
        assert not processes_mentioning(str(task_dir))
        assert function.invoke({})["calls"] == 1  # a new environment: a cold start


def test_closing_ends_the_process(task_dir: Path) -> None:
    function = LambdaFunction(task_dir, "app.handler").start()
    function.invoke({})
    assert processes_mentioning(str(task_dir))
    function.close()
    assert not processes_mentioning(str(task_dir))
