#!/usr/bin/env python3
"""Stop this SageMaker notebook instance after a stretch without activity.

Installed by the notebook's lifecycle configuration and run by cron every five minutes. Idle means:
no kernel is busy, and the newest activity (of any kernel, or of the Jupyter server when there is
no kernel) is older than --idle-minutes. Standard library only, Python 3.7 or newer: it runs with
the instance's system Python, outside the notebook's conda environments.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone

METADATA = "/opt/ml/metadata/resource-metadata.json"


def fetch(url: str) -> object:
    # The local Jupyter server uses a self-signed certificate; this request never leaves the host.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=10, context=context) as response:  # noqa: S310
        return json.load(response)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def idle_minutes(server: str, now: datetime) -> float | None:
    """Minutes since the last activity, or None while a kernel is busy."""
    kernels = fetch(f"{server}/api/kernels")
    if any(k.get("execution_state") == "busy" for k in kernels):
        return None
    times = [parse_time(k["last_activity"]) for k in kernels if k.get("last_activity")]
    if not times:
        times = [parse_time(fetch(f"{server}/api/status")["last_activity"])]
    return (now - max(times)).total_seconds() / 60


def stop_this_instance() -> None:
    with open(METADATA) as handle:
        metadata = json.load(handle)
    region = metadata["ResourceArn"].split(":")[3]
    subprocess.run(  # noqa: S603
        [  # noqa: S607
            "aws",
            "sagemaker",
            "stop-notebook-instance",
            "--region",
            region,
            "--notebook-instance-name",
            metadata["ResourceName"],
        ],
        check=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-minutes", type=float, required=True, help="stop after this many idle minutes")
    parser.add_argument("--server", default="https://localhost:8443", help="Jupyter server (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="say what would happen; stop nothing")
    args = parser.parse_args(argv)
    idle = idle_minutes(args.server, datetime.now(timezone.utc))  # noqa: UP017 - runs on Python 3.7 too
    if idle is None:
        print("a kernel is busy: not idle")
        return 0
    if idle < args.idle_minutes:
        print(f"idle for {idle:.0f} of {args.idle_minutes:.0f} minutes")
        return 0
    print(f"idle for {idle:.0f} minutes (limit {args.idle_minutes:.0f}): stopping this notebook instance")
    if not args.dry_run:
        stop_this_instance()
    return 0


if __name__ == "__main__":
    sys.exit(main())
