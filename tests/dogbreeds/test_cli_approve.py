"""approve and reject: UpdateModelPackage on the version found by ListModelPackages (moto's Model Registry; the
exact request against AWS's own model with botocore's Stubber)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dogbreeds.ops.errors import EXIT_FAILED, EXIT_NOT_DEPLOYED, EXIT_USAGE
from tests.dogbreeds.fakes import NAMES, Registry, package_arn

GROUP = NAMES.model_package_group
DEPLOY = f"npx cdk deploy {NAMES.stack('endpoint')}"
RECORDER = (
    f"Next: the approval recorder ({NAMES.approval_recorder}) updates the parameter "
    f"{NAMES.approved_package_parameter} within seconds (dogbreeds status shows it)"
)


@pytest.fixture
def models(fake) -> Registry:
    """1 Rejected, 2 Approved and live (the latest approved), 3 waiting for approval."""
    registry = Registry()
    arns = registry.register("Rejected", "Approved", "PendingManualApproval")
    registry.record(arns[1])
    registry.serve(arns[1])
    return registry


def updates(fake) -> list[dict]:
    """The UpdateModelPackage requests the CLI sends."""
    sent: list[dict] = []

    def record(params, **_):
        sent.append(dict(params))

    fake.client("sagemaker").meta.events.register("before-parameter-build.sagemaker.UpdateModelPackage", record)
    return sent


# --- approve ----------------------------------------------------------------------------------------


def test_approve_sets_approved_with_the_note_and_says_what_happens_next(fake, models, run_cli):
    result = run_cli("approve", "3", "--note", "0.87 on the test set; confusions checked")
    assert result.code == 0, result.err
    assert models.status(3) == ("Approved", "0.87 on the test set; confusions checked")
    assert result.out == (
        f"Approved version 3 of {GROUP} (was PendingManualApproval): {package_arn(3)}\n"
        f"{RECORDER}; then `{DEPLOY}` serves it.\n"
    )


def test_approve_takes_the_versions_arn_too(fake, models, run_cli):
    result = run_cli("approve", package_arn(3))
    assert result.code == 0, result.err
    assert models.status(3) == ("Approved", None)


def test_the_exact_request_against_the_sagemaker_model(fake, run_cli):
    """Stubber checks the request and the answers against botocore's model of the SageMaker API."""
    stub = fake.stub("sagemaker")
    summary = {
        "ModelPackageGroupName": GROUP,
        "ModelPackageVersion": 7,
        "ModelPackageArn": package_arn(7),
        "CreationTime": datetime(2026, 1, 7, tzinfo=UTC),
        "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": "PendingManualApproval",
    }
    stub.add_response(
        "list_model_packages",
        {"ModelPackageSummaryList": [summary]},
        {
            "ModelPackageGroupName": GROUP,
            "ModelPackageType": "Versioned",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": 100,
        },
    )
    stub.add_response(
        "update_model_package",
        {"ModelPackageArn": package_arn(7)},
        {"ModelPackageArn": package_arn(7), "ModelApprovalStatus": "Approved", "ApprovalDescription": "looks good"},
    )
    result = run_cli("approve", "7", "--note", "  looks good ")
    assert result.code == 0, result.err
    fake.assert_stubs_used()


def test_a_version_that_does_not_exist_is_not_found(fake, models, run_cli):
    sent = updates(fake)
    result = run_cli("approve", "9")
    assert result.code == EXIT_FAILED
    assert result.err == (
        f"error: There is no version 9 in the model package group {GROUP}: it has versions 1-3 "
        "(dogbreeds models lists them).\n"
    )
    assert sent == []


def test_an_empty_group_has_nothing_to_approve(fake, run_cli):
    Registry()
    result = run_cli("approve", "1")
    assert result.code == EXIT_FAILED
    assert "it has no versions yet (dogbreeds train registers one per trained model)" in result.err


def test_approving_an_approved_version_changes_nothing(fake, models, run_cli):
    sent = updates(fake)
    result = run_cli("approve", "2", "--note", "again")
    assert result.code == 0, result.err
    assert sent == []
    assert models.status(2) == ("Approved", None)
    assert result.out == (
        f"Version 2 of {GROUP} is already Approved: nothing changed.\nIt is live on the endpoint {NAMES.endpoint}.\n"
    )


def test_approving_an_older_version_says_the_newer_one_stays_latest(fake, models, run_cli):
    run_cli("approve", "3")
    result = run_cli("approve", "1", "--note", "rechecked")
    assert result.code == 0, result.err
    assert models.status(1) == ("Approved", "rechecked")
    assert result.out.splitlines()[1] == (
        f"Version 3 is newer and approved too: it stays the latest approved, and `{DEPLOY}` serves it. To serve "
        f"version 1 instead: `{DEPLOY} -c endpoint_model_package_arn={package_arn(1)}`, or reject version 3."
    )


def test_a_pinned_endpoint_is_named(fake, models, run_cli):
    result = run_cli("-c", f"endpoint_model_package_arn={package_arn(2)}", "approve", "3")
    assert result.code == 0, result.err
    assert "A deploy serves version 2 all the same (pinned by the setting endpoint_model_package_arn)" in result.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "0"], "VERSION '0': takes a version number such as 3 (dogbreeds models lists them) or its ARN"),
        (
            ["reject", "v3", "--reason", "x"],
            "VERSION 'v3': takes a version number such as 3 (dogbreeds models lists them) or its ARN",
        ),
        (["approve", "3", "--note", "x" * 1025], "--note: at most 1024 characters (SageMaker's limit), not 1025"),
        (["reject", "3", "--reason", " "], "--reason must say why, for example --reason 'misclassifies puppies'"),
    ],
)
def test_usage_errors_come_before_any_aws_call(fake, run_cli, args, message):
    result = run_cli(*args)
    assert result.code == EXIT_USAGE
    assert result.err == f"error: {message}\n"
    assert fake.created == []


def test_an_arn_of_another_group_is_refused(fake, models, run_cli):
    result = run_cli("approve", package_arn(3, "other-models"))
    assert result.code == EXIT_USAGE
    assert result.err == f"error: That ARN names a version of the group other-models: this project's group is {GROUP}\n"


def test_reject_needs_a_reason(fake, run_cli):
    with pytest.raises(SystemExit) as exited:
        run_cli("reject", "3")
    assert exited.value.code == EXIT_USAGE


def test_without_the_training_stack_nothing_is_approved(fake, run_cli):
    del fake.stacks.stacks[NAMES.stack("training")]
    result = run_cli("approve", "1")
    assert result.code == EXIT_NOT_DEPLOYED
    assert f"`npx cdk deploy {NAMES.stack('training')}`" in result.err


# --- reject -----------------------------------------------------------------------------------------


def test_reject_sets_rejected_with_the_reason(fake, models, run_cli):
    result = run_cli("reject", "3", "--reason", "misclassifies puppies")
    assert result.code == 0, result.err
    assert models.status(3) == ("Rejected", "misclassifies puppies")
    assert result.out == f"Rejected version 3 of {GROUP} (was PendingManualApproval): {package_arn(3)}\n"


def test_rejecting_the_live_version_says_the_endpoint_keeps_it_until_the_next_deploy(fake, models, run_cli):
    run_cli("approve", "3")
    result = run_cli("reject", "2", "--reason", "p90 latency too high")
    assert result.code == 0, result.err
    assert models.status(2) == ("Rejected", "p90 latency too high")
    assert result.out.splitlines()[1:] == [
        f"It is live: the endpoint {NAMES.endpoint} keeps serving version 2 until the next deploy; `{DEPLOY}` would "
        "serve version 3 (the latest approved).",
    ]


def test_rejecting_the_live_and_only_approved_version(fake, models, run_cli):
    result = run_cli("reject", "2", "--reason", "bias found")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1:] == [
        f"It is live: the endpoint {NAMES.endpoint} keeps serving version 2 until the next deploy; no version is "
        "approved now, so a deploy of the endpoint stack is refused until one is (dogbreeds approve VERSION).",
        f"{RECORDER}.",
    ]


def test_rejecting_the_latest_approved_version_that_is_not_live(fake, models, run_cli):
    run_cli("approve", "3")
    result = run_cli("reject", "3", "--reason", "wrong data set")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1:] == [
        f"A deploy would have served it: `{DEPLOY}` would serve version 2 (the latest approved).",
        f"{RECORDER}.",
    ]


def test_rejecting_a_rejected_version_changes_nothing(fake, models, run_cli):
    sent = updates(fake)
    result = run_cli("reject", "1", "--reason", "again")
    assert result.code == 0, result.err
    assert sent == []
    assert result.out == f"Version 1 of {GROUP} is already Rejected: nothing changed.\n"


def test_a_rejected_version_can_be_approved_again(fake, models, run_cli):
    result = run_cli("approve", "1", "--note", "the test set was wrong, not the model")
    assert result.code == 0, result.err
    assert models.status(1) == ("Approved", "the test set was wrong, not the model")
    assert "Version 2 is newer and approved too" in result.out
