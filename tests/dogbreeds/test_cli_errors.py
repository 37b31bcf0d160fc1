"""Expected failures end with one clear message and the documented exit code, never a traceback."""

from __future__ import annotations

import pytest

from dogbreeds.ops.errors import EXIT_AWS, EXIT_NOT_DEPLOYED, EXIT_USAGE
from tests.dogbreeds.fakes import NAMES, REGION, stack_outputs


def test_no_region_is_a_clear_error(aws_env, run_cli):
    result = run_cli("status")
    assert result.code == EXIT_AWS
    assert result.err == (
        "error: No AWS region is configured: pass --region REGION, set AWS_REGION, or set a region in the profile.\n"
    )
    assert "Traceback" not in result.err


def test_aws_region_variable_is_read(aws_env, monkeypatch, run_cli):
    """botocore itself reads only AWS_DEFAULT_REGION; the CLI reads AWS_REGION too."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    result = run_cli("status")
    assert result.code == EXIT_AWS and "No AWS credentials found" in result.err


def test_no_credentials_is_a_clear_error(aws_env, monkeypatch, run_cli):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run_cli("--region", REGION, "upload-weights")
    assert result.code == EXIT_AWS
    assert result.err.startswith("error: No AWS credentials found: configure them (`aws configure`")
    assert result.out == ""  # nothing was attempted


def test_unknown_profile_is_a_clear_error(aws_env, run_cli):
    result = run_cli("--profile", "nope", "--region", REGION, "status")
    assert result.code == EXIT_AWS
    assert "The config profile (nope) could not be found: pass an existing --profile" in result.err


def test_rejected_credentials_are_a_clear_error(fake, run_cli):
    stub = fake.stub("cloudformation")
    stub.add_client_error(
        "describe_stacks", "ExpiredToken", "The security token included in the request is expired", 403
    )
    result = run_cli("train", "--no-follow")
    assert result.code == EXIT_AWS
    assert "AWS rejected the credentials (ExpiredToken: The security token included in the request is expired)" in (
        result.err
    )


def test_access_denied_names_the_operation(fake, run_cli):
    fake.stub("cloudformation").add_client_error("describe_stacks", "AccessDenied", "not allowed", 403)
    result = run_cli("upload-weights")
    assert result.code == EXIT_AWS
    assert result.err == (
        "error: Access denied to DescribeStacks (not allowed): the credentials in use need this permission.\n"
    )


def test_stack_not_deployed_names_it_and_the_deploy_command(fake, run_cli):
    stack = NAMES.stack("training")
    del fake.stacks.stacks[stack]
    result = run_cli("train", "--epochs", "3")
    assert result.code == EXIT_NOT_DEPLOYED
    assert result.err == (
        f"error: The stack {stack} is not deployed in {REGION}: deploy it with "
        f"`npx cdk deploy {stack}` (or pass the --region / --profile it was deployed with).\n"
    )
    assert fake.stacks.asked == [stack]


def test_stack_names_follow_context_overrides(fake, run_cli):
    fake.stacks.stacks = stack_outputs(project="demo")
    del fake.stacks.stacks["demo-invoker"]
    result = run_cli("-c", "project_name=demo", "predict", "https://example.com/dog.jpg")
    assert result.code == EXIT_NOT_DEPLOYED
    assert "`npx cdk deploy demo-invoker -c project_name=demo`" in result.err
    assert fake.stacks.asked == ["demo-invoker"]


def test_options_after_the_command_work_too(fake, run_cli):
    fake.stacks.stacks = {}
    result = run_cli("status", "--region", "us-west-2", "--profile", "ops", "-c", "project_name=late")
    assert result.code == 0
    assert fake.opened == [("ops", "us-west-2")]
    assert fake.stacks.asked[0] == "late-foundation"


def test_failed_stack_is_not_usable(fake, run_cli):
    fake.stacks.stacks[NAMES.stack("foundation")] = {"status": "ROLLBACK_COMPLETE", "outputs": {}}
    result = run_cli("upload-data", "--source", ".")
    assert result.code == EXIT_NOT_DEPLOYED
    assert f"The stack {NAMES.stack('foundation')} is ROLLBACK_COMPLETE" in result.err


def test_missing_output_asks_for_a_new_deploy(fake, run_cli):
    fake.stacks.stacks[NAMES.stack("endpoint")] = {"outputs": {"DashboardName": "d"}}
    result = run_cli("predict", "--endpoint", "https://example.com/dog.jpg")
    assert result.code == EXIT_NOT_DEPLOYED
    assert "has no output EndpointName" in result.err
    assert f"npx cdk deploy {NAMES.stack('endpoint')}" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "nope=1", "status"], "nope is not a setting"),
        (["train", "-H", "colour=red"], "colour is not one of learning_rate"),
        (["train", "-H", "epochs"], "takes KEY=VALUE"),
        (["predict", "no-such-file.jpg"], "no-such-file.jpg: no such file"),
        (["predict", "--top-k", "0", "https://x.test/a.jpg"], "--top-k 0: accepted is 1 to 133"),
        (["train", "--attach", "run-1", "--epochs", "2"], "--attach follows an execution already started"),
    ],
)
def test_usage_errors_exit_2_before_any_aws_call(fake, run_cli, args, message):
    result = run_cli(*args)
    assert result.code == EXIT_USAGE
    assert message in result.err
    assert fake.stacks.asked == []


def test_argparse_errors_exit_2(run_cli):
    with pytest.raises(SystemExit) as done:
        run_cli("train", "--instance-count", "two")
    assert done.value.code == EXIT_USAGE
    assert run_cli().code == EXIT_USAGE  # no command: the help, on stderr


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]])
def test_help_documents_the_exit_codes(args, capsys):
    from dogbreeds import cli

    with pytest.raises(SystemExit) as done:
        cli.main(args)
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    assert "4    a stack the command needs is not deployed" in out


def test_cost_reads_the_context_before_and_after_the_command(fake, run_cli):
    result = run_cli("-c", "endpoint_min_capacity=2", "cost", "--lambda-ms", "200", "-c", "endpoint_max_capacity=5")
    assert result.code == 0, result.err
    assert "2-5 x ml.g4dn.xlarge" in result.out
    assert "200 ms x 512 MB" in result.out
    assert fake.created == [] and fake.opened == []  # prices come from the table: no AWS session, no client


def test_cost_prints_the_estimate(run_cli):
    result = run_cli("cost", "-c", "endpoint_max_capacity=5")
    assert result.code == 0
    assert "1-5 x ml.g4dn.xlarge" in result.out


def test_cost_refuses_a_wrong_setting_like_every_command(run_cli):
    result = run_cli("cost", "-c", "endpoint_min_capacity=4")
    assert result.code == EXIT_USAGE
    assert result.err == "error: endpoint_min_capacity=4 must not exceed endpoint_max_capacity=3.\n"
    assert result.out == ""


def test_version_prints_the_package_version_and_what_a_command_would_use(fake, run_cli):
    from importlib import metadata

    result = run_cli("--region", "eu-central-1", "-c", "project_name=demo", "--version")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"dogbreeds {metadata.version('dog-breed-classifier')} (dog-breed-classifier)",
        f"project: demo; region: {fake.region_name}",  # the session's region (the fake session has its own)
    ]
    assert fake.opened == [(None, "eu-central-1")]  # the session asked for the region given
    assert fake.stacks.asked == [] and fake.created == []  # no client, no AWS call
    assert run_cli("--version").out.splitlines()[1] == f"project: dogbreeds; region: {fake.region_name}"


def test_version_with_a_wrong_setting_still_prints_the_version(fake, run_cli):
    result = run_cli("-c", "nope=1", "--version")
    assert result.code == 0, result.err
    assert result.out.splitlines()[1].startswith("project: not known (nope is not a setting.")
