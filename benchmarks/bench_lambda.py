"""What the invoker Lambda costs outside the model: cold-start imports and per-call overhead.

    .venv/bin/python benchmarks/bench_lambda.py [--quick]

- cold start: ``import handler`` in a fresh interpreter (as Lambda's init phase does it, with the
  function's folder on ``sys.path``); beside it ``import boto3`` alone (the floor: the function cannot
  avoid it), the bare interpreter, and the client's creation on the first invocation. The four
  alternate, one fresh interpreter of each per round, so that a load that comes and goes slows them alike;
- per call: ``handler.handle`` with the endpoint call made instant, p50 and p95 over many calls, the
  cases alternating call by call: with a stub client (only the handler's own work: parse, base64,
  checks, JSON, the log line), through the real boto3 client and the loopback ``RuntimeServer`` (adds
  signing, HTTP and parsing; the handler's ``total - endpoint`` latency is its overhead), and a URL
  fetched from a loopback server.

Each comparison waits for idle CPUs before each block of rounds and measures again a block during which
other processes took more than --max-other-load of the CPU time (benchkit.alternate). Ratios are of p50s.
Prints a Markdown report. Nothing here needs AWS or the network.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import benchkit

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


def fresh_interpreter(code: str) -> tuple[float, float]:
    """One new interpreter running ``code``: what it printed (its own milliseconds) and its whole wall time (ms)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(LAMBDA_SOURCE), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    out = subprocess.run(  # noqa: S603 (our own interpreter, fixed code)
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env, cwd=LAMBDA_SOURCE
    )
    return float(out.stdout.strip().splitlines()[-1]), (time.perf_counter() - started) * 1000


def timed_import(statement: str) -> str:
    return f"import time; t = time.perf_counter(); {statement}; print((time.perf_counter() - t) * 1000)"


FIRST_CLIENT = (
    "import time, handler; s = handler.Settings(endpoint_name='bench'); t = time.perf_counter(); "
    "handler.make_client(s, endpoint_url='http://127.0.0.1:9', region_name='us-east-1', "
    "aws_access_key_id='x', aws_secret_access_key='x'); print((time.perf_counter() - t) * 1000)"
)
COLD_STARTS = {
    "bare": timed_import("pass"),
    "boto3": timed_import("import boto3"),
    "handler": timed_import("import handler"),
    "client": FIRST_CLIENT,
}


def cold_starts(runs: int, policy: benchkit.LoadPolicy) -> benchkit.Comparison:
    """The four fresh-interpreter measurements, one of each in turn per round (the results: inside, whole ms)."""
    sides = {name: functools.partial(fresh_interpreter, code) for name, code in COLD_STARTS.items()}
    return benchkit.alternate(sides, runs, policy=policy, block_rounds=1)


def per_call(sides: dict[str, Callable[[], dict]], calls: int, policy: benchkit.LoadPolicy) -> benchkit.Comparison:
    """The per-call cases, one call of each in turn (warm-up: 50 rounds: the clients, their connection pools)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the log lines are written, unseen
        comparison = benchkit.alternate(sides, calls, warmup=min(50, calls), policy=policy)
    for name, responses in comparison.results.items():
        for response in responses:
            assert response["statusCode"] == 200, (name, response)
    return comparison


def outside_endpoint(response: dict) -> float:
    """The handler's own milliseconds: its total latency less the endpoint call's (both in its answer)."""
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


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="5 cold starts and 200 calls (default: 15 and 2000)")
    benchkit.add_report_options(parser)
    return parser


def call_cases(runtime_url: str, image_url: str) -> dict[str, Callable[[], dict]]:
    """The per-call cases: the stub client, boto3 through the loopback runtime, a URL on a loopback server."""
    event = {"image_base64": base64.b64encode(IMAGE).decode()}
    stub = StubClient()
    client = handler.make_client(SETTINGS, endpoint_url=runtime_url, **CREDENTIALS)
    url_event = {"url": image_url}
    resolver = lambda host, port: ["127.0.0.1"]  # noqa: E731
    return {
        "stub": lambda: handler.handle(event, Context(), settings=SETTINGS, client=stub),
        "boto3": lambda: handler.handle(event, Context(), settings=SETTINGS, client=client),
        "url": lambda: handler.handle(url_event, Context(), settings=SETTINGS, client=stub, resolver=resolver),
    }


def measure_calls(calls: int, policy: benchkit.LoadPolicy) -> benchkit.Comparison:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    Thread(target=server.serve_forever, daemon=True).start()
    answer = lambda invocation: ModelResponse(200, "application/json", ANSWER)  # noqa: E731
    try:
        with RuntimeServer({"bench": answer}) as runtime:
            image_url = f"http://images.bench:{server.server_address[1]}/dog.jpg"
            return per_call(call_cases(runtime.url, image_url), calls, policy)
    finally:
        server.shutdown()
        server.server_close()


def rows(cold: benchkit.Comparison, calls: benchkit.Comparison) -> list[tuple[str, str]]:
    runs, count = len(cold.samples["bare"]), len(calls.samples["stub"])

    def inside(name: str, q: float) -> float:
        return benchkit.percentile([result[0] for result in cold.results[name]], q)

    whole = {name: benchkit.percentile([result[1] for result in cold.results[name]], 50) for name in COLD_STARTS}
    overhead = [outside_endpoint(response) for response in calls.results["boto3"]]

    def ms(name: str) -> str:
        return f"{calls.p50(name) * 1000:.3f} / {calls.p95(name) * 1000:.3f} ms"

    return [
        (
            f"cold start: `import handler` (p50 / p95 of {runs} fresh interpreters)",
            f"{inside('handler', 50):.1f} / {inside('handler', 95):.1f} ms",
        ),
        ("  `import boto3` alone, in the same way", f"{inside('boto3', 50):.1f} / {inside('boto3', 95):.1f} ms"),
        (
            "  ratio of the p50s, `import handler` / `import boto3`",
            f"{inside('handler', 50) / inside('boto3', 50):.2f}",
        ),
        (
            "  whole process `python -c 'import handler'` / bare `python -c pass` (p50)",
            f"{whole['handler']:.0f} / {whole['bare']:.0f} ms",
        ),
        ("first invocation only: creating the boto3 client (p50)", f"{inside('client', 50):.1f} ms"),
        (f"per call, stub client, 100 KiB image_base64 (p50 / p95 of {count})", ms("stub")),
        (
            "  same, boto3 + RuntimeServer: total - endpoint (p50 / p95)",
            f"{benchkit.percentile(overhead, 50):.3f} / {benchkit.percentile(overhead, 95):.3f} ms",
        ),
        ("  same, boto3 + RuntimeServer: whole call, wall (p50 / p95)", ms("boto3")),
        ("per call, stub client, URL of a 100 KiB image on loopback (p50 / p95)", ms("url")),
    ]


def main(args: argparse.Namespace) -> int:
    runs, calls = (5, 200) if args.quick else (15, 2000)
    policy = benchkit.load_policy(args)
    facts = benchkit.machine()
    conditions = benchkit.RunConditions(args.wait_idle, policy)
    benchkit.log(f"cold starts: {runs} rounds of {len(COLD_STARTS)} fresh interpreters")
    cold = cold_starts(runs, policy)
    benchkit.log(f"per call: {calls} rounds of 3 cases")
    per = measure_calls(calls, policy)
    setup = {
        **conditions.setup(),
        "cold_starts": cold.load_note(),
        "per_call": per.load_note(),
    }
    lines = [
        *benchkit.report_header("### Lambda: cold start and per-call overhead", facts, setup),
        f"Blocks (each waits for idle CPUs first): cold starts {setup['cold_starts']}; per call {setup['per_call']}.",
        "",
        benchkit.table(["measure", "value"], rows(cold, per)),
    ]
    raw = {
        "machine": facts,
        "setup": setup,
        "cold_starts_ms": {name: cold.results[name] for name in COLD_STARTS},
        "per_call_seconds": per.samples,
    }
    benchkit.write_outputs("\n".join(lines), raw, args.output, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
