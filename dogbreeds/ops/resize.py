"""``dogbreeds resize-endpoint``: change the endpoint's instance type, which one ``cdk deploy`` cannot do.

SageMaker refuses an UpdateEndpoint that changes the instance type of a variant registered with
Application Auto Scaling, and CloudFormation cannot deregister it first (aws-cdk issue 29626), so a
plain ``npx cdk deploy <project>-endpoint -c endpoint_instance_type=...`` fails and rolls back. This
command does what SageMaker's guide prescribes ("Update endpoints that use auto scaling") around the
deploy. It waits until the endpoint is InService and reads the instance type it serves on; if that is
not the one asked for (--instance-type, else the setting endpoint_instance_type), it:

  1. deletes the variant's scaling policies and deregisters it as a scalable target (the instance
     count stays as it is while autoscaling is off);
  2. deploys the endpoint stack with the new instance type (with --no-deploy, prints the command);
  3. registers the variant again with the settings' capacity range and its target-tracking policy,
     under the names the stack declares, so CloudFormation's resources describe what exists again.

Each step looks before it acts: after an interruption, running the command again picks up where it
stopped. Without a size change it only makes sure autoscaling is registered as the settings say.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config, require_checkout
from dogbreeds.ops.errors import OpsError, UsageError, client_error_code
from dogbreeds_stacks.instances import derived_invocations_per_minute, serving_problem
from dogbreeds_stacks.settings import Settings, SettingsError, instance_types

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
POLL_SECONDS = 30
TRANSITIONAL = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})

sleep = time.sleep  # tests replace it
DEPLOYS = "deploys the endpoint stack with `npx cdk deploy`"


def run_deploy(words: list[str], env: dict[str, str]) -> int:
    """Run ``npx cdk deploy`` in the checkout, attached to this terminal; tests replace this function."""
    checkout = require_checkout("resize-endpoint", DEPLOYS)
    return subprocess.run(words, cwd=checkout, env=env, check=False).returncode  # noqa: S603 (our own words)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance-type",
        help="the SageMaker instance type to serve on, for example ml.g5.xlarge (default: the setting "
        "endpoint_instance_type, from cdk.json or -c)",
    )
    parser.add_argument(
        "--no-deploy",
        action="store_true",
        help="deregister autoscaling and print the deploy command instead of running it; run this command "
        "again after the deploy to register autoscaling (default: run the deploy)",
    )
    parser.add_argument(
        "--wait-minutes",
        type=int,
        default=90,
        help="how long to wait for an endpoint that is being created or updated (default: 90)",
    )


@dataclass(frozen=True)
class Scaling:
    """The variant's autoscaling as the endpoint stack declares it: names from its outputs, values from settings."""

    resource_id: str
    policy_name: str
    min_capacity: int
    max_capacity: int
    target_value: int
    scale_in_cooldown: int
    scale_out_cooldown: int

    @property
    def variant(self) -> str:
        return self.resource_id.rsplit("/variant/", 1)[-1]

    @property
    def key(self) -> dict[str, str]:
        return {"ServiceNamespace": NAMESPACE, "ResourceId": self.resource_id, "ScalableDimension": DIMENSION}

    def summary(self) -> str:
        return (
            f"{self.min_capacity} to {self.max_capacity} instances, {self.target_value} invocations per instance "
            f"(scale-in cooldown {self.scale_in_cooldown} s, scale-out {self.scale_out_cooldown} s)"
        )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if not args.no_deploy:
        require_checkout("resize-endpoint", DEPLOYS)  # before any change to the endpoint's autoscaling
    s = config.settings
    # The setting was checked when the settings were read; --instance-type is checked the same way here.
    if args.instance_type is not None and args.instance_type not in instance_types("endpoint_instance_type"):
        raise UsageError(
            f"--instance-type {args.instance_type}: accepted is a SageMaker instance type, for example ml.g5.xlarge"
        )
    if args.instance_type is not None and serving_problem(args.instance_type):
        raise UsageError(
            f"--instance-type {args.instance_type}: {serving_problem(args.instance_type)}; accepted is an NVIDIA GPU "
            "type (ml.g5.xlarge) or an x86 CPU type (ml.c7i.xlarge)"
        )
    wanted = args.instance_type or s.endpoint_instance_type
    stacks = Stacks(aws, config)
    endpoint = stacks.output("endpoint", "EndpointName")
    scaling = Scaling(
        resource_id=stacks.output("endpoint", "ScalableTargetResourceId"),
        policy_name=stacks.output("endpoint", "ScalingPolicyName"),
        min_capacity=s.endpoint_min_capacity,
        max_capacity=s.endpoint_max_capacity,
        # The stack's target on the new type: the setting, or derived from that type (0), as the deploy derives it.
        target_value=s.endpoint_target_invocations_per_instance or derived_invocations_per_minute(wanted),
        scale_in_cooldown=s.endpoint_scale_in_cooldown_seconds,
        scale_out_cooldown=s.endpoint_scale_out_cooldown_seconds,
    )
    words = _deploy_words(config, wanted, aws)
    current = _serving_instance_type(aws, endpoint, scaling.variant, args.wait_minutes)

    if current == wanted:
        print(f"Endpoint {endpoint} (variant {scaling.variant}) is already on {wanted}: making sure its autoscaling")
        print("is registered as the settings say.")
        _register(aws, scaling)
        _remind_settings(wanted)
        return 0

    print(
        f"Resize endpoint {endpoint} (variant {scaling.variant}) from {current} to {wanted}.\n"
        "SageMaker refuses an instance-type change on a variant registered with Application Auto Scaling, and\n"
        "CloudFormation cannot deregister it, so:\n"
        f"  1. delete its scaling policy and deregister it (the instance count stays while autoscaling is off)\n"
        f"  2. deploy the endpoint stack on {wanted}: {_shown(words, aws)}\n"
        f"  3. register it again: {scaling.summary()}\n"
        "If this stops part-way, run the same command again: it picks up where it stopped."
    )
    _deregister(aws, scaling)
    if args.no_deploy:
        print(f"Now deploy: {_shown(words, aws)}")
        print("then run dogbreeds resize-endpoint again: it registers autoscaling on the new instance type.")
        _remind_settings(wanted)
        return 0

    print(f"2. deploying: {_shown(words, aws)}", flush=True)
    try:
        returncode = run_deploy(words, _deploy_env(aws))
    except OSError as err:
        _register(aws, scaling)  # nothing was deployed: the endpoint is as it was
        raise OpsError(
            f"could not run npx ({err}); autoscaling is registered again on {current}. Install Node.js (make "
            "setup), or deploy from elsewhere: run this command with --no-deploy, deploy the stack, then run "
            "it again."
        ) from None
    live = _serving_instance_type(aws, endpoint, scaling.variant, args.wait_minutes)
    _register(aws, scaling)
    if returncode != 0 or live != wanted:
        stack = config.names.stack("endpoint")
        raise OpsError(
            f"the deploy failed (exit code {returncode}); the endpoint serves on {live}, and autoscaling is "
            "registered again on it. The stack's events (CloudFormation console, or `aws cloudformation "
            f"describe-stack-events --stack-name {stack}`) say what failed; fix it and run dogbreeds "
            "resize-endpoint again."
        )
    print(f"Endpoint {endpoint} serves on {wanted}, with autoscaling.")
    _remind_settings(wanted)
    return 0


# --- the endpoint ---------------------------------------------------------------------------------


def _serving_instance_type(aws: Aws, endpoint: str, variant: str, wait_minutes: int) -> str:
    """The instance type the variant serves on, once the endpoint is InService (waiting while it changes)."""
    sagemaker = aws.client("sagemaker")
    deadline = time.monotonic() + wait_minutes * 60
    while True:
        try:
            description = sagemaker.describe_endpoint(EndpointName=endpoint)
        except Exception as err:
            if client_error_code(err) == "ValidationException":
                raise OpsError(
                    f"the endpoint {endpoint} does not exist ({err.response['Error']['Message']}): deploy the "
                    "endpoint stack first."
                ) from None
            raise
        status = description["EndpointStatus"]
        if status == "InService":
            break
        if status not in TRANSITIONAL:
            reason = f" ({description['FailureReason']})" if description.get("FailureReason") else ""
            raise OpsError(
                f"the endpoint {endpoint} is {status}{reason}: nothing was changed; deploy the endpoint stack "
                "to repair it first."
            )
        if time.monotonic() > deadline:
            raise OpsError(f"the endpoint {endpoint} is still {status} after {wait_minutes} minutes: run again later.")
        print(f"waiting for the endpoint ({status}) to be InService ...", flush=True)
        sleep(POLL_SECONDS)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=description["EndpointConfigName"])
    for production in config["ProductionVariants"]:
        if production["VariantName"] == variant and production.get("InstanceType"):
            return production["InstanceType"]
    raise OpsError(
        f"the endpoint {endpoint} has no instance-based variant {variant} (its config is "
        f"{description['EndpointConfigName']}): this command resizes the variant the endpoint stack declares."
    )


# --- autoscaling -------------------------------------------------------------------------------------


def _deregister(aws: Aws, scaling: Scaling) -> None:
    client = aws.client("application-autoscaling")
    policies = client.describe_scaling_policies(**scaling.key)["ScalingPolicies"]
    for policy in policies:
        client.delete_scaling_policy(PolicyName=policy["PolicyName"], **scaling.key)
        print(f"1. deleted scaling policy {policy['PolicyName']}")
    targets = client.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[scaling.resource_id], ScalableDimension=DIMENSION
    )["ScalableTargets"]
    if targets:
        client.deregister_scalable_target(**scaling.key)
        print(f"1. deregistered {scaling.resource_id} from autoscaling")
    elif not policies:
        print(f"1. {scaling.resource_id} is not registered with autoscaling (an earlier run got this far)")


def _register(aws: Aws, scaling: Scaling) -> None:
    """Register the variant and put its policy; both calls create or update, so a repeat is harmless."""
    client = aws.client("application-autoscaling")
    client.register_scalable_target(**scaling.key, MinCapacity=scaling.min_capacity, MaxCapacity=scaling.max_capacity)
    print(f"3. registered {scaling.resource_id}: {scaling.min_capacity} to {scaling.max_capacity} instances")
    client.put_scaling_policy(
        PolicyName=scaling.policy_name,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(scaling.target_value),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": scaling.scale_in_cooldown,
            "ScaleOutCooldown": scaling.scale_out_cooldown,
        },
        **scaling.key,
    )
    print(
        f"3. scaling policy {scaling.policy_name}: {scaling.target_value} invocations per instance "
        f"(cooldowns: in {scaling.scale_in_cooldown} s, out {scaling.scale_out_cooldown} s)"
    )


# --- the deploy ----------------------------------------------------------------------------------------


def _deploy_words(config: Config, wanted: str, aws: Aws) -> list[str]:
    words = shlex.split(config.cdk_command("deploy", "endpoint"))
    if config.settings.endpoint_instance_type != wanted:
        words += ["-c", f"endpoint_instance_type={wanted}"]
    if aws.profile:
        words += ["--profile", aws.profile]
    return words


def _deploy_env(aws: Aws) -> dict[str, str]:
    """This command's region (and the venv's python3, which runs the CDK app) for the deploy."""
    env = dict(os.environ, AWS_REGION=aws.region, AWS_DEFAULT_REGION=aws.region)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _shown(words: list[str], aws: Aws) -> str:
    return f"AWS_REGION={aws.region} {shlex.join(words)}"


def _remind_settings(wanted: str) -> None:
    try:
        lasting = Settings.load().endpoint_instance_type  # cdk.json's, without this run's -c
    except SettingsError:
        return
    if lasting != wanted:
        print(
            f"Now set endpoint_instance_type to {wanted} in cdk.json: a deploy without "
            f"-c endpoint_instance_type={wanted} would change the endpoint back, and fail the same way."
        )
