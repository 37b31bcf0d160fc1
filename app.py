#!/usr/bin/env python3
"""The CDK app: read the settings once, build every stack, synthesize (cdk-nag runs on every synth)."""

from __future__ import annotations

import sys

import aws_cdk as cdk

from stacks.composition import build, environment
from stacks.settings import Settings, SettingsError, cdk_json_context


def main() -> int:
    # cdk.json's context is the base; the CLI's context (cdk.json again, cdk.context.json, -c) wins.
    app = cdk.App(context=cdk_json_context())
    try:
        settings = Settings.from_context(app.node.get_all_context())
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    build(app, settings, env=environment())
    try:
        app.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err):
            raise
        print(
            "error: cdk-nag (AwsSolutions) found unacknowledged findings; the report above names each "
            "construct and rule. Fix the resource, or acknowledge the finding on that construct with a reason.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
