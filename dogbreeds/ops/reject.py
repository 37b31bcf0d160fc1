"""``dogbreeds reject VERSION --reason TEXT``: reject a version of the model package group.

UpdateModelPackage sets the version Rejected, with the reason as its ApprovalDescription. Rejecting the
version the endpoint serves is allowed: the endpoint keeps serving it until the next deploy of the endpoint
stack, and the command says which version that deploy would serve. A version already rejected is left as
it is.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.registry import (
    REJECTED,
    Registry,
    check_description,
    describe_version,
    parse_version,
    same_package,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", metavar="VERSION", help="the version's number (dogbreeds models lists them) or ARN")
    parser.add_argument(
        "--reason", required=True, help="why it is rejected: kept as its ApprovalDescription (at most 1024 characters)"
    )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    number, group = parse_version(args.version)
    reason = check_description("--reason", args.reason, required=True)
    registry = Registry(Stacks(aws, config), aws, config)
    versions, _ = registry.versions()
    version = registry.find(number, versions, group)

    if version.status == REJECTED:
        print(f"Version {number} of {registry.group} is already {REJECTED}: nothing changed.")
        return 0

    served_before, _ = registry.next_deploy(versions)
    live = registry.live
    registry.set_status(version, REJECTED, reason)
    print(f"Rejected version {number} of {registry.group} (was {version.status}): {version.arn}")

    target, why = registry.next_deploy([replace(v, status=REJECTED) if v is version else v for v in versions])
    if same_package(target, version.arn):  # pinned
        next_deploy = (
            f"the setting endpoint_model_package_arn pins the endpoint to version {number}, so a deploy would serve "
            "it all the same: empty that setting to serve the latest approved version"
        )
    elif target:
        next_deploy = f"`{registry.deploy_command()}` would serve {describe_version(target, registry.group)} ({why})"
    else:
        next_deploy = (
            "no version is approved now, so a deploy of the endpoint stack is refused until one is "
            "(dogbreeds approve VERSION)"
        )
    if same_package(live.package_arn, version.arn):
        print(
            f"It is live: the endpoint {live.endpoint} keeps serving version {number} until the next deploy; "
            f"{next_deploy}."
        )
    elif same_package(served_before, version.arn):
        print(f"A deploy would have served it: {next_deploy}.")
    elif live.denied:
        print(f"Whether the endpoint {live.endpoint} serves it is not known ({live.unknown}); {next_deploy}.")
    if served_before and not same_package(target, served_before):
        print(f"Next: {registry.recorder_note()} (dogbreeds status shows it).")
    return 0
