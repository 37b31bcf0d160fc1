"""``dogbreeds approve VERSION``: approve a version of the model package group, so that the endpoint may serve it.

UpdateModelPackage sets the version Approved, with ``--note`` as its ApprovalDescription. The approval
recorder then writes the latest approved version into the approved-package parameter (within seconds), and
the next ``npx cdk deploy <project>-endpoint`` serves it. A version already approved is left as it is.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.registry import (
    APPROVED,
    Registry,
    Version,
    check_description,
    describe_version,
    parse_version,
    same_package,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", metavar="VERSION", help="the version's number (dogbreeds models lists them) or ARN")
    parser.add_argument("--note", help="why it is approved: kept as its ApprovalDescription (at most 1024 characters)")


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    number, group = parse_version(args.version)
    note = check_description("--note", args.note)
    registry = Registry(Stacks(aws, config), aws, config)
    versions, _ = registry.versions()
    version = registry.find(number, versions, group)

    if version.status == APPROVED:
        print(f"Version {number} of {registry.group} is already {APPROVED}: nothing changed.")
        if same_package(registry.live.package_arn, version.arn):
            print(f"It is live on the endpoint {registry.live.endpoint}.")
        _what_a_deploy_serves(registry, versions, version, changed=False)
        return 0

    registry.set_status(version, APPROVED, note)
    print(f"Approved version {number} of {registry.group} (was {version.status}): {version.arn}")
    after = [replace(v, status=APPROVED) if v is version else v for v in versions]
    _what_a_deploy_serves(registry, after, version, changed=True)
    return 0


def _what_a_deploy_serves(registry: Registry, versions: list[Version], version: Version, *, changed: bool) -> None:
    target, why = registry.next_deploy(versions)
    deploy = registry.deploy_command()
    if same_package(target, version.arn):
        if changed:
            print(f"Next: {registry.recorder_note()} (dogbreeds status shows it); then `{deploy}` serves it.")
        elif not same_package(registry.live.package_arn, version.arn):
            print(f"It is {why}: `{deploy}` serves it.")
    elif registry.config.settings.endpoint_model_package_arn:
        print(
            f"A deploy serves {describe_version(target, registry.group)} all the same ({why}): leave that setting "
            f"empty to serve the latest approved version, or serve this one with `{registry.pin_command(version.arn)}`."
        )
    else:
        newer = describe_version(target, registry.group)
        print(
            f"{newer.capitalize()} is newer and approved too: it stays the latest approved, and `{deploy}` serves it. "
            f"To serve version {version.number} instead: `{registry.pin_command(version.arn)}`, or reject {newer}."
        )
