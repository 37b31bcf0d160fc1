"""The invoker Lambda's handler, run as the Lambda service runs it: in its own process, with its own environment.

``LambdaFunction`` is one execution environment (a child process running ``lambda_bootstrap.py``): a cold
start, then warm calls; its environment is built, not inherited, so nothing reaches a real account. What
it sets and why: docs/local-mode.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from dogbreeds.local.training_job import stop_process

BOOTSTRAP = Path(__file__).resolve().parent / "lambda_bootstrap.py"
INIT_SECONDS = 10  # Lambda's limit on the init phase (the handler module's import)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


class LambdaError(Exception):
    """The function failed: an unhandled error (``payload`` as Lambda reports it), a timeout or a crash."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        super().__init__(f"{payload.get('errorType', 'Error')}: {payload.get('errorMessage', '')}")
        self.payload = dict(payload)


def function_environment(
    variables: Mapping[str, str],
    *,
    task_dir: Path,
    function_name: str,
    region: str,
    memory_mb: int,
    base_environment: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of the function's process: its variables, Lambda's, dummy credentials (docs/local-mode.md)."""
    source = os.environ if base_environment is None else base_environment
    environment = {name: value for name, value in source.items() if not name.startswith("AWS_")}
    environment.pop("PYTHONPATH", None)
    no_proxy = ",".join(filter(None, [source.get("NO_PROXY") or source.get("no_proxy"), *LOOPBACK_HOSTS]))
    environment |= {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "LAMBDA_TASK_ROOT": str(task_dir),
        **DUMMY_CREDENTIALS,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the function's folder is read-only in Lambda
    }
    return environment | dict(variables)


class LambdaFunction:
    """One execution environment of a Python Lambda function; a context manager."""

    def __init__(
        self,
        task_dir: Path,
        handler: str = "handler.handler",
        *,
        environment: Mapping[str, str] | None = None,
        function_name: str = "local-function",
        region: str = "us-east-1",
        memory_mb: int = 512,
        timeout_seconds: float = 30,
    ) -> None:
        self.task_dir = Path(task_dir)
        self.handler = handler
        self.timeout_seconds = timeout_seconds
        self.environment = function_environment(
            environment or {},
            task_dir=self.task_dir,
            function_name=function_name,
            region=region,
            memory_mb=memory_mb,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pending = b""
        self._warm = False

    def start(self) -> LambdaFunction:
        if self.process is not None:
            return self
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open until stop)
        self.process = subprocess.Popen(  # noqa: S603 (this interpreter and the bootstrap script)
            [sys.executable, str(BOOTSTRAP), str(self.task_dir), self.handler, str(self.timeout_seconds)],
            cwd=self.task_dir,
            env=self.environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            bufsize=0,
            start_new_session=True,
        )
        self._pending, self._warm = b"", False
        return self

    def invoke(self, event: Any, request_id: str | None = None) -> Any:
        """``handler(event, context)``'s result; ``LambdaError`` when it raised, timed out or crashed."""
        self.start()
        assert self.process is not None and self.process.stdin is not None
        request = {"event": event, "request_id": request_id or str(uuid.uuid4())}
        seconds = self.timeout_seconds + (0 if self._warm else INIT_SECONDS)
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            answer = json.loads(self._read_line(time.monotonic() + seconds))
        except TimeoutError:
            self.stop(grace_seconds=0)  # Lambda resets an environment whose invocation timed out
            raise LambdaError(
                {"errorType": "Sandbox.Timedout", "errorMessage": f"Task timed out after {seconds:.2f} seconds"}
            ) from None
        except (BrokenPipeError, EOFError):
            log = self.log_text()
            self.stop()
            raise LambdaError(
                {"errorType": "Runtime.ExitError", "errorMessage": f"the function's process exited; its log:\n{log}"}
            ) from None
        self._warm = True
        if "error" in answer:
            raise LambdaError(answer["error"])
        return answer["result"]

    def log_text(self) -> str:
        """The function's log so far."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", errors="replace")

    def stop(self, grace_seconds: float = 2) -> None:
        """End the function's process; the log stays readable until the next ``start``.

        An idle process ends by itself at the end of its input; after ``grace_seconds`` it is terminated.
        """
        if self.process is None:
            return
        process, self.process = self.process, None
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace_seconds)
        stop_process(process, timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def close(self) -> None:
        """``stop``, and the log is gone."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LambdaFunction:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _read_line(self, deadline: float) -> bytes:
        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([stream], [], [], remaining)
            if ready:
                chunk = os.read(stream.fileno(), 1 << 16)
                if not chunk:
                    raise EOFError
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line
