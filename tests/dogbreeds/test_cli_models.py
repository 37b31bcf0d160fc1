"""models: the group's versions (moto's Model Registry), live and latest approved marked; table and JSON."""

from __future__ import annotations

import json

import pytest

from dogbreeds.ops import registry as registry_module
from dogbreeds.ops.errors import EXIT_NOT_DEPLOYED, EXIT_USAGE
from tests.dogbreeds.fakes import NAMES, Registry, package_arn

GROUP = NAMES.model_package_group


@pytest.fixture
def models(fake) -> Registry:
    """Three versions: 1 Rejected (below the gate), 2 Approved and live, 3 waiting for approval."""
    registry = Registry()
    arns = registry.register("Rejected", "Approved", "PendingManualApproval", accuracies=(0.41, 0.83, 0.8712))
    registry.record(arns[1])
    registry.serve(arns[1])
    return registry


def list_calls(fake) -> list[dict]:
    """The ListModelPackages requests the CLI sends (its sagemaker client is moto's)."""
    calls: list[dict] = []

    def record(params, **_):
        calls.append(dict(params))

    fake.client("sagemaker").meta.events.register("before-parameter-build.sagemaker.ListModelPackages", record)
    return calls


def test_the_table_lists_versions_newest_first_with_live_and_latest_approved(fake, models, run_cli):
    calls = list_calls(fake)
    result = run_cli("models")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"Model package group {GROUP}, the newest 3 versions first:"
    header, *rows = lines[1:5]
    assert header.split() == ["VERSION", "STATUS", "TEST", "ACCURACY", "CREATED", "(UTC)", "TRAINING", "JOB"]
    assert [row.split()[:3] for row in rows] == [
        ["3", "PendingManualApproval", "0.8712"],
        ["2", "Approved", "0.8300"],
        ["1", "Rejected", "0.4100"],
    ]
    assert rows[1].endswith(f"{NAMES.job_name_prefix}-train-000000000002  live, latest approved")
    assert rows[0].rstrip().endswith(f"{NAMES.job_name_prefix}-train-000000000003")  # neither live nor approved
    assert lines[5:] == [
        f"Live: version 2 on the endpoint {NAMES.endpoint}.",
        f"Latest approved ({NAMES.approved_package_parameter}): version 2.",
        "Approve one: dogbreeds approve VERSION [--note TEXT]; reject one: dogbreeds reject VERSION --reason TEXT",
    ]
    assert calls == [
        {
            "ModelPackageGroupName": GROUP,
            "ModelPackageType": "Versioned",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": registry_module.PAGE_SIZE,
        }
    ]


def test_json_is_for_scripts(fake, models, run_cli):
    result = run_cli("models", "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["group"] == GROUP
    assert answer["more"] is False
    assert answer["live"] == {
        "endpoint": NAMES.endpoint,
        "model_package_arn": package_arn(2),
        "version": 2,
        "unknown": None,
    }
    assert answer["latest_approved"] == {
        "parameter": NAMES.approved_package_parameter,
        "model_package_arn": package_arn(2),
        "version": 2,
        "unknown": None,
    }
    newest = answer["versions"][0]
    assert newest == {
        "version": 3,
        "arn": package_arn(3),
        "approval_status": "PendingManualApproval",
        "test_accuracy": 0.8712,
        "created": newest["created"],
        "training_job": f"{NAMES.job_name_prefix}-train-000000000003",
        "tuning_job": None,  # "none" in the metadata
        "approval_description": None,
        "live": False,
        "latest_approved": False,
    }
    assert newest["created"].endswith("+00:00")
    assert [(v["version"], v["live"], v["latest_approved"]) for v in answer["versions"]] == [
        (3, False, False),
        (2, True, True),
        (1, False, False),
    ]


def test_an_empty_group_says_so(fake, run_cli):
    Registry()
    result = run_cli("models")
    assert result.code == 0, result.err
    assert result.out == (
        f"The model package group {GROUP} has no versions yet: `dogbreeds train` registers one per trained model.\n"
    )
    assert json.loads(run_cli("models", "--json").out)["versions"] == []


def test_versions_come_page_by_page_up_to_max(fake, monkeypatch, run_cli):
    registry = Registry()
    registry.register(*["Approved"] * 5)
    registry.record(package_arn(5))
    monkeypatch.setattr(registry_module, "PAGE_SIZE", 2)
    calls = list_calls(fake)

    result = run_cli("models", "--max", "4")
    assert result.code == 0, result.err
    rows = result.out.splitlines()[2:6]
    assert [row.split()[0] for row in rows] == ["5", "4", "3", "2"]
    assert "  (older versions are not shown: --max N shows the newest N)" in result.out
    assert f"Live: not known (the endpoint {NAMES.endpoint} does not exist)." in result.out
    # three pages of two: the third shows that a fifth version is left
    assert len(calls) == 3 and "NextToken" not in calls[0] and all("NextToken" in c for c in calls[1:])

    everything = json.loads(run_cli("models", "--json", "--max", "5").out)
    assert [v["version"] for v in everything["versions"]] == [5, 4, 3, 2, 1]
    assert everything["more"] is False


def test_nothing_approved_yet_and_no_endpoint_stack(fake, run_cli):
    del fake.stacks.stacks[NAMES.stack("endpoint")]
    registry = Registry()
    registry.register("PendingManualApproval")
    registry.record(None)
    result = run_cli("models")
    assert result.code == 0, result.err
    assert f"Live: not known (the stack {NAMES.stack('endpoint')} is not deployed)." in result.out
    assert f"Latest approved ({NAMES.approved_package_parameter}): none yet." in result.out


def test_max_must_be_positive(fake, run_cli):
    result = run_cli("models", "--max", "0")
    assert result.code == EXIT_USAGE
    assert result.err == "error: --max 0: accepted is 1 or more\n"


def test_a_training_stack_without_the_registry_asks_for_a_deploy(fake, run_cli):
    outputs = fake.stacks.stacks[NAMES.stack("training")]
    del outputs["ModelPackageGroupName"]
    result = run_cli("models")
    assert result.code == EXIT_NOT_DEPLOYED
    assert "has no output ModelPackageGroupName" in result.err
    assert f"`npx cdk deploy {NAMES.stack('training')}`" in result.err
