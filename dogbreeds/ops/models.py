"""``dogbreeds models``: the versions of the project's model package group, newest first.

For each version: its number, approval status, test accuracy, creation date and training job (from its
CustomerMetadataProperties), and which one is live (served by the endpoint) and which one is the latest
approved (the approved-package parameter: what a deploy of the endpoint stack serves). ``--json`` prints
the same as one JSON object, for scripts.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import UsageError
from dogbreeds.ops.registry import (
    PENDING,
    Approved,
    Live,
    Registry,
    Version,
    describe_version,
    same_package,
    version_of,
)

DEFAULT_MAX = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--max", type=int, default=DEFAULT_MAX, metavar="N", help="show the newest N versions (default: %(default)s)"
    )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if args.max < 1:
        raise UsageError(f"--max {args.max}: accepted is 1 or more")
    registry = Registry(Stacks(aws, config), aws, config)
    listed, more = registry.versions(limit=args.max)
    versions = [registry.described(v) for v in listed]
    live, approved = (registry.live, registry.approved) if versions else (None, None)
    if args.json:
        print(json.dumps(as_json(registry.group, versions, more, live, approved), indent=2))
        return 0
    if not versions:
        print(
            f"The model package group {registry.group} has no versions yet: `dogbreeds train` registers one per "
            "trained model."
        )
        return 0
    for line in table(registry.group, versions, more, live, approved):
        print(line)
    return 0


def notes(version: Version, live: Live | None, approved: Approved | None) -> list[str]:
    found = []
    if live and same_package(version.arn, live.package_arn):
        found.append("live")
    if approved and same_package(version.arn, approved.package_arn):
        found.append("latest approved")
    return found


def _created(version: Version) -> str:
    return version.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def table(group: str, versions: list[Version], more: bool, live: Live, approved: Approved) -> list[str]:
    shown = "the newest " + (f"{len(versions)} versions" if len(versions) > 1 else "version")
    rows = [("VERSION", "STATUS", "TEST ACCURACY", "CREATED (UTC)", "TRAINING JOB", "")]
    for v in versions:
        accuracy = "-" if v.test_accuracy is None else f"{v.test_accuracy:.4f}"
        rows.append(
            (str(v.number), v.status, accuracy, _created(v), v.training_job or "-", ", ".join(notes(v, live, approved)))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"Model package group {group}, {shown} first:"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if more:
        lines.append("  (older versions are not shown: --max N shows the newest N)")
    if live.package_arn:
        lines.append(f"Live: {describe_version(live.package_arn, group)} on the endpoint {live.endpoint}.")
    else:
        lines.append(f"Live: not known ({live.unknown}).")
    if approved.unknown:
        lines.append(f"Latest approved ({approved.parameter}): not known ({approved.unknown}).")
    elif approved.package_arn:
        lines.append(f"Latest approved ({approved.parameter}): {describe_version(approved.package_arn, group)}.")
    else:
        lines.append(f"Latest approved ({approved.parameter}): none yet.")
    if any(v.status == PENDING for v in versions):
        lines.append(
            "Approve one: dogbreeds approve VERSION [--note TEXT]; reject one: dogbreeds reject VERSION --reason TEXT"
        )
    return lines


def as_json(group: str, versions: list[Version], more: bool, live: Live | None, approved: Approved | None) -> dict:
    return {
        "group": group,
        "versions": [
            {
                "version": v.number,
                "arn": v.arn,
                "approval_status": v.status,
                "test_accuracy": v.test_accuracy,
                "created": v.created.astimezone(UTC).isoformat(),
                "training_job": v.training_job,
                "tuning_job": v.tuning_job,
                "approval_description": v.approval_description,
                "live": "live" in notes(v, live, approved),
                "latest_approved": "latest approved" in notes(v, live, approved),
            }
            for v in versions
        ],
        "more": more,
        "live": None
        if live is None
        else {
            "endpoint": live.endpoint,
            "model_package_arn": live.package_arn,
            "version": version_of(live.package_arn),
            "unknown": live.unknown,
        },
        "latest_approved": None
        if approved is None
        else {
            "parameter": approved.parameter,
            "model_package_arn": approved.package_arn,
            "version": version_of(approved.package_arn),
            "unknown": approved.unknown,
        },
    }
