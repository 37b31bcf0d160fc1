"""status: stacks (fake CloudFormation), training (moto), endpoint, autoscaling, metrics, Lambda (Stubber)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY

from stacks.names import LAMBDA_ALIAS
from tests.dogbreeds.fakes import ACCOUNT, NAMES, REGION

ENDPOINT = NAMES.endpoint


@pytest.fixture
def trained(fake):
    """A state machine with one execution, and the handed-off model parameter (moto)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        name=NAMES.state_machine,
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/pipeline",
    )["stateMachineArn"]
    sfn.start_execution(stateMachineArn=arn, name="run-7")
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=NAMES.model_parameter, Value="s3://bucket/models/run-7/output/model.tar.gz", Type="String"
    )


def stub_endpoint(fake, *, current: int = 2, desired: int = 3, notebook: bool = True) -> None:
    sm = fake.stub("sagemaker")
    if notebook:
        sm.add_response(
            "describe_notebook_instance",
            {"NotebookInstanceName": NAMES.notebook, "NotebookInstanceStatus": "Stopped"},
            {"NotebookInstanceName": NAMES.notebook},
        )
    sm.add_response(
        "describe_endpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT}",
            "EndpointConfigName": "config-1",
            "EndpointStatus": "InService",
            "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
            "LastModifiedTime": datetime(2026, 1, 1, tzinfo=UTC),
            "ProductionVariants": [
                {"VariantName": "AllTraffic", "CurrentInstanceCount": current, "DesiredInstanceCount": desired}
            ],
        },
        {"EndpointName": ENDPOINT},
    )


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


def test_status_shows_the_whole_system(fake, bucket, trained, run_cli):
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
    assert f"  model handed off ({NAMES.model_parameter}): s3://bucket/models/run-7/output/model.tar.gz" in out
    assert f"Notebook {NAMES.notebook}: Stopped" in out
    assert f"Endpoint {ENDPOINT}: InService" in out
    assert "  variant AllTraffic: 2 instance(s), scaling to 3; autoscaling 1 to 3" in out
    assert (
        "  invocations per minute, last 15 min: average 7.0, peak 60, total 105 (minutes with calls: 30 60 0 15)"
    ) in out
    assert f"Lambda {NAMES.lambda_function}: reserved concurrency 10" in out
    assert "  alias live: provisioned concurrency READY, 1 of 1 allocated" in out


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
