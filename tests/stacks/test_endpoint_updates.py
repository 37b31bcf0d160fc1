"""A newly approved model reaches the endpoint with a plain `cdk deploy <project>-endpoint`, without --force.

The mechanism: the endpoint's model is created from the package whose ARN an SSM-typed CloudFormation
parameter reads (dogbreeds_stacks.endpoint.served_package). Two halves make an approval reach the endpoint:

- the CDK CLI must not skip the deploy although the template is unchanged: the pinned CLI never skips a
  stack with an SSM-typed parameter whose description lacks its "[cdk:skip]" marker (``hasChanges``
  answers "ssm", and ``canSkipDeploy`` then deploys);
- CloudFormation must see the new value: it reads SSM-typed parameters again for every change set, and
  replaces the model that refers to the parameter, hence the endpoint config, and updates the endpoint.

The first half is run, not read: the pinned CLI deploys a probe app built with the endpoint stack's own
``served_package`` three times to moto's server (tests/stacks/cloudformation_server.py says which of
CloudFormation's documented rules it restores in moto): a deploy with nothing changed creates a change
set and reports no changes; after an approval, a plain deploy serves the new package; a stack whose
parameter carries the marker is skipped and keeps serving the old one (what --force was for). The
second half is read from the synthesized endpoint template with CloudFormation's own resource schemas
(as cfn-lint ships them): which property changes replace a resource and which update it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from pathlib import Path

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import aws_sagemaker as sagemaker
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from dogbreeds_stacks.contract import model_environment
from dogbreeds_stacks.endpoint import PACKAGE_PARAMETER, served_package
from tests.helpers import one, refs
from tests.stacks.cloudformation_server import cloudformation_server

ROOT = Path(__file__).resolve().parents[2]
CDK_CLI = ROOT / "node_modules" / "aws-cdk" / "bin" / "cdk"
CDK_CLI_BUNDLE = ROOT / "node_modules" / "aws-cdk" / "lib" / "index.js"
REGION = "us-east-1"
PROBE, SKIPPED = "probe-endpoint", "probe-skipped"
SSM_TYPE = "AWS::SSM::Parameter::Value<String>"
# moto's server accepts any credentials; these never leave loopback.
FAKE_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@functools.cache
def skip_marker() -> str:
    """The description marker that makes the pinned CLI ignore an SSM-typed parameter, read from the CLI."""
    bundle = CDK_CLI_BUNDLE.read_text()
    (marker,) = set(re.findall(r'SSMPARAM_NO_INVALIDATE = "([^"]+)";', bundle))
    # The one place the CLI decides with it: an SSM-typed parameter without the marker means "ssm" changes.
    decision = r'\.Type\.startsWith\("AWS::SSM::Parameter::"\) && !\w+\.Description\?\.includes\([\w.]+\)'
    assert len(re.findall(decision, bundle)) == 1, "the pinned CLI no longer decides as this test expects"
    assert 'parameterChanges === "ssm"' in bundle
    return marker


@pytest.fixture(scope="module")
def endpoint(assembly) -> dict:
    return assembly.template("endpoint")


# --- the CLI half, from the template -----------------------------------------------------------


def test_the_package_parameter_is_ssm_typed_and_never_skipped_by_the_cli(endpoint, settings):
    parameter = endpoint["Parameters"][PACKAGE_PARAMETER]
    assert parameter["Type"] == SSM_TYPE
    assert parameter["Default"] == settings.names.approved_package_parameter == "/dogbreeds/model/approved-package"
    assert skip_marker() == "[cdk:skip]"
    assert skip_marker() not in parameter["Description"]
    # The bootstrap version parameter carries the marker: the package parameter alone makes every deploy run.
    never_skipped = [
        name
        for name, p in endpoint["Parameters"].items()
        if p["Type"].startswith("AWS::SSM::Parameter::") and skip_marker() not in p.get("Description", "")
    ]
    assert never_skipped == [PACKAGE_PARAMETER]


# --- the CloudFormation half, from the template and CloudFormation's resource schemas -----------


def create_only(resource_type: str) -> set[str]:
    """The top-level properties of ``resource_type`` whose change replaces the resource."""
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, resource_type).schema
    return {path.split("/")[2] for path in schema.get("createOnlyProperties", [])}


def changed_by(template: dict, parameter: str) -> dict[str, str]:
    """What a new value of ``parameter`` does to each resource: "replace" (a create-only property refers to
    something that changed, so the resource gets a new physical name) or "update" (in place). A replaced
    resource changes everything that refers to it in turn; an updated one keeps its name."""
    changed, actions = {parameter}, {}
    while True:
        before = dict(actions)
        for logical_id, resource in template["Resources"].items():
            touched = {key for key, value in resource.get("Properties", {}).items() if refs(value) & changed}
            if touched:
                replaced = bool(touched & create_only(resource["Type"])) or actions.get(logical_id) == "replace"
                actions[logical_id] = "replace" if replaced else "update"
                if replaced:
                    changed.add(logical_id)
        if actions == before:
            return actions


def test_an_approval_replaces_model_and_config_and_updates_the_same_endpoint(endpoint):
    model_id, _ = one(endpoint, "AWS::SageMaker::Model")
    config_id, _ = one(endpoint, "AWS::SageMaker::EndpointConfig")
    endpoint_id, resource = one(endpoint, "AWS::SageMaker::Endpoint")
    assert changed_by(endpoint, PACKAGE_PARAMETER) == {model_id: "replace", config_id: "replace", endpoint_id: "update"}
    # Updated in place: same name (alarms, autoscaling and the invoker's permission stay valid), rolled out
    # blue/green with the alarms' rollback; the outputs name the new package and config.
    assert "EndpointName" in resource["Properties"] and "EndpointName" in create_only("AWS::SageMaker::Endpoint")
    assert "BlueGreenUpdatePolicy" in resource["Properties"]["DeploymentConfig"]
    outputs = {name for name, output in endpoint["Outputs"].items() if refs(output) & {PACKAGE_PARAMETER, config_id}}
    assert outputs == {"ModelPackageArn", "EndpointConfigName"}


def test_changed_by_follows_create_only_properties():
    template = {
        "Resources": {
            "A": {"Type": "AWS::SageMaker::Model", "Properties": {"PrimaryContainer": {"Ref": "P"}}},
            "B": {"Type": "AWS::SageMaker::Endpoint", "Properties": {"EndpointConfigName": {"Ref": "P"}}},
            "C": {"Type": "AWS::SageMaker::Endpoint", "Properties": {"EndpointName": {"Fn::GetAtt": ["A", "X"]}}},
            "D": {"Type": "AWS::SageMaker::Endpoint", "Properties": {"EndpointConfigName": {"Ref": "B"}}},
        }
    }
    assert changed_by(template, "P") == {"A": "replace", "B": "update", "C": "replace"}


# --- the CLI half, run: the pinned CDK CLI against moto's server --------------------------------


@pytest.fixture(scope="module")
def probe(tmp_path_factory, settings) -> Path:
    """Two stacks whose model comes from ``served_package``, as the endpoint stack's does; the second one's
    parameter carries the CLI's skip marker. No assets and no bootstrap: nothing to publish."""
    outdir = tmp_path_factory.mktemp("probe.out")
    app = cdk.App(outdir=str(outdir), analytics_reporting=False)
    for name in (PROBE, SKIPPED):
        stack = cdk.Stack(app, name, synthesizer=cdk.BootstraplessSynthesizer(), analytics_reporting=False)
        package = served_package(stack, settings)
        if name == SKIPPED:
            parameter = stack.node.find_child(PACKAGE_PARAMETER)
            parameter.description = f"{parameter.description} {skip_marker()}"
        sagemaker.CfnModel(
            stack,
            "Model",
            execution_role_arn=stack.format_arn(service="iam", region="", resource="role", resource_name="probe"),
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                model_package_name=package, environment=model_environment(settings, cdk.Aws.REGION)
            ),
        )
        cdk.CfnOutput(stack, "ModelPackageArn", value=package)
    app.synth()
    return outdir


def cdk_deploy(assembly: Path, url: str, workdir: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """`cdk deploy` of both probe stacks, as a user runs it (no --force); its output and the stacks' outputs."""
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    outputs = workdir / "outputs.json"
    outputs.unlink(missing_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "AWS_ENDPOINT_URL": url,
        **{name.upper(): value for name, value in FAKE_KEYS.items()},
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "CDK_DISABLE_VERSION_CHECK": "1",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "FORCE_COLOR": "0",
    }
    command = ["node", str(CDK_CLI), "deploy", PROBE, SKIPPED, "--app", str(assembly)]
    command += ["--require-approval", "never", "--no-notices", "--outputs-file", str(outputs)]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    return log, json.loads(outputs.read_text())


def ran_a_change_set(log: str, stack: str) -> bool:
    return f"{stack}: creating CloudFormation changeset..." in log


def reported_no_changes(log: str, stack: str) -> bool:
    return re.search(rf"✅\s+{re.escape(stack)} \(no changes\)", log) is not None


def test_a_plain_cdk_deploy_serves_a_newly_approved_package(probe, settings, tmp_path):
    with cloudformation_server() as url:
        client = functools.partial(boto3.client, endpoint_url=url, region_name=REGION, **FAKE_KEYS)
        registry, ssm, cloudformation = client("sagemaker"), client("ssm"), client("cloudformation")
        group = settings.names.model_package_group
        registry.create_model_package_group(ModelPackageGroupName=group)

        def register_and_approve() -> str:
            """A trained model registered, approved, and the approval recorded (what the training stack does)."""
            arn = registry.create_model_package(
                ModelPackageGroupName=group,
                InferenceSpecification={
                    "Containers": [{"Image": "pytorch-inference:2.6.0-gpu-py312", "ModelDataUrl": "s3://b/m.tar.gz"}],
                    "SupportedContentTypes": ["application/x-image"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
                ModelApprovalStatus="PendingManualApproval",
            )["ModelPackageArn"]
            registry.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
            ssm.put_parameter(Name=settings.names.approved_package_parameter, Value=arn, Type="String", Overwrite=True)
            return arn

        first = register_and_approve()
        log, outputs = cdk_deploy(probe, url, tmp_path)
        assert outputs[PROBE]["ModelPackageArn"] == outputs[SKIPPED]["ModelPackageArn"] == first, log

        # Nothing changed: the CLI still asks CloudFormation (a change set), which finds nothing to do.
        log, outputs = cdk_deploy(probe, url, tmp_path)
        assert ran_a_change_set(log, PROBE) and reported_no_changes(log, PROBE), log
        assert outputs[PROBE]["ModelPackageArn"] == first
        assert not ran_a_change_set(log, SKIPPED) and reported_no_changes(log, SKIPPED), log

        second = register_and_approve()
        assert second.endswith(f"model-package/{group}/2") and first.endswith(f"model-package/{group}/1")
        log, outputs = cdk_deploy(probe, url, tmp_path)
        # The plain deploy serves the new package: a new model, made from it, and the output names it.
        assert ran_a_change_set(log, PROBE) and not reported_no_changes(log, PROBE), log
        assert outputs[PROBE]["ModelPackageArn"] == second
        (stack,) = cloudformation.describe_stacks(StackName=PROBE)["Stacks"]
        assert stack["StackStatus"] == "UPDATE_COMPLETE"
        (parameter,) = stack["Parameters"]
        assert parameter["ParameterValue"] == settings.names.approved_package_parameter
        assert parameter["ResolvedValue"] == second
        resources = cloudformation.describe_stack_resources(StackName=PROBE, LogicalResourceId="Model")
        (model,) = resources["StackResources"]
        served = registry.describe_model(ModelName=model["PhysicalResourceId"].rsplit("/", 1)[1])
        assert served["PrimaryContainer"]["ModelPackageName"] == second
        # The control: with the marker, the CLI skips the stack without asking CloudFormation, and the old
        # package stays served: what `--force` was needed for.
        assert not ran_a_change_set(log, SKIPPED) and reported_no_changes(log, SKIPPED), log
        assert outputs[SKIPPED]["ModelPackageArn"] == first
