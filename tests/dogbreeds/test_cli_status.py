"""status: stacks (fake CloudFormation), training (moto), endpoint, autoscaling, metrics, Lambda (Stubber)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY

from dogbreeds_stacks.contract import NOT_APPROVED
from dogbreeds_stacks.names import LAMBDA_ALIAS
from tests.dogbreeds.fakes import ACCOUNT, DEPLOYED_CONFIG, DEPLOYED_VERSION, NAMES, REGION, package_arn

ENDPOINT = NAMES.endpoint
T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEPLOY = f"npx cdk deploy {NAMES.stack('endpoint')}"


def approve(version: int | None) -> None:
    """The approved-package parameter as the approval recorder writes it (moto)."""
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=NAMES.approved_package_parameter,
        Value=package_arn(version) if version else NOT_APPROVED,
        Type="String",
        Overwrite=True,
    )


@pytest.fixture
def trained(fake):
    """A state machine with one execution, and the live version approved (moto)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        name=NAMES.state_machine,
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/pipeline",
    )["stateMachineArn"]
    sfn.start_execution(stateMachineArn=arn, name="run-7")
    approve(DEPLOYED_VERSION)


def stub_endpoint(
    fake,
    *,
    current: int = 2,
    desired: int = 3,
    notebook: bool = True,
    status: str = "InService",
    config: str = DEPLOYED_CONFIG,
    version: int | None = DEPLOYED_VERSION,
    failure: str | None = None,
) -> None:
    """DescribeEndpoint, then the endpoint config, its variant's model and that model's package (Stubber)."""
    sm = fake.stub("sagemaker")
    if notebook:
        sm.add_response(
            "describe_notebook_instance",
            {"NotebookInstanceName": NAMES.notebook, "NotebookInstanceStatus": "Stopped"},
            {"NotebookInstanceName": NAMES.notebook},
        )
    endpoint = {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": T0,
        "LastModifiedTime": T0,
        "ProductionVariants": [
            {"VariantName": "AllTraffic", "CurrentInstanceCount": current, "DesiredInstanceCount": desired}
        ],
    }
    if failure:
        endpoint["FailureReason"] = failure
    sm.add_response("describe_endpoint", endpoint, {"EndpointName": ENDPOINT})
    model = f"{NAMES.project}-model-{version or 'old'}"
    sm.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": config,
            "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{config}",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.g5.xlarge"}],
            "CreationTime": T0,
        },
        {"EndpointConfigName": config},
    )
    container = (
        {"ModelPackageName": package_arn(version)}
        if version
        else {"Image": "pytorch-inference:2.6-gpu", "ModelDataUrl": "s3://bucket/models/old/output/model.tar.gz"}
    )
    sm.add_response(
        "describe_model",
        {
            "ModelName": model,
            "PrimaryContainer": container,
            "CreationTime": T0,
            "ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{model}",
        },
        {"ModelName": model},
    )


def stub_scaling_and_metrics(fake, sums: list[float] = (0,)) -> None:
    fake.stub("application-autoscaling").add_response("describe_scalable_targets", {"ScalableTargets": []})
    stub_metrics(fake, list(sums))


def stub_metrics(fake, sums: list[float]) -> None:
    points = [
        {"Timestamp": datetime(2026, 1, 1, 12, minute, tzinfo=UTC), "Sum": value, "Unit": "None"}
        for minute, value in enumerate(sums)
    ]
    fake.stub("cloudwatch").add_response(
        "get_metric_statistics",
        {"Label": "Invocations", "Datapoints": list(reversed(points))},
        {
            "Namespace": "AWS/SageMaker",
            "MetricName": "Invocations",
            "Dimensions": [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "AllTraffic"}],
            "StartTime": ANY,
            "EndTime": ANY,
            "Period": 60,
            "Statistics": ["Sum"],
        },
    )


def whole_system(fake, bucket) -> None:
    """Every stack deployed; the endpoint serving the latest approved version; the Lambda's concurrency."""
    s3 = boto3.client("s3", region_name=REGION)
    for key in ("datasets/dogImages/train/1/a.jpg", "datasets/dogImages/valid/1/b.jpg", "pretrained/resnet50-x.pth"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    fake.stacks.stacks[NAMES.stack("notebook")] = {
        "status": "UPDATE_ROLLBACK_COMPLETE",  # still usable: the last good deployment's outputs
        "outputs": {"NotebookName": NAMES.notebook},
    }
    stub_endpoint(fake)
    fake.stub("application-autoscaling").add_response(
        "describe_scalable_targets",
        {
            "ScalableTargets": [
                {
                    "ServiceNamespace": "sagemaker",
                    "ResourceId": f"endpoint/{ENDPOINT}/variant/AllTraffic",
                    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                    "MinCapacity": 1,
                    "MaxCapacity": 3,
                    "RoleARN": "arn:aws:iam::1:role/x",
                    "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
                }
            ]
        },
        {
            "ServiceNamespace": "sagemaker",
            "ResourceIds": [f"endpoint/{ENDPOINT}/variant/AllTraffic"],
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        },
    )
    stub_metrics(fake, [30, 60, 0, 15])
    lam = fake.stub("lambda")
    lam.add_response(
        "get_function_concurrency", {"ReservedConcurrentExecutions": 10}, {"FunctionName": NAMES.lambda_function}
    )
    lam.add_response(
        "get_provisioned_concurrency_config",
        {
            "RequestedProvisionedConcurrentExecutions": 1,
            "AvailableProvisionedConcurrentExecutions": 1,
            "AllocatedProvisionedConcurrentExecutions": 1,
            "Status": "READY",
        },
        {"FunctionName": NAMES.lambda_function, "Qualifier": LAMBDA_ALIAS},
    )


def test_status_shows_the_whole_system(fake, bucket, trained, run_cli):
    whole_system(fake, bucket)
    result = run_cli("status")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    out = result.out
    assert f"Stacks of dogbreeds in {REGION}:" in out
    assert "  dogbreeds-foundation    CREATE_COMPLETE" in out
    assert "  dogbreeds-ec2-training  not deployed" in out
    assert "  dogbreeds-notebook      UPDATE_ROLLBACK_COMPLETE" in out
    assert f"Artifact bucket {bucket}:" in out
    assert "  data set (datasets/dogImages/): train/, valid/ (dogbreeds upload-data)" in out
    assert "  pretrained weights (pretrained/): resnet50-x.pth (dogbreeds upload-weights)" in out
    assert "Training: last execution run-7 RUNNING (started " in out
    assert (
        f"  latest approved model package ({NAMES.approved_package_parameter}): version 2 (dogbreeds models lists "
        "them all)"
    ) in out
    assert f"Notebook {NAMES.notebook}: Stopped" in out
    assert f"Endpoint {ENDPOINT}: InService" in out
    assert (
        f"  live: model package version 2 ({package_arn(2)}), variant AllTraffic, endpoint config {DEPLOYED_CONFIG}"
    ) in out
    assert "a deploy would serve" not in out and "ROLLED BACK" not in out  # the latest approved is live
    assert "  variant AllTraffic: 2 instance(s), scaling to 3; autoscaling 1 to 3" in out
    assert (
        "  invocations per minute, last 15 min: average 7.0, peak 60, total 105 (minutes with calls: 30 60 0 15)"
    ) in out
    assert f"Lambda {NAMES.lambda_function}: reserved concurrency 10" in out
    assert "  alias live: provisioned concurrency READY, 1 of 1 allocated" in out


def test_status_json_says_the_same_for_scripts(fake, bucket, trained, run_cli):
    whole_system(fake, bucket)
    result = run_cli("status", "--json")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    answer = json.loads(result.out)  # stdout is the JSON alone
    assert answer["project"] == "dogbreeds" and answer["region"] == REGION
    assert answer["stacks"][NAMES.stack("foundation")] == "CREATE_COMPLETE"
    assert answer["stacks"][NAMES.stack("ec2-training")] is None  # not deployed
    assert answer["artifact_bucket"] == {
        "bucket": bucket,
        "dataset_prefix": "datasets/dogImages/",
        "dataset_splits": ["train", "valid"],
        "pretrained_prefix": "pretrained/",
        "pretrained_weights": ["resnet50-x.pth"],
    }
    training = answer["training"]
    assert training["last_execution"]["name"] == "run-7" and training["last_execution"]["status"] == "RUNNING"
    assert training["latest_approved"] == {
        "parameter": NAMES.approved_package_parameter,
        "model_package_arn": package_arn(2),
        "version": 2,
        "unknown": None,
    }
    assert answer["notebook"] == {"name": NAMES.notebook, "status": "Stopped"}
    endpoint = answer["endpoint"]
    assert {k: endpoint[k] for k in ("name", "exists", "status", "endpoint_config", "rolled_back", "updating")} == {
        "name": ENDPOINT,
        "exists": True,
        "status": "InService",
        "endpoint_config": DEPLOYED_CONFIG,
        "rolled_back": False,
        "updating": False,
    }
    assert [(m["variant"], m["version"]) for m in endpoint["live"]] == [("AllTraffic", 2)]
    assert endpoint["next_deploy"] == {
        "model_package_arn": package_arn(2),
        "version": 2,
        "why": "the latest approved",
        "refused": False,
    }
    (variant,) = endpoint["variants"]
    assert variant["current_instances"] == 2 and variant["desired_instances"] == 3
    assert variant["autoscaling"] == {"min": 1, "max": 3}
    assert variant["invocations"]["minutes_with_calls"] == [30, 60, 0, 15]
    assert variant["invocations"]["total"] == 105
    assert answer["lambda"]["reserved_concurrency"] == 10
    assert answer["lambda"]["provisioned_concurrency"]["status"] == "READY"


def test_status_json_marks_what_it_may_not_read(fake, trained, run_cli):
    for name in (NAMES.stack("foundation"), NAMES.stack("notebook"), NAMES.stack("invoker")):
        del fake.stacks.stacks[name]
    stub_endpoint(fake, current=1, desired=1, notebook=False)
    fake.stub("application-autoscaling").add_client_error("describe_scalable_targets", "AccessDeniedException", "no")
    fake.stub("cloudwatch").add_client_error("get_metric_statistics", "AccessDenied", "no", 403)
    result = run_cli("status", "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["artifact_bucket"] is None and answer["notebook"] is None and answer["lambda"] is None
    (variant,) = answer["endpoint"]["variants"]
    assert variant["autoscaling"] == {"unreadable": "AccessDeniedException"}
    assert variant["invocations"] == {"unreadable": "AccessDenied"}


def test_status_with_only_the_foundation(fake, bucket, run_cli):
    foundation = NAMES.stack("foundation")
    fake.stacks.stacks = {foundation: fake.stacks.stacks[foundation]}
    result = run_cli("status")
    assert result.code == 0, result.err
    assert result.out.count("not deployed") == 5
    assert "Endpoint" not in result.out and "Lambda" not in result.out and "Training" not in result.out
    assert "  data set (datasets/dogImages/): none (dogbreeds upload-data)" in result.out
    assert fake.created == ["cloudformation", "s3"]


def test_status_shows_what_it_may_not_read(fake, trained, run_cli):
    for name in (NAMES.stack("foundation"), NAMES.stack("notebook"), NAMES.stack("invoker")):
        del fake.stacks.stacks[name]
    stub_endpoint(fake, current=1, desired=1, notebook=False)  # not deployed: not described
    fake.stub("application-autoscaling").add_client_error("describe_scalable_targets", "AccessDeniedException", "no")
    fake.stub("cloudwatch").add_client_error("get_metric_statistics", "AccessDenied", "no", 403)
    result = run_cli("status")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert "  variant AllTraffic: 1 instance(s); autoscaling not readable (AccessDeniedException)" in result.out
    assert "  invocations: not readable (AccessDenied)" in result.out


def test_status_without_provisioned_concurrency(fake, run_cli):
    fake.stacks.stacks = {k: v for k, v in fake.stacks.stacks.items() if k.endswith("invoker")}
    lam = fake.stub("lambda")
    lam.add_response("get_function_concurrency", {})
    lam.add_client_error(
        "get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException", "No config", 404
    )
    result = run_cli("status")
    assert result.code == 0, result.err
    assert f"Lambda {NAMES.lambda_function}: no reserved concurrency" in result.out
    assert "  alias live: no provisioned concurrency" in result.out


# --- the model the endpoint serves ------------------------------------------------------------------


def endpoint_only(fake) -> None:
    """Only the training and endpoint stacks: the parts of status that name model package versions."""
    keep = {NAMES.stack("training"), NAMES.stack("endpoint")}
    fake.stacks.stacks = {k: v for k, v in fake.stacks.stacks.items() if k in keep}


def test_a_newer_approved_version_is_what_a_deploy_would_serve(fake, trained, run_cli):
    endpoint_only(fake)
    approve(3)
    stub_endpoint(fake, notebook=False)
    stub_scaling_and_metrics(fake)
    result = run_cli("status")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert (
        f"  latest approved model package ({NAMES.approved_package_parameter}): version 3 (dogbreeds models lists "
        "them all)"
    ) in result.out
    endpoint = result.out[result.out.index(f"Endpoint {ENDPOINT}:") :].splitlines()
    assert endpoint[:3] == [
        f"Endpoint {ENDPOINT}: InService",
        f"  live: model package version 2 ({package_arn(2)}), variant AllTraffic, endpoint config {DEPLOYED_CONFIG}",
        f"  a deploy would serve version 3 (the latest approved): `{DEPLOY}`",
    ]


def test_a_pinned_version_is_what_a_deploy_would_serve(fake, trained, run_cli):
    endpoint_only(fake)
    stub_endpoint(fake, notebook=False)
    stub_scaling_and_metrics(fake)
    result = run_cli("-c", f"endpoint_model_package_arn={package_arn(1)}", "status")
    assert result.code == 0, result.err
    assert (
        f"  a deploy would serve version 1 (pinned by the setting endpoint_model_package_arn): `{DEPLOY} -c "
        f"endpoint_model_package_arn={package_arn(1)}`"
    ) in result.out


def test_an_update_sagemaker_rolled_back_is_reported(fake, trained, run_cli):
    """CloudFormation deployed config v2 (version 2); the alarms fired and SageMaker went back to v1."""
    endpoint_only(fake)
    old_config = f"{ENDPOINT}-config-v1"
    stub_endpoint(
        fake, notebook=False, config=old_config, version=1, failure="Rolled back: alarm dog-breed-classifier-5xx"
    )
    stub_scaling_and_metrics(fake)
    result = run_cli("status")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    endpoint = result.out[result.out.index(f"Endpoint {ENDPOINT}:") :].splitlines()
    alarms = NAMES.endpoint_alarm("")
    assert endpoint[:5] == [
        f"Endpoint {ENDPOINT}: InService - Rolled back: alarm dog-breed-classifier-5xx",
        f"  live: model package version 1 ({package_arn(1)}), variant AllTraffic, endpoint config {old_config}",
        f"  ROLLED BACK: the endpoint runs endpoint config {old_config}, but the last deploy of "
        f"{NAMES.stack('endpoint')} asked for {DEPLOYED_CONFIG} (model package version 2); SageMaker rolled that "
        "update back while CloudFormation records it as deployed.",
        f"    why: the endpoint's page in the SageMaker console (its events; `aws sagemaker describe-endpoint "
        f"--endpoint-name {ENDPOINT}`) and the rollback alarms {alarms}* (`aws cloudwatch describe-alarms "
        f"--alarm-name-prefix {alarms}`, their history in the CloudWatch console, dashboard {NAMES.dashboard}): one "
        "went into ALARM during the update.",
        "    then: while version 2 is the latest approved, a deploy changes nothing (CloudFormation has it as "
        f"deployed); reject it (dogbreeds reject 2 --reason TEXT) or approve a fixed version, then `{DEPLOY}`.",
    ]


def test_after_a_rollback_a_newer_approved_version_is_what_a_deploy_would_serve(fake, trained, run_cli):
    endpoint_only(fake)
    approve(3)
    stub_endpoint(fake, notebook=False, config=f"{ENDPOINT}-config-v1", version=1)
    stub_scaling_and_metrics(fake)
    result = run_cli("status")
    assert result.code == 0, result.err
    assert "  ROLLED BACK: " in result.out and "    then:" not in result.out
    assert f"  a deploy would serve version 3 (the latest approved): `{DEPLOY}`" in result.out


def test_an_update_in_progress_is_no_rollback(fake, trained, run_cli):
    endpoint_only(fake)
    stub_endpoint(fake, notebook=False, status="Updating", config=f"{ENDPOINT}-config-v1", version=1)
    stub_scaling_and_metrics(fake)
    result = run_cli("status")
    assert result.code == 0, result.err
    assert f"  Updating: endpoint config {ENDPOINT}-config-v1 for now, the stack's is {DEPLOYED_CONFIG}" in result.out
    assert "ROLLED BACK" not in result.out


def test_nothing_approved_and_a_model_from_before_the_registry(fake, trained, run_cli):
    endpoint_only(fake)
    approve(None)
    stub_endpoint(fake, notebook=False, version=None)
    stub_scaling_and_metrics(fake)
    result = run_cli("status")
    assert result.code == 0, result.err
    assert (
        f"  latest approved model package ({NAMES.approved_package_parameter}): none yet (dogbreeds models lists the "
        "versions; dogbreeds approve VERSION approves one)"
    ) in result.out
    assert (
        "  live: s3://bucket/models/old/output/model.tar.gz, not a model package (deployed before the registry), "
        f"variant AllTraffic, endpoint config {DEPLOYED_CONFIG}"
    ) in result.out
    assert (
        f"  a deploy of {NAMES.stack('endpoint')} would be refused: no model package version is approved (dogbreeds "
        "approve VERSION)"
    ) in result.out


def test_an_endpoint_stack_whose_endpoint_is_gone(fake, trained, run_cli):
    endpoint_only(fake)
    fake.stub("sagemaker").add_client_error(
        "describe_endpoint", "ValidationException", f"Could not find endpoint {ENDPOINT}.", 400
    )
    result = run_cli("status")
    assert result.code == 0, result.err
    assert f"Endpoint {ENDPOINT}: does not exist (Could not find endpoint {ENDPOINT}.)" in result.out


def test_no_endpoint_deployed_still_shows_the_latest_approved(fake, trained, run_cli):
    del fake.stacks.stacks[NAMES.stack("endpoint")]
    endpoint_only(fake)
    result = run_cli("status")
    assert result.code == 0, result.err
    assert f"  {NAMES.stack('endpoint'):<22}  not deployed" in result.out
    assert "Endpoint" not in result.out
    assert "latest approved model package" in result.out and "version 2" in result.out
    assert "sagemaker" not in fake.created


def test_an_unreadable_parameter_or_endpoint_config(fake, trained, run_cli):
    endpoint_only(fake)
    fake.stub("ssm").add_client_error("get_parameter", "AccessDeniedException", "no", 400)
    sm = fake.stub("sagemaker")
    sm.add_response(
        "describe_endpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT}",
            "EndpointConfigName": DEPLOYED_CONFIG,
            "EndpointStatus": "InService",
            "CreationTime": T0,
            "LastModifiedTime": T0,
        },
    )
    sm.add_client_error("describe_endpoint_config", "AccessDeniedException", "no", 400)
    result = run_cli("status")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert (
        f"  latest approved model package ({NAMES.approved_package_parameter}): not known (not readable with these "
        "credentials (AccessDeniedException))"
    ) in result.out
    assert "  live model: not readable (AccessDeniedException)" in result.out
