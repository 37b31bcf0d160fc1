#!/usr/bin/env python3
"""Stop this SageMaker notebook instance after a stretch without activity.

Installed by the notebook's lifecycle configuration and run by a systemd timer every five minutes (Amazon Linux
2023 installs no cron). Idle means: no kernel is busy, and the Jupyter server's newest activity (API requests,
kernel messages, terminals, as /api/status reports it) is older than --idle-minutes.

The check must not count as activity itself: jupyter_server records every authenticated API request as activity
(APIHandler.update_api_activity) unless the request carries ?no_track_activity=1, so every request here carries it.

Standard library only, Python 3.7 or newer: it runs with the instance's system Python, outside the notebook's conda
environments. It stops the instance with boto3 when that Python has it, otherwise with the AWS CLI found at an
absolute path (a timer's PATH is minimal). Any failure prints an ERROR line and exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

METADATA = "/opt/ml/metadata/resource-metadata.json"
# Where SageMaker notebook images and Amazon Linux install the AWS CLI: v2's installer, the system package, then
# the CLI of the conda environments that Jupyter itself runs in.
AWS_CLI_PATHS = (
    "/usr/local/bin/aws",
    "/usr/bin/aws",
    "/home/ec2-user/anaconda3/envs/JupyterSystemEnv/bin/aws",
    "/home/ec2-user/anaconda3/bin/aws",
)


def log(message: str, stream=None) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017 - runs on Python 3.7 too
    print(f"{stamp} autostop {message}", file=stream or sys.stdout, flush=True)


def fetch(server: str, path: str, token: str = "") -> object:
    """GET a Jupyter API path without it counting as activity."""
    request = urllib.request.Request(f"{server}{path}?no_track_activity=1")  # noqa: S310 - the local server only
    if token:
        request.add_header("Authorization", f"token {token}")
    # SageMaker's Jupyter server listens on localhost with a self-signed certificate; this request never leaves the
    # host, so the certificate is not verified.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
        return json.load(response)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def idle_minutes(server: str, now: datetime, token: str = "") -> float | None:
    """Minutes since the server's newest activity, or None while a kernel is busy."""
    kernels = fetch(server, "/api/kernels", token)
    if any(k.get("execution_state") == "busy" for k in kernels):
        return None
    status = fetch(server, "/api/status", token)
    times = [parse_time(status["last_activity"])]
    times.extend(parse_time(k["last_activity"]) for k in kernels if k.get("last_activity"))
    return (now - max(times)).total_seconds() / 60


def boto3_stopper(make_client: Callable[[str], object] | None = None) -> Callable[[str, str], None] | None:
    """Stop with boto3, or None when this Python has no boto3."""
    if make_client is None:
        try:
            import boto3
        except ImportError:
            return None

        def make_client(region: str) -> object:
            return boto3.client("sagemaker", region_name=region)

    def stop(name: str, region: str) -> None:
        make_client(region).stop_notebook_instance(NotebookInstanceName=name)

    stop.how = "boto3"  # type: ignore[attr-defined]
    return stop


def cli_stopper(paths: Sequence[str] = AWS_CLI_PATHS) -> Callable[[str, str], None] | None:
    """Stop with the first AWS CLI found at one of these absolute paths, or None when there is none."""
    found = [path for path in paths if os.path.isfile(path) and os.access(path, os.X_OK)]
    if not found:
        return None
    aws = found[0]

    def stop(name: str, region: str) -> None:
        command = [aws, "sagemaker", "stop-notebook-instance", "--region", region, "--notebook-instance-name", name]
        subprocess.run(command, check=True, timeout=120)  # noqa: S603 - an absolute path and fixed arguments

    stop.how = f"aws-cli:{aws}"  # type: ignore[attr-defined]
    return stop


def find_stopper(paths: Sequence[str] = AWS_CLI_PATHS) -> Callable[[str, str], None]:
    """boto3 when importable, else the AWS CLI; an error naming both when neither is there."""
    stopper = boto3_stopper() or cli_stopper(paths)
    if stopper is None:
        raise RuntimeError(f"cannot stop this instance: {sys.executable} has no boto3 and no AWS CLI at {list(paths)}")
    return stopper


def read_instance(metadata: str = METADATA) -> tuple[str, str]:
    """This notebook instance's name and region, from SageMaker's metadata file."""
    with open(metadata) as handle:
        data = json.load(handle)
    return data["ResourceName"], data["ResourceArn"].split(":")[3]


def check(server: str, limit: float, now: datetime, stop: Callable[[], None], token: str = "") -> str:
    """One check: 'busy', 'active' or 'stopped'; calls ``stop`` once the server has been idle for ``limit`` minutes."""
    idle = idle_minutes(server, now, token)
    if idle is None:
        log(f"state=busy limit_minutes={limit:g} action=none")
        return "busy"
    if idle < limit:
        log(f"state=idle idle_minutes={idle:.2f} limit_minutes={limit:g} action=none")
        return "active"
    log(f"state=idle idle_minutes={idle:.2f} limit_minutes={limit:g} action=stop")
    stop()
    return "stopped"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-minutes", type=float, required=True, help="stop after this many idle minutes")
    parser.add_argument("--server", default="https://localhost:8443", help="Jupyter server (default: %(default)s)")
    parser.add_argument(
        "--token",
        default=os.environ.get("JUPYTER_TOKEN", ""),
        help="Jupyter API token (default: $JUPYTER_TOKEN, else none: SageMaker's local server asks for none)",
    )
    parser.add_argument("--metadata", default=METADATA, help="SageMaker's instance metadata (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="say what would happen; stop nothing (default: off)")
    parser.add_argument(
        "--check-stopper",
        action="store_true",
        help="only report how this instance would be stopped; exit 1 when it cannot be (default: off)",
    )
    return parser


def main(argv: Sequence[str] | None = None, stopper: Callable[[str, str], None] | None = None) -> int:
    args = get_args_parser().parse_args(argv)

    def stop() -> None:
        if args.dry_run:
            log("dry_run=1 stopped=nothing")
            return
        name, region = read_instance(args.metadata)
        stop_instance = stopper or find_stopper()
        stop_instance(name, region)
        log(f"stopped={name} region={region} via={getattr(stop_instance, 'how', 'injected')}")

    try:
        if args.check_stopper:
            log(f"stopper={getattr(stopper or find_stopper(), 'how', 'injected')}")
            return 0
        now = datetime.now(timezone.utc)  # noqa: UP017 - runs on Python 3.7 too
        check(args.server, args.idle_minutes, now, stop, args.token)
    except Exception as error:  # a failed check must be loud in the log and in the exit status
        log(f"ERROR {type(error).__name__}: {error}", stream=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
