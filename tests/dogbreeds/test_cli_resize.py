"""resize-endpoint: autoscaling in moto, the endpoint in a Stubber, the deploy step faked.

SageMaker refuses an instance-type change on a variant registered with Application Auto Scaling and
CloudFormation cannot deregister it, so the command deregisters, deploys, and registers again; each
test checks one of its paths, including a second run after an interruption at each step.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest

from dogbreeds import cli
from dogbreeds.ops import resize
from dogbreeds.ops.errors import EXIT_FAILED, EXIT_NOT_DEPLOYED, EXIT_USAGE
from tests.dogbreeds.fakes import ACCOUNT, NAMES, REGION

ENDPOINT = NAMES.endpoint
RESOURCE_ID = f"endpoint/{ENDPOINT}/variant/AllTraffic"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
POLICY = "dogbreedsendpointScalableTargetInvocationsPerInstance20FEF3FB"
OLD, NEW = "ml.g4dn.xlarge", "ml.g5.xlarge"
STACK = NAMES.stack("endpoint")
DEPLOY = ["npx", "cdk", "deploy", STACK, "-c", f"endpoint_instance_type={NEW}"]


@pytest.fixture
def deployed(fake):
    """The endpoint stack's outputs, and the registration CloudFormation made (moto)."""
    fake.stacks.stacks[STACK].update(ScalableTargetResourceId=RESOURCE_ID, ScalingPolicyName=POLICY)
    register_as_cloudformation_did()
    return fake


def autoscaling():
    return boto3.client("application-autoscaling", region_name=REGION)


def register_as_cloudformation_did() -> None:
    client = autoscaling()
    client.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=RESOURCE_ID, ScalableDimension=DIMENSION, MinCapacity=1, MaxCapacity=3
    )
    client.put_scaling_policy(
        PolicyName=POLICY,
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE_ID,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 70.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 60,
            "ScaleOutCooldown": 60,
        },
    )


def registration() -> tuple[list[dict], list[dict]]:
    """What Application Auto Scaling has for the variant: its scalable targets and scaling policies."""
    client = autoscaling()
    targets = client.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[RESOURCE_ID])
    policies = client.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=RESOURCE_ID)
    return targets["ScalableTargets"], policies["ScalingPolicies"]


def stub_endpoint(fake, instance_type: str, *, status: str = "InService", config: str = "config-1") -> None:
    """One DescribeEndpoint, and (when in service) the DescribeEndpointConfig that follows it."""
    sm = fake.stub("sagemaker")
    description = {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{ENDPOINT}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        "LastModifiedTime": datetime(2026, 1, 1, tzinfo=UTC),
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": 2, "DesiredInstanceCount": 2}],
    }
    if status == "Failed":
        description["FailureReason"] = "the model container did not pass the ping health check"
    sm.add_response("describe_endpoint", description, {"EndpointName": ENDPOINT})
    if status != "InService":
        return
    sm.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": config,
            "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{config}",
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "model", "InstanceType": instance_type}],
            "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        },
        {"EndpointConfigName": config},
    )


class FakeDeploy:
    """Stands in for `npx cdk deploy`: records the command, checks autoscaling is off, 'changes' the endpoint."""

    def __init__(self, fake, *, returncode: int = 0, serves_after: str = NEW) -> None:
        self.fake = fake
        self.returncode = returncode
        self.serves_after = serves_after
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, words: list[str], env: dict[str, str]) -> int:
        self.calls.append((words, env))
        assert registration() == ([], []), "the deploy runs only once the variant is deregistered"
        stub_endpoint(self.fake, self.serves_after, config="config-2")
        return self.returncode


@pytest.fixture
def no_sleep(monkeypatch):
    waited: list[float] = []
    monkeypatch.setattr(resize, "sleep", waited.append)
    return waited


def assert_registered_as_the_settings_say() -> None:
    targets, policies = registration()
    (target,) = targets
    assert (target["MinCapacity"], target["MaxCapacity"], target["ScalableDimension"]) == (1, 3, DIMENSION)
    (policy,) = policies
    assert policy["PolicyName"] == POLICY and policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 70.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        "ScaleInCooldown": 60,
        "ScaleOutCooldown": 60,
    }


def test_resize_deregisters_deploys_and_registers_again(deployed, monkeypatch, no_sleep, run_cli):
    stub_endpoint(deployed, OLD)
    deploy = FakeDeploy(deployed)
    monkeypatch.setattr(resize, "run_deploy", deploy)

    result = run_cli("resize-endpoint", "--instance-type", NEW)

    assert result.code == 0, result.err
    ((words, env),) = deploy.calls
    assert words == DEPLOY
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == REGION, "the deploy goes to the same region"
    assert_registered_as_the_settings_say()
    deployed.assert_stubs_used()
    out = result.out
    # It says what it does, before and while doing it.
    assert f"Resize endpoint {ENDPOINT} (variant AllTraffic) from {OLD} to {NEW}" in out
    assert "SageMaker refuses an instance-type change" in out
    for step in ("1. ", "2. ", "3. "):
        assert step in out
    assert f"deleted scaling policy {POLICY}" in out
    assert f"deregistered {RESOURCE_ID}" in out
    assert f"npx cdk deploy {STACK} -c endpoint_instance_type={NEW}" in out
    assert f"registered {RESOURCE_ID}: 1 to 3 instances" in out
    assert f"scaling policy {POLICY}: 70 invocations per instance" in out
    # -c given to one deploy is undone by the next one without it: the command says so.
    assert f"set endpoint_instance_type to {NEW} in cdk.json" in out
    assert no_sleep == []


def test_second_run_after_an_interruption_once_deregistered(deployed, monkeypatch, no_sleep, run_cli):
    """Interrupted between the deregistration and the deploy: nothing left to deregister, the rest runs."""
    autoscaling().deregister_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=RESOURCE_ID, ScalableDimension=DIMENSION
    )
    autoscaling().delete_scaling_policy(
        PolicyName=POLICY, ServiceNamespace="sagemaker", ResourceId=RESOURCE_ID, ScalableDimension=DIMENSION
    )
    stub_endpoint(deployed, OLD)
    deploy = FakeDeploy(deployed)
    monkeypatch.setattr(resize, "run_deploy", deploy)

    result = run_cli("resize-endpoint", "--instance-type", NEW)

    assert result.code == 0, result.err
    assert "not registered with autoscaling (an earlier run got this far)" in result.out
    assert [words for words, _ in deploy.calls] == [DEPLOY]
    assert_registered_as_the_settings_say()


def test_second_run_after_an_interrupted_deploy_waits_then_only_registers(deployed, monkeypatch, no_sleep, run_cli):
    """Interrupted during the deploy: CloudFormation goes on; the next run waits for it and registers."""
    autoscaling().deregister_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=RESOURCE_ID, ScalableDimension=DIMENSION
    )
    autoscaling().delete_scaling_policy(
        PolicyName=POLICY, ServiceNamespace="sagemaker", ResourceId=RESOURCE_ID, ScalableDimension=DIMENSION
    )
    stub_endpoint(deployed, NEW, status="Updating")
    stub_endpoint(deployed, NEW, status="Updating")
    stub_endpoint(deployed, NEW, config="config-2")
    deploy = FakeDeploy(deployed)
    monkeypatch.setattr(resize, "run_deploy", deploy)

    result = run_cli("resize-endpoint", "--instance-type", NEW)

    assert result.code == 0, result.err
    assert deploy.calls == [], "the endpoint already serves on the new type"
    assert no_sleep == [resize.POLL_SECONDS, resize.POLL_SECONDS]
    assert "waiting for the endpoint (Updating)" in result.out
    assert f"already on {NEW}" in result.out
    assert_registered_as_the_settings_say()
    deployed.assert_stubs_used()


def test_without_a_size_change_it_only_makes_sure_autoscaling_is_registered(deployed, monkeypatch, run_cli):
    stub_endpoint(deployed, OLD)
    monkeypatch.setattr(resize, "run_deploy", FakeDeploy(deployed))

    result = run_cli("resize-endpoint")  # the instance type comes from the settings: cdk.json's

    assert result.code == 0, result.err
    assert f"already on {OLD}" in result.out and "deregistered" not in result.out
    assert "cdk.json" not in result.out, "nothing to remind: the settings already say so"
    assert_registered_as_the_settings_say()


def test_the_instance_type_can_come_from_a_setting_override(deployed, monkeypatch, run_cli):
    stub_endpoint(deployed, OLD)
    deploy = FakeDeploy(deployed)
    monkeypatch.setattr(resize, "run_deploy", deploy)

    result = run_cli("-c", f"endpoint_instance_type={NEW}", "resize-endpoint")

    assert result.code == 0, result.err
    assert [words for words, _ in deploy.calls] == [DEPLOY], "the run's -c goes to the deploy, once"


def test_a_failed_deploy_restores_autoscaling_on_the_type_still_served(deployed, monkeypatch, run_cli):
    stub_endpoint(deployed, OLD)
    monkeypatch.setattr(resize, "run_deploy", FakeDeploy(deployed, returncode=1, serves_after=OLD))

    result = run_cli("resize-endpoint", "--instance-type", NEW)

    assert result.code == EXIT_FAILED
    assert result.err == (
        f"error: the deploy failed (exit code 1); the endpoint serves on {OLD}, and autoscaling is registered "
        "again on it. The stack's events (CloudFormation console, or `aws cloudformation describe-stack-events "
        f"--stack-name {STACK}`) say what failed; fix it and run dogbreeds resize-endpoint again.\n"
    )
    assert_registered_as_the_settings_say()


def test_no_npx_restores_autoscaling_and_says_what_to_run(deployed, monkeypatch, run_cli):
    stub_endpoint(deployed, OLD)
    stub_endpoint(deployed, OLD)

    def missing(words, env):
        raise FileNotFoundError(2, "No such file or directory", "npx")

    monkeypatch.setattr(resize, "run_deploy", missing)
    result = run_cli("resize-endpoint", "--instance-type", NEW)

    assert result.code == EXIT_FAILED
    assert "could not run npx" in result.err and "--no-deploy" in result.err
    assert_registered_as_the_settings_say()


def test_no_deploy_deregisters_and_prints_the_deploy_to_run(deployed, monkeypatch, run_cli):
    stub_endpoint(deployed, OLD)
    deploy = FakeDeploy(deployed)
    monkeypatch.setattr(resize, "run_deploy", deploy)

    result = run_cli("resize-endpoint", "--instance-type", NEW, "--no-deploy")

    assert result.code == 0, result.err
    assert deploy.calls == []
    assert registration() == ([], [])
    assert (f"Now deploy: AWS_REGION=eu-west-1 npx cdk deploy {STACK} -c endpoint_instance_type={NEW}") in result.out
    assert "then run dogbreeds resize-endpoint again" in result.out


def test_a_failed_endpoint_is_not_touched(deployed, monkeypatch, run_cli):
    stub_endpoint(deployed, OLD, status="Failed")
    monkeypatch.setattr(resize, "run_deploy", FakeDeploy(deployed))

    result = run_cli("resize-endpoint", "--instance-type", NEW)

    assert result.code == EXIT_FAILED
    assert result.err == (
        f"error: the endpoint {ENDPOINT} is Failed (the model container did not pass the ping health check): "
        "nothing was changed; deploy the endpoint stack to repair it first.\n"
    )
    assert len(registration()[0]) == 1, "autoscaling left as it was"


def test_an_instance_type_that_is_not_one_is_a_usage_error(deployed, run_cli):
    result = run_cli("resize-endpoint", "--instance-type", "g5.xlarge")
    assert result.code == EXIT_USAGE
    assert result.err == (
        "error: --instance-type g5.xlarge: accepted is a SageMaker instance type, for example ml.g5.xlarge\n"
    )


def test_an_endpoint_stack_without_the_outputs_says_to_deploy_it(fake, run_cli):
    result = run_cli("resize-endpoint", "--instance-type", NEW)
    assert result.code == EXIT_NOT_DEPLOYED
    assert "has no output ScalableTargetResourceId" in result.err


def test_help_says_what_it_does(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["resize-endpoint", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "SageMaker refuses an UpdateEndpoint that changes the instance type" in text
    assert "--instance-type" in text and "--no-deploy" in text
    assert "running the command again picks up where it stopped" in text


def test_the_registration_matches_the_stack(deployed, monkeypatch, assembly, run_cli):
    """The command's names and values are the synthesized endpoint stack's, so CloudFormation's resources
    keep describing what exists after the command registered the variant again."""
    from tests.helpers import one

    template = assembly.template("endpoint")
    _, target = one(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    _, policy = one(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    outputs = {key: value["Value"] for key, value in template["Outputs"].items()}
    deployed.stacks.stacks[STACK].update(
        ScalableTargetResourceId=outputs["ScalableTargetResourceId"], ScalingPolicyName=outputs["ScalingPolicyName"]
    )
    stub_endpoint(deployed, OLD)
    monkeypatch.setattr(resize, "run_deploy", FakeDeploy(deployed))

    assert run_cli("resize-endpoint", "--instance-type", NEW).code == 0

    (registered,) = registration()[0]
    for key in ("ResourceId", "ScalableDimension", "ServiceNamespace", "MinCapacity", "MaxCapacity"):
        assert registered[key] == target["Properties"][key], key
    (put,) = registration()[1]
    assert put["PolicyName"] == policy["Properties"]["PolicyName"]
    assert put["PolicyType"] == policy["Properties"]["PolicyType"]
    assert (
        put["TargetTrackingScalingPolicyConfiguration"]
        == policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    )


def test_a_move_to_a_cpu_type_registers_that_types_derived_target(deployed, monkeypatch, no_sleep, run_cli):
    """endpoint_target_invocations_per_instance=0: the deploy derives the target for the new type, and so does the
    registration after it (4 vCPUs / 0.144 s x 60 x 0.5 on ml.c7i.xlarge)."""
    stub_endpoint(deployed, OLD)
    deploy = FakeDeploy(deployed, serves_after="ml.c7i.xlarge")
    monkeypatch.setattr(resize, "run_deploy", deploy)

    result = run_cli("resize-endpoint", "--instance-type", "ml.c7i.xlarge")

    assert result.code == 0, result.err
    (policy,) = registration()[1]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 833.0


def test_a_type_without_a_pytorch_image_is_a_usage_error(deployed, run_cli):
    result = run_cli("resize-endpoint", "--instance-type", "ml.c7g.xlarge")
    assert result.code == EXIT_USAGE
    assert result.err.startswith(
        "error: --instance-type ml.c7g.xlarge: the c7g family needs another serving image than the PyTorch "
        "inference container's x86_64 CPU and NVIDIA GPU builds"
    )
    assert result.err.endswith("; accepted is an NVIDIA GPU type (ml.g5.xlarge) or an x86 CPU type (ml.c7i.xlarge)\n")
