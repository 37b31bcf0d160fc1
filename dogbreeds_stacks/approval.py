"""What the endpoint serves follows approval: the latest Approved version of the model package group.

SageMaker sends a "SageMaker Model Package State Change" event to EventBridge whenever a version of the
group is registered, approved, rejected or otherwise changes. A rule on the group's events starts the
approval recorder, a small Express state machine that asks the registry for the newest Approved version
(``ListModelPackages``, Approved only, newest first, one result) and writes its ARN to an SSM parameter,
or ``NOT_APPROVED`` when no version is approved any more. The endpoint stack serves what that parameter
names on its next deploy.

The recorder reads the registry, never the event: whatever the order in which events arrive (or arrive
twice, as SageMaker allows), it records the registry as it is, for its own group only, and a Rejected or
Pending version can never be recorded, since the registry is asked for Approved versions alone. After each
write it asks again; when an approval changed in between (two executions at once), it writes again, so the
last write of all always matches the registry (a few rounds at most, then it fails loudly).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from dogbreeds_stacks.constructs.iam import Permissions, service_role
from dogbreeds_stacks.constructs.logs import log_retention
from dogbreeds_stacks.nag import acknowledge
from dogbreeds_stacks.settings import Settings

LIST_MODEL_PACKAGES = "arn:aws:states:::aws-sdk:sagemaker:listModelPackages"
SSM_PUT_PARAMETER = "arn:aws:states:::aws-sdk:ssm:putParameter"
EVENT_SOURCE = "aws.sagemaker"
EVENT_DETAIL_TYPE = "SageMaker Model Package State Change"
# Writes of one execution before it gives up on approvals that keep changing under it.
MAX_ROUNDS = 5


@dataclass(frozen=True)
class RecorderResources:
    """What the recorder's definition names (values may be CDK tokens)."""

    model_package_group: str
    parameter_name: str
    not_approved: str


def event_pattern(model_package_group: str) -> dict:
    """Every state change of a version of this group (approvals, rejections, registrations, deletions)."""
    return {
        "source": [EVENT_SOURCE],
        "detail-type": [EVENT_DETAIL_TYPE],
        "detail": {"ModelPackageGroupName": [model_package_group]},
    }


def recorder_definition(r: RecorderResources) -> dict:
    """The recorder's Amazon States Language definition (JSONata), as plain data."""
    summaries = "$states.result.ModelPackageSummaryList"
    if any(c in r.not_approved for c in "'\"\\"):
        raise ValueError(f"the not-approved value is written into a JSONata string literal: {r.not_approved!r}")
    none = f"'{r.not_approved}'"
    return {
        "Comment": "Record the newest Approved version of the model package group (or that none is) in SSM",
        "QueryLanguage": "JSONata",
        "StartAt": "Start",
        "States": {
            "Start": {
                "Type": "Pass",
                # Every variable a later state reads is assigned first (a plain null would vanish from the JSON).
                "Assign": {"recorded": "{% null %}", "rounds": 0},
                "Next": "Find latest approved",
            },
            "Find latest approved": {
                "Type": "Task",
                "Resource": LIST_MODEL_PACKAGES,
                "Comment": "Asks the registry, not the event: any order of events gives the same answer.",
                "Arguments": {
                    "ModelPackageGroupName": r.model_package_group,
                    "ModelApprovalStatus": "Approved",
                    "SortBy": "CreationTime",
                    "SortOrder": "Descending",
                    "MaxResults": 1,
                },
                "Assign": {
                    "latest": f"{{% $count({summaries}) > 0 ? {summaries}[0].ModelPackageArn : {none} %}}",
                },
                "Retry": _retry(),
                "Next": "Recorded?",
            },
            "Recorded?": {
                "Type": "Choice",
                "Comment": "Done when the last write of this execution still matches the registry.",
                "Choices": [
                    {"Condition": "{% $recorded = $latest %}", "Next": "Done"},
                    {"Condition": f"{{% $rounds >= {MAX_ROUNDS} %}}", "Next": "Approvals kept changing"},
                ],
                "Default": "Record",
            },
            "Record": {
                "Type": "Task",
                "Resource": SSM_PUT_PARAMETER,
                "Arguments": {
                    "Name": r.parameter_name,
                    "Value": "{% $latest %}",
                    "Type": "String",
                    "Overwrite": True,
                },
                "Assign": {"recorded": "{% $latest %}", "rounds": "{% $rounds + 1 %}"},
                "Retry": _retry(),
                "Next": "Find latest approved",
            },
            "Approvals kept changing": {
                "Type": "Fail",
                "Error": "ApprovalsKeptChanging",
                "Cause": (
                    f"{{% 'The approved versions of the group changed during each of {MAX_ROUNDS} writes; the "
                    "parameter holds ' & $recorded & '; the next state change of the group records the registry "
                    "again.' %}"
                ),
            },
            "Done": {
                "Type": "Succeed",
                "Output": "{% {'approved_package': $recorded, 'rounds': $rounds} %}",
            },
        },
    }


def _retry() -> list[dict]:
    return [
        {
            "ErrorEquals": ["States.TaskFailed"],
            "IntervalSeconds": 1,
            "MaxAttempts": 4,
            "BackoffRate": 2.0,
            "JitterStrategy": "FULL",
        }
    ]


class ApprovalRecorder(Construct):
    """The EventBridge rule on the group's state changes and the Express state machine it starts."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        resources: RecorderResources,
        parameter_arn: str,
    ) -> None:
        super().__init__(scope, construct_id)
        s, r = settings, resources
        role = service_role(
            self,
            "Role",
            service="states",
            description="The approval recorder: reads the group's approved versions, writes one SSM parameter",
        )
        p = Permissions(self, "Policy", role=role)
        p.allow(
            "ListApprovedVersions",
            ["sagemaker:ListModelPackages"],
            [
                p.arn("sagemaker", "model-package-group", r.model_package_group),
                p.arn("sagemaker", "model-package", f"{r.model_package_group}/*"),
            ],
            wildcard="the versions of the group are numbered by SageMaker as they are registered; the statement "
            "is limited to this group's versions",
        )
        p.allow("RecordApprovedVersion", ["ssm:PutParameter"], [parameter_arn])
        log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/vendedlogs/states/{s.names.approval_recorder}",
            retention=log_retention(s),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=s.names.approval_recorder,
            state_machine_type=sfn.StateMachineType.EXPRESS,
            definition_body=sfn.DefinitionBody.from_string(Stack.of(self).to_json_string(recorder_definition(r))),
            role=role,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
            tracing_enabled=True,
            timeout=Duration.minutes(5),
        )
        acknowledge(
            role.node.find_child("DefaultPolicy"),
            "AwsSolutions-IAM5[Resource::*]",
            "log delivery (logs:CreateLogDelivery and related) and X-Ray (xray:PutTraceSegments and related) "
            "support no resource-level permissions; these are the statements Step Functions documents",
        )
        self.rule = events.Rule(
            self,
            "OnApprovalChange",
            description=f"State changes of the versions of {r.model_package_group}: record the latest approved one",
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE],
                detail_type=[EVENT_DETAIL_TYPE],
                detail=event_pattern(r.model_package_group)["detail"],
            ),
            targets=[targets.SfnStateMachine(self.state_machine, retry_attempts=10, max_event_age=Duration.hours(6))],
        )
