"""``dogbreeds status``: what is deployed and how it is doing.

The app's stacks and their states; the last training execution and the model handed off; the
endpoint's status, instance count, autoscaling range and invocations per minute over the last 15
minutes; the Lambda's reserved concurrency and its alias's provisioned concurrency. A part that the
credentials may not read is shown as such; the rest is still shown.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import ACCESS_DENIED_CODES, NotDeployedError, client_error_code
from stacks.contract import PREFIXES
from stacks.names import STACK_PARTS

WINDOW_MINUTES = 15


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

    for title, section in (
        ("Artifact bucket", _foundation),
        ("Training", _training),
        ("Notebook", _notebook),
        ("Endpoint", _endpoint),
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


def _training(stacks: Stacks, aws: Aws) -> list[str]:
    arn = stacks.output("training", "StateMachineArn")
    lines = []
    executions = _read(aws.client("stepfunctions").list_executions, stateMachineArn=arn, maxResults=1)["executions"]
    if executions:
        last = executions[0]
        started = last["startDate"].astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"Training: last execution {last['name']} {last['status']} (started {started})")
    else:
        lines.append("Training: no execution yet (dogbreeds train)")
    parameter = stacks.output("training", "ModelParameterName")
    try:
        value = _read(aws.client("ssm").get_parameter, Name=parameter)["Parameter"]["Value"]
        lines.append(f"  model handed off ({parameter}): {value}")
    except Unreadable as err:
        lines.append(f"  model handed off ({parameter}): not readable ({err})")
    return lines


def _notebook(stacks: Stacks, aws: Aws) -> list[str]:
    name = stacks.output("notebook", "NotebookName")
    status = _read(aws.client("sagemaker").describe_notebook_instance, NotebookInstanceName=name)
    return [f"Notebook {name}: {status['NotebookInstanceStatus']}"]


def _endpoint(stacks: Stacks, aws: Aws) -> list[str]:
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
    lines = [line]
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
