"""What the invoker Lambda costs outside the model: cold-start imports and per-call overhead.

    .venv/bin/python benchmarks/bench_lambda.py [--quick]

- cold start: ``import handler`` in a fresh interpreter (as Lambda's init phase does it, with the
  function's folder on ``sys.path``), several runs, median; beside it ``import boto3`` alone (the
  floor: the function cannot avoid it), the bare interpreter, and the client's creation on the
  first invocation;
- per call: ``handler.handle`` with the endpoint call made instant, p50 and p95 over many calls:
  with a stub client (only the handler's own work: parse, base64, checks, JSON, the log line), through
  the real boto3 client and the loopback ``RuntimeServer`` (adds signing, HTTP and parsing; the
  handler's ``total - endpoint`` latency is its overhead), and a URL fetched from a loopback server.

Prints a Markdown table. Nothing here needs AWS or the network.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_SOURCE = ROOT / "lambda_src"
sys.path[:0] = [str(ROOT), str(LAMBDA_SOURCE)]

import handler  # noqa: E402  (after the path set-up, as /var/task is on Lambda's path)
from dogbreeds.local.runtime import ModelResponse, RuntimeServer  # noqa: E402

IMAGE = b"\xff\xd8\xff\xe0" + os.urandom(100 * 1024)  # 100 KiB with a JPEG signature; no model decodes it
ANSWER = json.dumps(
    {
        "predictions": [{"label": f"breed {i}", "index": i, "probability": 0.1} for i in range(5)],
        "model": {"backbone": "resnet50", "num_classes": 133, "version": "0123456789ab"},
    }
).encode()
SETTINGS = handler.Settings(
    endpoint_name="bench", max_image_bytes=4 * 1024 * 1024, allow_http=True, allow_loopback=True
)
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "local", "aws_secret_access_key": "local"}


class Context:
    aws_request_id = "bench"


class StubClient:
    """An endpoint that answers at once, with no HTTP at all."""

    class _Body(io.BytesIO):
        pass

    def invoke_endpoint(self, **arguments: object) -> dict:
        return {"Body": self._Body(ANSWER), "ContentType": "application/json"}


def fresh_interpreter_ms(code: str, runs: int) -> tuple[float, float]:
    """Medians over ``runs`` new interpreters: what ``code`` printed (its own milliseconds), and the
    process's whole wall time (start-up included)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LAMBDA_SOURCE), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}
    inside, whole = [], []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(  # noqa: S603 (our own interpreter, fixed code)
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=LAMBDA_SOURCE
        )
        whole.append((time.perf_counter() - started) * 1000)
        inside.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(inside), statistics.median(whole)


def timed_import(statement: str) -> str:
    return f"import time; t = time.perf_counter(); {statement}; print((time.perf_counter() - t) * 1000)"


FIRST_CLIENT = (
    "import time, handler; s = handler.Settings(endpoint_name='bench'); t = time.perf_counter(); "
    "handler.make_client(s, endpoint_url='http://127.0.0.1:9', region_name='us-east-1', "
    "aws_access_key_id='x', aws_secret_access_key='x'); print((time.perf_counter() - t) * 1000)"
)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def per_call(calls: int, run: Callable[[], dict], measure: Callable[[dict, float], float]) -> tuple[float, float]:
    samples = []
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the log lines are written, unseen
        for _ in range(min(50, calls)):  # warm-up: the client, its connection pool
            run()
        for _ in range(calls):
            started = time.perf_counter()
            response = run()
            wall_ms = (time.perf_counter() - started) * 1000
            assert response["statusCode"] == 200, response
            samples.append(measure(response, wall_ms))
    return percentiles(samples)


def wall(response: dict, wall_ms: float) -> float:
    return wall_ms


def outside_endpoint(response: dict, wall_ms: float) -> float:
    latency = json.loads(response["body"])["latency_ms"]
    return latency["total"] - latency["endpoint"]


class _ImageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 cold starts and 200 calls (default: 15 and 2000)")
    args = parser.parse_args(argv)
    runs, calls = (5, 200) if args.quick else (15, 2000)

    rows: list[tuple[str, str]] = []
    _, bare = fresh_interpreter_ms(timed_import("pass"), runs)
    boto, _ = fresh_interpreter_ms(timed_import("import boto3"), runs)
    imported, process = fresh_interpreter_ms(timed_import("import handler"), runs)
    client_ms, _ = fresh_interpreter_ms(FIRST_CLIENT, runs)
    rows += [
        (f"cold start: `import handler` (median of {runs} fresh interpreters)", f"{imported:.1f} ms"),
        ("  `import boto3` alone, in the same way", f"{boto:.1f} ms"),
        ("  whole process `python -c 'import handler'` / bare `python -c pass`", f"{process:.0f} / {bare:.0f} ms"),
        ("first invocation only: creating the boto3 client", f"{client_ms:.1f} ms"),
    ]

    event = {"image_base64": base64.b64encode(IMAGE).decode()}
    stub = StubClient()
    p50, p95 = per_call(calls, lambda: handler.handle(event, Context(), settings=SETTINGS, client=stub), wall)
    rows.append((f"per call, stub client, 100 KiB image_base64 (p50 / p95 of {calls})", f"{p50:.3f} / {p95:.3f} ms"))

    with RuntimeServer({"bench": lambda invocation: ModelResponse(200, "application/json", ANSWER)}) as runtime:
        client = handler.make_client(SETTINGS, endpoint_url=runtime.url, **CREDENTIALS)
        p50, p95 = per_call(
            calls, lambda: handler.handle(event, Context(), settings=SETTINGS, client=client), outside_endpoint
        )
        rows.append(("  same, boto3 + RuntimeServer: total - endpoint (p50 / p95)", f"{p50:.3f} / {p95:.3f} ms"))
        p50, p95 = per_call(calls, lambda: handler.handle(event, Context(), settings=SETTINGS, client=client), wall)
        rows.append(("  same, boto3 + RuntimeServer: whole call, wall (p50 / p95)", f"{p50:.3f} / {p95:.3f} ms"))

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url_event = {"url": f"http://images.bench:{server.server_address[1]}/dog.jpg"}
        resolver = lambda host, port: ["127.0.0.1"]  # noqa: E731
        p50, p95 = per_call(
            calls,
            lambda: handler.handle(url_event, Context(), settings=SETTINGS, client=stub, resolver=resolver),
            wall,
        )
        rows.append(
            ("per call, stub client, URL of a 100 KiB image on loopback (p50 / p95)", f"{p50:.3f} / {p95:.3f} ms")
        )
    finally:
        server.shutdown()
        server.server_close()

    command = "benchmarks/bench_lambda.py" + " --quick" * args.quick
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, `{command}`\n")
    print("| measure | value |\n| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
