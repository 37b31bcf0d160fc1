"""Approval drives serving: the EventBridge rule on the group's state changes (matched by moto's own
EventBridge pattern matching against events shaped like SageMaker's documented one), the approval recorder
run by LocalStack's interpreter in moto against moto's model registry and SSM, and the pipeline with
model_approval=auto, end to end."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from unittest import mock

import pytest
from moto.events.models import EventPattern
from moto.sagemaker.models import sagemaker_backends
from moto.ssm.models import SimpleSystemManagerBackend
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

from dogbreeds_stacks.approval import MAX_ROUNDS
from dogbreeds_stacks.contract import NOT_APPROVED
from tests.cfn_values import ACCOUNT, REGION, Deployment
from tests.helpers import one, policy_statements
from tests.stacks.stepfunctions_local import JobOutcome, LocalPipeline
from tests.stacks.test_training_pipeline import (
    deploy_registry,
    lint_with_definition_objects,
    quality_gate_failed,
    registered,
    stock,
    succeeded,
)
from tests.synth import synthesize

OTHER_GROUP = "someone-elses-models"


@pytest.fixture(scope="session")
def auto(tmp_path_factory):
    """The app synthesized with model_approval=auto (cdk-nag runs as part of it); once per worker."""
    return synthesize(tmp_path_factory.mktemp("cdk.out-auto"), model_approval="auto")


@pytest.fixture(scope="module")
def deployment(auto) -> Deployment:
    return Deployment.from_directory(auto.directory)


@pytest.fixture(scope="module")
def names(auto):
    return auto.settings.names


@pytest.fixture(scope="module")
def training(auto) -> dict:
    return auto.template("training")


@pytest.fixture
def local(deployment, auto, names):
    """A fresh moto account with the training stack's state machines, its model package group (and another
    group, someone else's), the approved-package parameter as deployed, and a complete data set."""
    with LocalPipeline(deployment, auto.settings.stack_name("training"), names.state_machine) as machines:
        deploy_registry(machines)
        machines.client("sagemaker").create_model_package_group(ModelPackageGroupName=OTHER_GROUP)
        stock(machines)
        yield machines


# --- a registry of hand-made versions, and the events SageMaker sends about them ---------------------------


def register(local: LocalPipeline, status: str, group: str) -> str:
    """A version of ``group`` registered directly (as a person or another tool may), returning its ARN."""
    return local.client("sagemaker").create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": "111122223333.dkr.ecr.us-east-1.amazonaws.com/x:1", "ModelDataUrl": "s3://b/m"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def set_status(local: LocalPipeline, arn: str, status: str) -> None:
    local.client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)


def state_change_event(local: LocalPipeline, arn: str) -> dict:
    """The "SageMaker Model Package State Change" event for the version as it is now, shaped like the example
    in SageMaker's developer guide (automating-sagemaker-with-eventbridge, "Model package state change")."""
    described = local.client("sagemaker").describe_model_package(ModelPackageName=arn)
    detail = {
        k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in described.items() if k != "ResponseMetadata"
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker",
        "account": local.deployment.account,
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": local.deployment.region,
        "resources": [arn],
        "detail": detail,
    }


def record(local: LocalPipeline, event: dict, names) -> str:
    """Run the recorder on ``event`` (EventBridge passes the event as the execution input); the parameter after."""
    result = local.run(event, machine=names.approval_recorder)
    assert result.status == "SUCCEEDED", (result.error, result.cause, result.states)
    assert local.invalid == [], "every SDK request must satisfy botocore's service model"
    value = local.client("ssm").get_parameter(Name=names.approved_package_parameter)["Parameter"]["Value"]
    assert result.output["approved_package"] == value
    return value


def truth(statuses: dict[str, str]) -> str:
    """What must be served: the newest Approved version (versions are numbered in creation order)."""
    approved = [arn for arn, status in statuses.items() if status == "Approved"]
    return max(approved, key=lambda arn: int(arn.rsplit("/", 1)[1])) if approved else NOT_APPROVED


def never_rejected(local: LocalPipeline, value: str) -> None:
    if value != NOT_APPROVED:
        status = local.client("sagemaker").describe_model_package(ModelPackageName=value)["ModelApprovalStatus"]
        assert status == "Approved", f"the parameter names {value}, which is {status}"


# --- the rule's event pattern, matched by moto's EventBridge -------------------------------------------------


@pytest.fixture(scope="module")
def rule(training, deployment, auto) -> dict:
    _, found = one(training, "AWS::Events::Rule")
    return deployment.resolve(auto.settings.stack_name("training"), found["Properties"])


def matches(rule: dict, event: dict) -> bool:
    return EventPattern.load(json.dumps(rule["EventPattern"])).matches_event(event)


def test_the_rule_matches_every_state_change_of_our_groups_versions(local, rule, names):
    arn = register(local, "PendingManualApproval", names.model_package_group)
    for status in ("PendingManualApproval", "Approved", "Rejected"):
        set_status(local, arn, status)
        event = state_change_event(local, arn)
        assert event["detail"]["ModelApprovalStatus"] == status
        assert matches(rule, event), status
    assert rule["State"] == "ENABLED"


def test_the_rule_ignores_other_groups_and_other_events(local, rule, names):
    other = state_change_event(local, register(local, "Approved", OTHER_GROUP))
    assert not matches(rule, other), "another group's approval"
    ours = state_change_event(local, register(local, "Approved", names.model_package_group))
    for detail_type in ("SageMaker Model State Change", "SageMaker Training Job State Change"):
        assert not matches(rule, {**ours, "detail-type": detail_type}), detail_type
    assert not matches(rule, {**ours, "source": "aws.events"}), "another source"
    assert not matches(
        rule, {**ours, "detail": {k: v for k, v in ours["detail"].items() if k != "ModelPackageGroupName"}}
    )


def test_the_rule_starts_the_recorder_with_the_event_itself_and_may_start_nothing_else(rule, training, names):
    (target,) = rule["Targets"]
    recorder = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{names.approval_recorder}"
    assert target["Arn"] == recorder
    assert not {"Input", "InputPath", "InputTransformer"} & set(target), "the recorder gets the whole event"
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    (statement,) = policy_statements(training, "ApprovalRecorderStateMachineEventsRole").values()
    assert statement["Action"] == "states:StartExecution"
    assert statement["Resource"]["Ref"].startswith("ApprovalRecorderStateMachine")


# --- the recorder ---------------------------------------------------------------------------------------


def test_the_recorder_state_machine_passes_the_grammar_and_cfn_lint(local, names):
    AmazonStateLanguageParser.parse(local.machines[names.approval_recorder].definition_text)
    assert lint_with_definition_objects(local) == []


def test_approvals_and_rejections_leave_the_newest_approved_version(local, names):
    group = names.model_package_group
    v1, v2, v3 = (register(local, "PendingManualApproval", group) for _ in range(3))
    steps = [
        (v1, "Approved", v1),
        (v2, "Approved", v2),
        (v3, "Rejected", v2),
        (v2, "Rejected", v1),  # the served version is rejected: back to the one before it
        (v3, "Approved", v3),
        (v3, "Rejected", v1),
        (v1, "Rejected", NOT_APPROVED),  # nothing approved any more
        (v1, "Approved", v1),
    ]
    for arn, status, expected in steps:
        set_status(local, arn, status)
        assert record(local, state_change_event(local, arn), names) == expected, (arn, status)


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))), ids=lambda o: "-".join(map(str, o)))
def test_any_order_of_changes_and_of_their_events_leaves_the_truth(local, names, order):
    """Four changes in every order; after each, the recorder runs on the event of an earlier change (events
    may arrive late, twice or out of order): the parameter always names the newest Approved version."""
    group = names.model_package_group
    v1, v2, v3 = (register(local, "PendingManualApproval", group) for _ in range(3))
    changes = [(v1, "Approved"), (v2, "Approved"), (v3, "Rejected"), (v2, "Rejected")]
    statuses = {v1: "PendingManualApproval", v2: "PendingManualApproval", v3: "PendingManualApproval"}
    events = []
    for i in order:
        arn, status = changes[i]
        set_status(local, arn, status)
        statuses[arn] = status
        events.append(state_change_event(local, arn))
        value = record(local, events[0 if len(events) % 2 else -1], names)
        assert value == truth(statuses), (order, statuses)
        never_rejected(local, value)


def test_a_registration_that_is_not_approved_changes_nothing(local, names):
    group = names.model_package_group
    approved = register(local, "Approved", group)
    assert record(local, state_change_event(local, approved), names) == approved
    for status in ("PendingManualApproval", "Rejected"):
        newer = register(local, status, group)
        assert record(local, state_change_event(local, newer), names) == approved, status


def test_another_groups_approval_never_reaches_the_parameter(local, names):
    """The rule does not match it (above); started by hand with it, the recorder still reads its own group."""
    theirs = register(local, "Approved", OTHER_GROUP)
    assert record(local, state_change_event(local, theirs), names) == NOT_APPROVED
    ours = register(local, "Approved", names.model_package_group)
    newer_theirs = register(local, "Approved", OTHER_GROUP)
    assert record(local, state_change_event(local, newer_theirs), names) == ours
    (request,) = local.sdk.of("sagemaker", "ListModelPackages")[-1:]
    assert request == {
        "ModelPackageGroupName": names.model_package_group,
        "ModelApprovalStatus": "Approved",
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": 1,
    }


def test_a_deleted_version_is_no_longer_served(local, names, deployment):
    group = names.model_package_group
    older, newer = register(local, "Approved", group), register(local, "Approved", group)
    assert record(local, state_change_event(local, newer), names) == newer
    event = state_change_event(local, newer)
    # moto has no DeleteModelPackage: the version leaves moto's registry the way the call would remove it.
    backend = sagemaker_backends[deployment.account][deployment.region]
    del backend.model_packages[newer]
    assert record(local, event, names) == older
    del backend.model_packages[older]
    assert record(local, event, names) == NOT_APPROVED


def test_an_approval_that_changes_during_the_write_is_recorded_in_a_second_round(local, names, deployment):
    """Two changes at once: the recorder writes, asks again, sees the registry moved, and writes again."""
    group = names.model_package_group
    served = register(local, "Approved", group)
    assert record(local, state_change_event(local, served), names) == served
    newer = register(local, "Approved", group)
    backend = sagemaker_backends[deployment.account][deployment.region]
    original = SimpleSystemManagerBackend.put_parameter

    def put_then_reject(self, *args, **kwargs):
        written = original(self, *args, **kwargs)
        if backend.model_packages[newer].model_approval_status == "Approved":
            backend.model_packages[newer].set_model_approval_status("Rejected")  # another person, same moment
        return written

    with mock.patch.object(SimpleSystemManagerBackend, "put_parameter", put_then_reject):
        result = local.run(state_change_event(local, newer), machine=names.approval_recorder)
    assert result.status == "SUCCEEDED"
    assert result.output == {"approved_package": served, "rounds": 2}
    assert [params["Value"] for params in local.sdk.of("ssm", "PutParameter")][-2:] == [newer, served]
    never_rejected(local, served)


def test_approvals_that_keep_changing_fail_loudly_after_a_few_rounds(local, names, deployment):
    group = names.model_package_group
    a, b = register(local, "Approved", group), register(local, "PendingManualApproval", group)
    backend = sagemaker_backends[deployment.account][deployment.region]
    original = SimpleSystemManagerBackend.put_parameter

    def put_then_flip(self, *args, **kwargs):
        written = original(self, *args, **kwargs)
        flipped = backend.model_packages[b]
        flipped.set_model_approval_status("Rejected" if flipped.model_approval_status == "Approved" else "Approved")
        return written

    with mock.patch.object(SimpleSystemManagerBackend, "put_parameter", put_then_flip):
        result = local.run(state_change_event(local, a), machine=names.approval_recorder)
    assert (result.status, result.error) == ("FAILED", "ApprovalsKeptChanging")
    assert len(local.sdk.of("ssm", "PutParameter")) == MAX_ROUNDS
    assert result.cause.startswith(f"The approved versions of the group changed during each of {MAX_ROUNDS} writes")


# --- the pipeline with model_approval=auto, then the recorder -------------------------------------------------


def test_auto_approval_registers_approved_and_the_recorder_serves_it(local, names):
    passed = succeeded(local, {"tune": False})
    package = registered(local, passed)
    assert passed.output["approval_status"] == package["ModelApprovalStatus"] == "Approved"
    assert record(local, state_change_event(local, package["ModelPackageArn"]), names) == package["ModelPackageArn"]

    # A weaker model is still registered, Rejected, with its metrics; what is served does not change.
    local.sagemaker.training_outcomes.append(JobOutcome(metrics={"valid_loss": 2.0, "test_accuracy": 0.1}))
    failed = quality_gate_failed(local, {"tune": False})
    rejected = registered(local, failed)
    assert rejected["ModelApprovalStatus"] == "Rejected"
    assert rejected["CustomerMetadataProperties"]["test_accuracy"] == "0.1"
    assert record(local, state_change_event(local, rejected["ModelPackageArn"]), names) == package["ModelPackageArn"]

    # A person rejects the served version: nothing is approved any more.
    set_status(local, package["ModelPackageArn"], "Rejected")
    assert record(local, state_change_event(local, package["ModelPackageArn"]), names) == NOT_APPROVED
