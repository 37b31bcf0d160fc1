"""dogbreeds_stacks/constructs/iam.py: a wildcard is written once, beside its reason, which becomes the cdk-nag
acknowledgment; a wildcard without a reason, a reason without a wildcard and a wildcard action are refused."""

from __future__ import annotations

import json

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam

from dogbreeds_stacks.constructs.iam import Permissions
from dogbreeds_stacks.nag import AUDIT_CONTEXT_KEY


def _permissions(audit: bool = False) -> tuple[Stack, Permissions]:
    stack = Stack(App(context={AUDIT_CONTEXT_KEY: True} if audit else {}), "S")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    return stack, Permissions(stack, "Policy", role=role)


def test_a_wildcard_resource_needs_its_reason():
    _, p = _permissions()
    with pytest.raises(ValueError, match=r"Logs: the wildcard resource\(s\) .* need their reason"):
        p.allow("Logs", ["logs:PutLogEvents"], [p.arn("logs", "log-group", "/x:*", separator=":")])


def test_a_reason_without_a_wildcard_is_refused():
    _, p = _permissions()
    with pytest.raises(ValueError, match="a wildcard reason is given, but no resource of the statement has a wildcard"):
        p.allow(
            "Stop", ["sagemaker:StopNotebookInstance"], [p.arn("sagemaker", "notebook-instance", "nb")], wildcard="x"
        )


def test_a_wildcard_action_is_never_granted():
    _, p = _permissions()
    with pytest.raises(ValueError, match="name each action"):
        p.allow("All", ["s3:Get*"], ["arn:aws:s3:::bucket/key"])


def test_the_reason_becomes_the_acknowledgment_of_that_finding_on_that_policy():
    stack, p = _permissions(audit=True)
    reason = "each job writes its own log streams in the log group, named after the job"
    p.allow("Logs", ["logs:PutLogEvents"], [p.arn("logs", "log-group", "/aws/x:*", separator=":")], wildcard=reason)
    recorded = [entry.data for entry in p.policy.node.metadata if entry.type == "dogbreeds:nag-audit"]
    assert recorded == [
        {
            "rule": "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
            "log-group:/aws/x:*]",
            "reason": reason,
        }
    ]
    (statement,) = stack.resolve(p.policy.document.to_json())["Statement"]
    assert statement["Sid"] == "Logs" and "/aws/x:*" in json.dumps(statement["Resource"])
