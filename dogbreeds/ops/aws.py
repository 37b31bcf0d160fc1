"""The AWS session the commands share, and the deployed stacks' outputs (the only source of names)."""

from __future__ import annotations

import os
from functools import cached_property

import boto3
from botocore.config import Config as ClientConfig

from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import (
    CREDENTIALS_HINT,
    REGION_HINT,
    AwsSetupError,
    NotDeployedError,
    client_error_code,
)

CLIENT_CONFIG = ClientConfig(user_agent_appid="dogbreeds-cli", retries={"mode": "standard", "max_attempts": 5})

# Stack states in which the outputs are those of a completed deployment.
USABLE_STATES = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_IN_PROGRESS",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE",
        "IMPORT_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
    }
)


def new_session(profile: str | None, region: str | None) -> boto3.Session:
    """A boto3 session; tests replace this function to hand out stubbed clients."""
    return boto3.Session(profile_name=profile, region_name=region)


class Aws:
    """One session for the whole command, checked once for a region and for credentials."""

    def __init__(self, profile: str | None = None, region: str | None = None) -> None:
        self.profile = profile
        # botocore reads AWS_DEFAULT_REGION and the profile's region; AWS_REGION is read here.
        self.requested_region = region or os.environ.get("AWS_REGION") or None
        self._clients: dict[str, object] = {}

    @cached_property
    def session(self) -> boto3.Session:
        session = new_session(self.profile, self.requested_region)
        if not session.region_name:
            raise AwsSetupError(f"No AWS region is configured: {REGION_HINT}.")
        if session.get_credentials() is None:
            profile = f" for profile {self.profile}" if self.profile else ""
            raise AwsSetupError(f"No AWS credentials found{profile}: {CREDENTIALS_HINT}.")
        return session

    @property
    def region(self) -> str:
        return self.session.region_name

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=CLIENT_CONFIG)
        return self._clients[service]


class Stacks:
    """The app's stacks in the account and region: their status and outputs, read once per command."""

    def __init__(self, aws: Aws, config: Config) -> None:
        self.aws = aws
        self.config = config
        self._described: dict[str, dict | None] = {}

    def describe(self, part: str) -> dict | None:
        """The stack's DescribeStacks entry, or None when no such stack exists."""
        if part not in self._described:
            name = self.config.names.stack(part)
            try:
                stacks = self.aws.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
            except Exception as err:
                if client_error_code(err) == "ValidationError" and "does not exist" in str(err):
                    stacks = []
                else:
                    raise
            self._described[part] = stacks[0] if stacks else None
        return self._described[part]

    def outputs(self, part: str) -> dict[str, str]:
        """The stack's outputs; NotDeployedError naming the stack and the deploy command otherwise."""
        name = self.config.names.stack(part)
        stack = self.describe(part)
        deploy = self.config.cdk_command("deploy", part)
        if stack is None or stack["StackStatus"] == "REVIEW_IN_PROGRESS":
            raise NotDeployedError(
                f"The stack {name} is not deployed in {self.aws.region}: deploy it with `{deploy}` "
                "(or pass the --region / --profile it was deployed with)."
            )
        status = stack["StackStatus"]
        if status not in USABLE_STATES:
            raise NotDeployedError(
                f"The stack {name} is {status} in {self.aws.region}, so it has no usable outputs: once no "
                f"operation is in progress, deploy it with `{deploy}` (its events in the CloudFormation "
                "console say what went wrong)."
            )
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    def output(self, part: str, key: str) -> str:
        outputs = self.outputs(part)
        if key not in outputs:
            raise NotDeployedError(
                f"The stack {self.config.names.stack(part)} has no output {key}: it was deployed from an older "
                f"version of this app; deploy it again with `{self.config.cdk_command('deploy', part)}`."
            )
        return outputs[key]
