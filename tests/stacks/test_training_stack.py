"""The training stack: the code asset, the execution role, and the pipeline's definition, executed."""

from __future__ import annotations

import tarfile

import pytest

from stacks.constructs.code_asset import build_code_archive, code_files
from stacks.training import NOT_TRAINED
from tests.helpers import arn_text, as_list, one, policy_statements


@pytest.fixture(scope="module")
def training(assembly) -> dict:
    return assembly.template("training")


# --- the code asset ------------------------------------------------------------------------------


def test_code_archive_is_a_deterministic_tar_gz_of_the_training_folder(tmp_path):
    first = build_code_archive(build_dir=tmp_path / "a")
    second = build_code_archive(build_dir=tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first, mode="r:gz") as tar:
        names = tar.getnames()
        assert all(m.mtime == tar.getmember(names[0]).mtime and m.uid == 0 for m in tar.getmembers())
    assert names == [p.as_posix() for p in code_files()]
    assert {"model.py", "metrics.py"} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert first.read_bytes()[4:8] == b"\0\0\0\0", "no timestamp in the gzip header"


def test_code_archive_changes_only_when_the_code_changes(tmp_path):
    source = tmp_path / "code"
    source.mkdir()
    (source / "train.py").write_text("print('a')\n")
    before = build_code_archive(source, tmp_path / "build")
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    assert build_code_archive(source, tmp_path / "build") == before
    (source / "train.py").write_text("print('b')\n")
    assert build_code_archive(source, tmp_path / "build") != before


# --- the execution role ----------------------------------------------------------------------


def test_execution_role_is_assumed_by_sagemaker_of_this_account_only(training):
    _, role = one(
        training, "AWS::IAM::Role", {"Description": "SageMaker training and tuning jobs of the dog-breed classifier"}
    )
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert "ManagedPolicyArns" not in role["Properties"]


def test_execution_role_statements_are_exactly_these(training):
    statements = policy_statements(training, "ExecutionPolicy")
    actions = {sid: sorted(as_list(s["Action"])) for sid, s in statements.items()}
    assert actions == {
        "ArtifactsList": ["s3:ListBucket"],
        "ArtifactsRead": ["s3:GetObject"],
        "ArtifactsWrite": ["s3:AbortMultipartUpload", "s3:PutObject"],
        "UseStackKey": ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
        "EncryptJobOutput": ["kms:Encrypt"],
        "EncryptVolumes": ["kms:CreateGrant"],
        "PullTrainingImage": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
        "EcrLogin": ["ecr:GetAuthorizationToken"],
        "JobLogs": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
        "JobMetrics": ["cloudwatch:PutMetricData"],
        "CreateInterfacesInOurSubnets": ["ec2:CreateNetworkInterface"],
        "ManageInterfacesInOurVpc": [
            "ec2:CreateNetworkInterface",
            "ec2:CreateNetworkInterfacePermission",
            "ec2:DeleteNetworkInterface",
            "ec2:DeleteNetworkInterfacePermission",
        ],
        "DescribeNetwork": [
            "ec2:DescribeDhcpOptions",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
            "ec2:DescribeVpcs",
        ],
    }
    prefixes = lambda sid: sorted(arn_text(r).rsplit("/", 2)[-2] + "/" for r in as_list(statements[sid]["Resource"]))  # noqa: E731
    assert prefixes("ArtifactsWrite") == ["checkpoints/", "models/"]
    reads = sorted(
        arn_text(r).split("dogbreeds-artifact-bucket>/", 1)[1] for r in statements["ArtifactsRead"]["Resource"]
    )
    assert reads == ["checkpoints/*", "datasets/dogImages/*", "pretrained/*"]
    assert statements["JobMetrics"]["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}
    assert statements["EncryptVolumes"]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert "ec2:Vpc" in statements["ManageInterfacesInOurVpc"]["Condition"]["ArnEquals"]
    assert arn_text(statements["PullTrainingImage"]["Resource"]).endswith(":repository/pytorch-training")
    # The code asset: one object, read only.
    (code,) = [s for s in policy_statements(training, "ExecutionRoleDefaultPolicy").values()]
    assert code["Action"] == "s3:GetObject" and arn_text(code["Resource"]).endswith(".gz")


def test_pipeline_role_runs_only_its_own_jobs_and_passes_only_the_execution_role(training):
    statements = policy_statements(training, "PipelinePolicy")
    assert arn_text(statements["RunTrainingJobs"]["Resource"]).endswith(":training-job/dogbreeds-*")
    assert arn_text(statements["RunTuningJobs"]["Resource"]).endswith(":hyper-parameter-tuning-job/dogbreeds-*")
    passing = statements["PassExecutionRole"]
    assert passing["Action"] == "iam:PassRole"
    assert passing["Resource"]["Fn::GetAtt"][0].startswith("ExecutionRole")
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert sorted(arn_text(r).rsplit(":", 1)[-1] for r in statements["HandOffModel"]["Resource"]) == [
        "parameter/dogbreeds/model/data-url",
        "parameter/dogbreeds/model/metrics",
    ]
    assert statements["CheckDataSet"]["Condition"] == {
        "StringLike": {"s3:prefix": ["datasets/dogImages/", "pretrained/*"]}
    }


def test_state_machine_logs_everything_and_traces(training):
    _, machine = one(training, "AWS::StepFunctions::StateMachine")
    props = machine["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    _, log_group = one(training, "AWS::Logs::LogGroup")
    assert log_group["Properties"]["RetentionInDays"] == 90


def test_handoff_parameter_starts_as_not_trained_and_carries_no_tags(training):
    _, parameter = one(training, "AWS::SSM::Parameter")
    assert parameter["Properties"]["Name"] == "/dogbreeds/model/data-url"
    assert parameter["Properties"]["Value"] == NOT_TRAINED
    assert "Tags" not in parameter["Properties"]
