#!/usr/bin/env python3
"""The CDK app: read the settings once, build every stack, synthesize (cdk-nag runs on every synth)."""

from __future__ import annotations

import os
import sys

# jsii prints an 11-line Node.js end-of-life banner, as Python byte strings, each time it starts (on the aws_cdk
# import below): silenced for Node 20 only, whose end of life the README states (the variable takes a list of
# major versions; a value already set wins).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk

from dogbreeds_stacks.composition import build, environment
from dogbreeds_stacks.settings import Settings, SettingsError, cdk_json_context


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
