"""The Lambda runtime's part, in a child process: import the handler once, then call it for every event.

Run as a script by ``lambda_host`` (standard library only, so that the function's folder is first on
``sys.path``): one JSON line in per invocation, one out per answer. The protocol: docs/local-mode.md.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any


class LambdaContext:
    """The context object of the Lambda Python runtime: request id, function identity, remaining time."""

    def __init__(self, request_id: str, timeout_seconds: float) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.invoked_function_arn = f"arn:aws:lambda:{region}:123456789012:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def error_payload(error: BaseException) -> dict[str, Any]:
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


def main(argv: list[str]) -> int:
    task_dir, handler_name, timeout = argv[0], argv[1], float(argv[2])
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the function's prints go to its log
    sys.path[0] = task_dir  # instead of this script's folder
    module_name, _, function_name = handler_name.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
        init_error = None
    except Exception as error:  # Lambda reports an init error on every invocation
        handler, init_error = None, error_payload(error)
        traceback.print_exc()
    for line in sys.stdin:
        request = json.loads(line)
        if handler is None:
            answer: dict[str, Any] = {"error": init_error}
        else:
            try:
                answer = {"result": handler(request["event"], LambdaContext(request["request_id"], timeout))}
            except Exception as error:  # an unhandled error of the function
                traceback.print_exc()
                answer = {"error": error_payload(error)}
        sys.stdout.flush()
        try:
            line = json.dumps(answer)
        except (TypeError, ValueError) as error:  # Lambda answers only what JSON can carry
            line = json.dumps({"error": {"errorType": "Runtime.MarshalError", "errorMessage": str(error)}})
        channel.write(line + "\n")
        channel.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
