"""``dogbreeds status``: what is deployed and how it is doing.

The app's stacks and their states; the last training execution and the latest approved model package
version; the endpoint's status, the model package version it serves (and the one a deploy would serve
when they differ), an update SageMaker rolled back, its instance count, autoscaling range and
invocations per minute over the last 15 minutes; the Lambda's reserved concurrency and its alias's
provisioned concurrency. A part that the credentials may not read is shown as such; the rest is still
shown.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from functools import partial

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import ACCESS_DENIED_CODES, NotDeployedError, client_error_code
from dogbreeds.ops.registry import Registry, describe_version, same_package, variant_models, version_of
from stacks.contract import PREFIXES
from stacks.names import STACK_PARTS

WINDOW_MINUTES = 15
# Endpoint states in which its endpoint config is about to change: a config other than the stack's is no rollback.
CHANGING = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})


class Unreadable(Exception):
    """A status the credentials may not read (access denied)."""


def _read(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except Exception as err:
        if client_error_code(err) in ACCESS_DENIED_CODES:
            raise Unreadable(client_error_code(err)) from None
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options of its own


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    del args
    stacks = Stacks(aws, config)
    print(f"Stacks of {config.settings.project_name} in {aws.region}:")
    width = max(len(name) for name in config.names.stacks)
    for part in STACK_PARTS:
        stack = stacks.describe(part)
        state = stack["StackStatus"] if stack else "not deployed"
        print(f"  {config.names.stack(part):<{width}}  {state}")

    registry = Registry(stacks, aws, config)
    for title, section in (
        ("Artifact bucket", _foundation),
        ("Training", partial(_training, registry=registry)),
        ("Notebook", _notebook),
        ("Endpoint", partial(_endpoint, registry=registry)),
        ("Lambda", _function),
    ):
        try:
            lines = section(stacks, aws)
        except NotDeployedError:
            continue  # its stack is listed above as not deployed (or not usable)
        except Unreadable as err:
            lines = [f"{title}: not readable with these credentials ({err})"]
        for line in lines:
            print(line)
    return 0


def _foundation(stacks: Stacks, aws: Aws) -> list[str]:
    bucket = stacks.output("foundation", "ArtifactBucketName")
    s3 = aws.client("s3")
    found = _read(s3.list_objects_v2, Bucket=bucket, Prefix=PREFIXES.datasets, Delimiter="/").get("CommonPrefixes", [])
    splits = [p["Prefix"][len(PREFIXES.datasets) :] for p in found]
    weights = _read(s3.list_objects_v2, Bucket=bucket, Prefix=PREFIXES.pretrained, Delimiter="/").get("Contents", [])
    names = [o["Key"][len(PREFIXES.pretrained) :] for o in weights if o["Key"].endswith(".pth")]
    return [
        f"Artifact bucket {bucket}:",
        f"  data set ({PREFIXES.datasets}): {', '.join(splits) or 'none'} (dogbreeds upload-data)",
        f"  pretrained weights ({PREFIXES.pretrained}): {', '.join(names) or 'none'} (dogbreeds upload-weights)",
    ]


def _training(stacks: Stacks, aws: Aws, *, registry: Registry) -> list[str]:
    arn = stacks.output("training", "StateMachineArn")
    lines = []
    executions = _read(aws.client("stepfunctions").list_executions, stateMachineArn=arn, maxResults=1)["executions"]
    if executions:
        last = executions[0]
        started = last["startDate"].astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"Training: last execution {last['name']} {last['status']} (started {started})")
    else:
        lines.append("Training: no execution yet (dogbreeds train)")
    lines.append("  " + _approved_line(registry))
    return lines


def _approved_line(registry: Registry) -> str:
    try:
        approved = registry.approved
    except NotDeployedError as err:  # a training stack deployed before the Model Registry
        return f"latest approved model package: not known ({err})"
    where = f"latest approved model package ({approved.parameter})"
    if approved.unknown:
        return f"{where}: not known ({approved.unknown})"
    if approved.package_arn is None:
        return f"{where}: none yet (dogbreeds models lists the versions; dogbreeds approve VERSION approves one)"
    return f"{where}: {describe_version(approved.package_arn, _group(registry))} (dogbreeds models lists them all)"


def _notebook(stacks: Stacks, aws: Aws) -> list[str]:
    name = stacks.output("notebook", "NotebookName")
    status = _read(aws.client("sagemaker").describe_notebook_instance, NotebookInstanceName=name)
    return [f"Notebook {name}: {status['NotebookInstanceStatus']}"]


def _endpoint(stacks: Stacks, aws: Aws, *, registry: Registry) -> list[str]:
    name = stacks.output("endpoint", "EndpointName")
    sagemaker = aws.client("sagemaker")
    try:
        endpoint = _read(sagemaker.describe_endpoint, EndpointName=name)
    except Exception as err:
        if client_error_code(err) == "ValidationException":
            return [f"Endpoint {name}: does not exist ({err.response['Error']['Message']})"]
        raise
    line = f"Endpoint {name}: {endpoint['EndpointStatus']}"
    if endpoint.get("FailureReason"):
        line += f" - {endpoint['FailureReason']}"
    lines = [line, *_served(stacks, aws, registry, endpoint)]
    for variant in endpoint.get("ProductionVariants", []):
        vname = variant["VariantName"]
        current, desired = variant.get("CurrentInstanceCount"), variant.get("DesiredInstanceCount")
        text = f"  variant {vname}: {current} instance(s)"
        if desired is not None and desired != current:
            text += f", scaling to {desired}"
        text += _autoscaling(aws, name, vname)
        lines.append(text)
        lines.append("  " + _invocations(aws, name, vname))
    return lines


def _served(stacks: Stacks, aws: Aws, registry: Registry, endpoint: dict) -> list[str]:
    """The package version the endpoint serves; a rolled-back update; what a deploy would serve instead."""
    running = endpoint.get("EndpointConfigName")
    outputs = stacks.outputs("endpoint")
    deploy = registry.deploy_command()
    try:
        models = _read(lambda: list(variant_models(aws.client("sagemaker"), running))) if running else []
    except Unreadable as err:
        return [f"  live model: not readable ({err})"]
    lines, live = [], None
    group = _group(registry)
    for model in models:
        if model.package_arn:
            live = live or model.package_arn
            served = f"model package {describe_version(model.package_arn, group)} ({model.package_arn})"
        else:
            served = f"{model.model_data_url or model.model}, not a model package (deployed before the registry)"
        lines.append(f"  live: {served}, variant {model.variant}, endpoint config {running}")

    asked, rolled_back = outputs.get("EndpointConfigName"), False
    if asked is None:
        lines.append(
            f"  the stack {registry.config.names.stack('endpoint')} has no output EndpointConfigName (deployed by "
            f"an older version of this app): `{deploy}` deploys this one"
        )
    elif running != asked:
        if endpoint["EndpointStatus"] in CHANGING:
            status = endpoint["EndpointStatus"]
            lines.append(f"  {status}: endpoint config {running} for now, the stack's is {asked}")
        else:
            lines += _rolled_back(registry, outputs, endpoint, asked)
            rolled_back = True

    target, why = _next_deploy(registry)
    if target is None and why:
        lines.append(f"  a deploy of {registry.config.names.stack('endpoint')} would be refused: {why}")
    elif rolled_back and same_package(target, outputs.get("ModelPackageArn")):
        version = describe_version(target, group)
        remedy = (
            "pin another version"
            if registry.config.settings.endpoint_model_package_arn
            else f"reject it (dogbreeds reject {version_of(target)} --reason TEXT) or approve a fixed version"
        )
        lines.append(
            f"    then: while {version} is {why}, a deploy changes nothing (CloudFormation has it as deployed); "
            f"{remedy}, then `{deploy}`."
        )
    elif target and live and not same_package(target, live):
        lines.append(f"  a deploy would serve {describe_version(target, group)} ({why}): `{deploy}`")
    return lines


def _rolled_back(registry: Registry, outputs: dict[str, str], endpoint: dict, asked: str) -> list[str]:
    name, running = endpoint["EndpointName"], endpoint.get("EndpointConfigName")
    wanted = outputs.get("ModelPackageArn")
    wanted_text = f" (model package {describe_version(wanted, _group(registry))})" if wanted else ""
    alarms = registry.config.names.endpoint_alarm("")
    dashboard = f", dashboard {outputs['DashboardName']}" if outputs.get("DashboardName") else ""
    return [
        f"  ROLLED BACK: the endpoint runs endpoint config {running}, but the last deploy of "
        f"{registry.config.names.stack('endpoint')} asked for {asked}{wanted_text}; SageMaker rolled that update "
        "back while CloudFormation records it as deployed.",
        f"    why: the endpoint's page in the SageMaker console (its events; `aws sagemaker describe-endpoint "
        f"--endpoint-name {name}`) and the rollback alarms {alarms}* (`aws cloudwatch describe-alarms "
        f"--alarm-name-prefix {alarms}`, their history in the CloudWatch console{dashboard}): one went into ALARM "
        "during the update.",
    ]


def _group(registry: Registry) -> str | None:
    try:
        return registry.group
    except NotDeployedError:
        return None


def _next_deploy(registry: Registry) -> tuple[str | None, str | None]:
    """What a deploy of the endpoint stack would serve (the pinned or the latest approved package), and why."""
    pinned = registry.config.settings.endpoint_model_package_arn
    if pinned:
        return pinned, "pinned by the setting endpoint_model_package_arn"
    try:
        approved = registry.approved
    except NotDeployedError:
        return None, None
    if approved.unknown:
        return None, None
    if approved.package_arn is None:
        return None, "no model package version is approved (dogbreeds approve VERSION)"
    return approved.package_arn, "the latest approved"


def _autoscaling(aws: Aws, endpoint: str, variant: str) -> str:
    try:
        targets = _read(
            aws.client("application-autoscaling").describe_scalable_targets,
            ServiceNamespace="sagemaker",
            ResourceIds=[f"endpoint/{endpoint}/variant/{variant}"],
            ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        )["ScalableTargets"]
    except Unreadable as err:
        return f"; autoscaling not readable ({err})"
    if not targets:
        return "; no autoscaling"
    return f"; autoscaling {targets[0]['MinCapacity']} to {targets[0]['MaxCapacity']}"


def _invocations(aws: Aws, endpoint: str, variant: str) -> str:
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        points = _read(
            aws.client("cloudwatch").get_metric_statistics,
            Namespace="AWS/SageMaker",
            MetricName="Invocations",
            Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}],
            StartTime=end - timedelta(minutes=WINDOW_MINUTES),
            EndTime=end,
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
    except Unreadable as err:
        return f"invocations: not readable ({err})"
    per_minute = [p["Sum"] for p in sorted(points, key=lambda p: p["Timestamp"])]
    total = sum(per_minute)
    peak = max(per_minute, default=0)
    series = " ".join(f"{v:.0f}" for v in per_minute) or "none"
    return (
        f"invocations per minute, last {WINDOW_MINUTES} min: average {total / WINDOW_MINUTES:.1f}, "
        f"peak {peak:.0f}, total {total:.0f} (minutes with calls: {series})"
    )


def _function(stacks: Stacks, aws: Aws) -> list[str]:
    name = stacks.output("invoker", "FunctionName")
    alias_arn = stacks.output("invoker", "AliasArn")
    alias = alias_arn.rsplit(":", 1)[-1]
    client = aws.client("lambda")
    try:
        reserved = _read(client.get_function_concurrency, FunctionName=name).get("ReservedConcurrentExecutions")
        reserved_text = f"reserved concurrency {reserved}" if reserved is not None else "no reserved concurrency"
    except Unreadable as err:
        reserved_text = f"reserved concurrency not readable ({err})"
    lines = [f"Lambda {name}: {reserved_text}"]
    try:
        pc = _read(client.get_provisioned_concurrency_config, FunctionName=name, Qualifier=alias)
        text = (
            f"  alias {alias}: provisioned concurrency {pc.get('Status')}, "
            f"{pc.get('AllocatedProvisionedConcurrentExecutions', 0)} of "
            f"{pc.get('RequestedProvisionedConcurrentExecutions', 0)} allocated"
        )
        if pc.get("StatusReason"):
            text += f" - {pc['StatusReason']}"
    except Unreadable as err:
        text = f"  alias {alias}: provisioned concurrency not readable ({err})"
    except Exception as err:
        if client_error_code(err) != "ProvisionedConcurrencyConfigNotFoundException":
            raise
        text = f"  alias {alias}: no provisioned concurrency"
    lines.append(text)
    return lines
