"""The IAM security gate over every synthesized template (besides cdk-nag's AwsSolutions pack).

Fails on an Allow of "*" or "service:*", on Resource "*" for an action that supports resource-level
permissions, and on a managed *FullAccess policy. The exceptions are in tests/security_exceptions.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import arn_text, as_list, refs, resources
from tests.security_exceptions import WILDCARD_ACTION_STATEMENTS, WILDCARD_RESOURCE_ACTIONS

POLICY_DOCUMENTS = {
    "AWS::IAM::Policy": ("PolicyDocument",),
    "AWS::IAM::ManagedPolicy": ("PolicyDocument",),
    "AWS::S3::BucketPolicy": ("PolicyDocument",),
    "AWS::KMS::Key": ("KeyPolicy",),
    "AWS::EC2::VPCEndpoint": ("PolicyDocument",),
}


def policy_documents(template: dict) -> Iterator[tuple[str, str, dict]]:
    """(logical ID, resource type, document) for every IAM policy document in the template."""
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        for key in POLICY_DOCUMENTS.get(resource["Type"], ()):
            if key in props:
                yield logical_id, resource["Type"], props[key]
        if resource["Type"] == "AWS::IAM::Role":
            for inline in props.get("Policies", []):
                yield logical_id, resource["Type"], inline["PolicyDocument"]


def violations(template: dict) -> list[str]:
    found = []
    for logical_id, type_, document in policy_documents(template):
        for statement in as_list(document.get("Statement", [])):
            if statement.get("Effect") != "Allow":
                continue  # a Deny restricts; wildcards there only widen the restriction
            actions = as_list(statement.get("Action", []))
            for action in actions:
                if (action == "*" or action.endswith(":*")) and (type_, action) not in WILDCARD_ACTION_STATEMENTS:
                    found.append(f"{logical_id}: Allow {action}")
            if "*" in as_list(statement.get("Resource", [])):
                for action in actions:
                    allowed = action in WILDCARD_RESOURCE_ACTIONS or (type_, action) in WILDCARD_ACTION_STATEMENTS
                    if not allowed:
                        found.append(f'{logical_id}: {action} on Resource "*"')
    for logical_id, resource in template.get("Resources", {}).items():
        for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
            if "FullAccess" in arn_text(arn):
                found.append(f"{logical_id}: managed policy {arn_text(arn)}")
    return found


def test_no_template_has_a_wildcard_or_full_access_violation(assembly):
    problems = {name: violations(template) for name, template in assembly.templates()}
    assert len(problems) == 6
    assert {name: p for name, p in problems.items() if p} == {}


def test_no_role_has_any_managed_policy(assembly):
    for name, template in assembly.templates():
        for logical_id, role in resources(template, "AWS::IAM::Role").items():
            assert "ManagedPolicyArns" not in role["Properties"], f"{name}/{logical_id}"


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Action": "*", "Resource": "arn:aws:s3:::b"}, ["P: Allow *"]),
        ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b"}, ["P: Allow s3:*"]),
        ({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "*"}, ['P: s3:GetObject on Resource "*"']),
        ({"Effect": "Allow", "Action": "ec2:DescribeSubnets", "Resource": "*"}, []),
        ({"Effect": "Deny", "Action": "s3:*", "Resource": "*"}, []),
    ],
)
def test_gate_flags_each_kind_of_violation(statement: dict[str, Any], expected: list[str]):
    template = {
        "Resources": {"P": {"Type": "AWS::IAM::Policy", "Properties": {"PolicyDocument": {"Statement": [statement]}}}}
    }
    assert violations(template) == expected


def test_gate_flags_a_managed_full_access_policy():
    template = {
        "Resources": {
            "R": {
                "Type": "AWS::IAM::Role",
                "Properties": {"ManagedPolicyArns": ["arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"]},
            }
        }
    }
    assert violations(template) == ["R: managed policy arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"]


def test_lambda_role_can_do_exactly_invoke_logs_networking_and_tracing(assembly):
    template = assembly.template("invoker")
    (function,) = resources(template, "AWS::Lambda::Function").values()
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    granted = set()
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} not in policy["Properties"]["Roles"]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    granted.add((action, _shape(resource, template)))
    subnets = {"subnet:<private subnet>"}
    assert granted == {
        ("sagemaker:InvokeEndpoint", "endpoint/dog-breed-classifier"),
        ("logs:CreateLogStream", "own log group"),
        ("logs:PutLogEvents", "own log group"),
        *(("ec2:CreateNetworkInterface", r) for r in (*subnets, "security-group:<function>", "network-interface/*")),
        ("ec2:DeleteNetworkInterface", "network-interface/*"),
        ("ec2:AssignPrivateIpAddresses", "network-interface/*"),
        ("ec2:UnassignPrivateIpAddresses", "network-interface/*"),
        ("ec2:DescribeNetworkInterfaces", "*"),
        ("ec2:DescribeSubnets", "*"),
        ("xray:PutTraceSegments", "*"),
        ("xray:PutTelemetryRecords", "*"),
    }


def _shape(resource: Any, template: dict) -> str:
    """A resource reduced to what the assertion is about."""
    text = arn_text(resource)
    if text == "*":
        return "*"
    if refs(resource) & set(resources(template, "AWS::Logs::LogGroup")):
        return "own log group"
    if text.endswith("endpoint/dog-breed-classifier"):
        return "endpoint/dog-breed-classifier"
    if ":subnet/" in text:
        assert "privateSubnet" in str(resource), text
        return "subnet:<private subnet>"
    if ":security-group/" in text:
        return "security-group:<function>"
    return text.rsplit(":", 1)[-1]
