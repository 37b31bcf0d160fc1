"""``dogbreeds status``: what is deployed and how it is doing.

The app's stacks and their states; the last training execution and the latest approved model package
version; the endpoint's status, the model package version it serves (and the one a deploy would serve
when they differ), an update SageMaker rolled back, its instance count, autoscaling range and
invocations per minute over the last 15 minutes; the Lambda's reserved concurrency and its alias's
provisioned concurrency. A part that the credentials may not read is shown as such; the rest is still
shown. ``--json`` prints the same as one JSON object, for scripts: a part of a stack that is not deployed is
null, a part the credentials may not read is ``{"unreadable": "<error code>"}``.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from functools import partial

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import ACCESS_DENIED_CODES, NotDeployedError, client_error_code
from dogbreeds.ops.registry import Registry, describe_version, same_package, variant_models, version_of
from dogbreeds_stacks.contract import PREFIXES
from dogbreeds_stacks.names import STACK_PARTS

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


def _unreadable(err: Unreadable) -> dict:
    return {"unreadable": str(err)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text")


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    stacks = Stacks(aws, config)

    def show(lines: list[str]) -> None:
        if not args.json:  # each part as soon as it is read
            for line in lines:
                print(line, flush=True)

    states = {}
    for part in STACK_PARTS:
        stack = stacks.describe(part)
        states[config.names.stack(part)] = stack["StackStatus"] if stack else None
    width = max(len(name) for name in config.names.stacks)
    show(
        [
            f"Stacks of {config.settings.project_name} in {aws.region}:",
            *(f"  {name:<{width}}  {state or 'not deployed'}" for name, state in states.items()),
        ]
    )
    answer: dict = {"project": config.settings.project_name, "region": aws.region, "stacks": states}

    registry = Registry(stacks, aws, config)
    for key, title, section in (
        ("artifact_bucket", "Artifact bucket", _foundation),
        ("training", "Training", partial(_training, registry=registry)),
        ("notebook", "Notebook", _notebook),
        ("endpoint", "Endpoint", partial(_endpoint, registry=registry)),
        ("lambda", "Lambda", _function),
    ):
        try:
            lines, data = section(stacks, aws)
        except NotDeployedError:
            answer[key] = None  # its stack is listed above as not deployed (or not usable)
            continue
        except Unreadable as err:
            lines, data = [f"{title}: not readable with these credentials ({err})"], _unreadable(err)
        answer[key] = data
        show(lines)
    if args.json:
        print(json.dumps(answer, indent=2))
    return 0


def _foundation(stacks: Stacks, aws: Aws) -> tuple[list[str], dict]:
    bucket = stacks.output("foundation", "ArtifactBucketName")
    s3 = aws.client("s3")
    found = _read(s3.list_objects_v2, Bucket=bucket, Prefix=PREFIXES.datasets, Delimiter="/").get("CommonPrefixes", [])
    splits = [p["Prefix"][len(PREFIXES.datasets) :] for p in found]
    weights = _read(s3.list_objects_v2, Bucket=bucket, Prefix=PREFIXES.pretrained, Delimiter="/").get("Contents", [])
    names = [o["Key"][len(PREFIXES.pretrained) :] for o in weights if o["Key"].endswith(".pth")]
    lines = [
        f"Artifact bucket {bucket}:",
        f"  data set ({PREFIXES.datasets}): {', '.join(splits) or 'none'} (dogbreeds upload-data)",
        f"  pretrained weights ({PREFIXES.pretrained}): {', '.join(names) or 'none'} (dogbreeds upload-weights)",
    ]
    data = {
        "bucket": bucket,
        "dataset_prefix": PREFIXES.datasets,
        "dataset_splits": [s.rstrip("/") for s in splits],
        "pretrained_prefix": PREFIXES.pretrained,
        "pretrained_weights": names,
    }
    return lines, data


def _training(stacks: Stacks, aws: Aws, *, registry: Registry) -> tuple[list[str], dict]:
    arn = stacks.output("training", "StateMachineArn")
    lines = []
    data: dict = {"state_machine": arn, "last_execution": None}
    executions = _read(aws.client("stepfunctions").list_executions, stateMachineArn=arn, maxResults=1)["executions"]
    if executions:
        last = executions[0]
        started = last["startDate"].astimezone(UTC)
        lines.append(f"Training: last execution {last['name']} {last['status']} (started {started:%Y-%m-%d %H:%M} UTC)")
        data["last_execution"] = {
            "name": last["name"],
            "arn": last["executionArn"],
            "status": last["status"],
            "started": started.isoformat(),
        }
    else:
        lines.append("Training: no execution yet (dogbreeds train)")
    line, data["latest_approved"] = _approved(registry)
    lines.append("  " + line)
    return lines, data


def _approved(registry: Registry) -> tuple[str, dict]:
    try:
        approved = registry.approved
    except NotDeployedError as err:  # a training stack deployed before the Model Registry
        return f"latest approved model package: not known ({err})", {"unknown": str(err)}
    data = {
        "parameter": approved.parameter,
        "model_package_arn": approved.package_arn,
        "version": version_of(approved.package_arn),
        "unknown": approved.unknown,
    }
    where = f"latest approved model package ({approved.parameter})"
    if approved.unknown:
        return f"{where}: not known ({approved.unknown})", data
    if approved.package_arn is None:
        return f"{where}: none yet (dogbreeds models lists the versions; dogbreeds approve VERSION approves one)", data
    version = describe_version(approved.package_arn, _group(registry))
    return f"{where}: {version} (dogbreeds models lists them all)", data


def _notebook(stacks: Stacks, aws: Aws) -> tuple[list[str], dict]:
    name = stacks.output("notebook", "NotebookName")
    status = _read(aws.client("sagemaker").describe_notebook_instance, NotebookInstanceName=name)
    return [f"Notebook {name}: {status['NotebookInstanceStatus']}"], {
        "name": name,
        "status": status["NotebookInstanceStatus"],
    }


def _endpoint(stacks: Stacks, aws: Aws, *, registry: Registry) -> tuple[list[str], dict]:
    name = stacks.output("endpoint", "EndpointName")
    sagemaker = aws.client("sagemaker")
    try:
        endpoint = _read(sagemaker.describe_endpoint, EndpointName=name)
    except Exception as err:
        if client_error_code(err) == "ValidationException":
            message = err.response["Error"]["Message"]
            return [f"Endpoint {name}: does not exist ({message})"], {"name": name, "exists": False, "reason": message}
        raise
    line = f"Endpoint {name}: {endpoint['EndpointStatus']}"
    if endpoint.get("FailureReason"):
        line += f" - {endpoint['FailureReason']}"
    served, data = _served(stacks, aws, registry, endpoint)
    data = {
        "name": name,
        "exists": True,
        "status": endpoint["EndpointStatus"],
        "failure_reason": endpoint.get("FailureReason"),
        "endpoint_config": endpoint.get("EndpointConfigName"),
        **data,
        "variants": [],
    }
    lines = [line, *served]
    for variant in endpoint.get("ProductionVariants", []):
        vname = variant["VariantName"]
        current, desired = variant.get("CurrentInstanceCount"), variant.get("DesiredInstanceCount")
        text = f"  variant {vname}: {current} instance(s)"
        if desired is not None and desired != current:
            text += f", scaling to {desired}"
        scaling_text, scaling = _autoscaling(aws, name, vname)
        lines.append(text + scaling_text)
        invocations_text, invocations = _invocations(aws, name, vname)
        lines.append("  " + invocations_text)
        data["variants"].append(
            {
                "name": vname,
                "current_instances": current,
                "desired_instances": desired,
                "autoscaling": scaling,
                "invocations": invocations,
            }
        )
    return lines, data


def _served(stacks: Stacks, aws: Aws, registry: Registry, endpoint: dict) -> tuple[list[str], dict]:
    """The package version the endpoint serves; a rolled-back update; what a deploy would serve instead."""
    running = endpoint.get("EndpointConfigName")
    outputs = stacks.outputs("endpoint")
    deploy = registry.deploy_command()
    try:
        models = _read(lambda: list(variant_models(aws.client("sagemaker"), running))) if running else []
    except Unreadable as err:
        return [f"  live model: not readable ({err})"], {"live": _unreadable(err)}
    lines, live = [], None
    group = _group(registry)
    asked = outputs.get("EndpointConfigName")
    data: dict = {
        "live": [
            {
                "variant": m.variant,
                "model": m.model,
                "model_package_arn": m.package_arn,
                "version": version_of(m.package_arn),
                "model_data_url": m.model_data_url,
            }
            for m in models
        ],
        "stack_endpoint_config": asked,
        "updating": False,
        "rolled_back": False,
        "next_deploy": None,
    }
    for model in models:
        if model.package_arn:
            live = live or model.package_arn
            served = f"model package {describe_version(model.package_arn, group)} ({model.package_arn})"
        else:
            served = f"{model.model_data_url or model.model}, not a model package (deployed before the registry)"
        lines.append(f"  live: {served}, variant {model.variant}, endpoint config {running}")

    rolled_back = False
    if asked is None:
        lines.append(
            f"  the stack {registry.config.names.stack('endpoint')} has no output EndpointConfigName (deployed by "
            f"an older version of this app): `{deploy}` deploys this one"
        )
    elif running != asked:
        if endpoint["EndpointStatus"] in CHANGING:
            status = endpoint["EndpointStatus"]
            lines.append(f"  {status}: endpoint config {running} for now, the stack's is {asked}")
            data["updating"] = True
        else:
            lines += _rolled_back(registry, outputs, endpoint, asked)
            rolled_back = data["rolled_back"] = True

    target, why = _next_deploy(registry)
    if target or why:
        data["next_deploy"] = {
            "model_package_arn": target,
            "version": version_of(target),
            "why": why,
            "refused": target is None,
        }
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
    return lines, data


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


def _autoscaling(aws: Aws, endpoint: str, variant: str) -> tuple[str, dict | None]:
    try:
        targets = _read(
            aws.client("application-autoscaling").describe_scalable_targets,
            ServiceNamespace="sagemaker",
            ResourceIds=[f"endpoint/{endpoint}/variant/{variant}"],
            ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        )["ScalableTargets"]
    except Unreadable as err:
        return f"; autoscaling not readable ({err})", _unreadable(err)
    if not targets:
        return "; no autoscaling", None
    low, high = targets[0]["MinCapacity"], targets[0]["MaxCapacity"]
    return f"; autoscaling {low} to {high}", {"min": low, "max": high}


def _invocations(aws: Aws, endpoint: str, variant: str) -> tuple[str, dict]:
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
        return f"invocations: not readable ({err})", _unreadable(err)
    per_minute = [p["Sum"] for p in sorted(points, key=lambda p: p["Timestamp"])]
    total = sum(per_minute)
    peak = max(per_minute, default=0)
    series = " ".join(f"{v:.0f}" for v in per_minute) or "none"
    text = (
        f"invocations per minute, last {WINDOW_MINUTES} min: average {total / WINDOW_MINUTES:.1f}, "
        f"peak {peak:.0f}, total {total:.0f} (minutes with calls: {series})"
    )
    data = {
        "window_minutes": WINDOW_MINUTES,
        "average_per_minute": total / WINDOW_MINUTES,
        "peak_per_minute": peak,
        "total": total,
        "minutes_with_calls": per_minute,
    }
    return text, data


def _function(stacks: Stacks, aws: Aws) -> tuple[list[str], dict]:
    name = stacks.output("invoker", "FunctionName")
    alias_arn = stacks.output("invoker", "AliasArn")
    alias = alias_arn.rsplit(":", 1)[-1]
    client = aws.client("lambda")
    data: dict = {"function": name, "alias": alias}
    try:
        reserved = _read(client.get_function_concurrency, FunctionName=name).get("ReservedConcurrentExecutions")
        reserved_text = f"reserved concurrency {reserved}" if reserved is not None else "no reserved concurrency"
        data["reserved_concurrency"] = reserved
    except Unreadable as err:
        reserved_text = f"reserved concurrency not readable ({err})"
        data["reserved_concurrency"] = _unreadable(err)
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
        data["provisioned_concurrency"] = {
            "status": pc.get("Status"),
            "requested": pc.get("RequestedProvisionedConcurrentExecutions", 0),
            "allocated": pc.get("AllocatedProvisionedConcurrentExecutions", 0),
            "status_reason": pc.get("StatusReason"),
        }
    except Unreadable as err:
        text = f"  alias {alias}: provisioned concurrency not readable ({err})"
        data["provisioned_concurrency"] = _unreadable(err)
    except Exception as err:
        if client_error_code(err) != "ProvisionedConcurrencyConfigNotFoundException":
            raise
        text = f"  alias {alias}: no provisioned concurrency"
        data["provisioned_concurrency"] = None
    lines.append(text)
    return lines, data
