"""The training stack: the code asset, the execution role, the pipeline's role, the model registry and the
approval recorder (their executions: test_training_pipeline.py and test_model_registry.py)."""

from __future__ import annotations

import tarfile

import pytest

from dogbreeds_stacks.constructs.code_asset import build_code_archive, code_files
from dogbreeds_stacks.contract import NOT_APPROVED
from dogbreeds_stacks.instances import family
from dogbreeds_stacks.training import serving_instance_types
from tests.helpers import arn_text, as_list, one, policy_statements, resources


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
    assert prefixes("ArtifactsWrite") == ["checkpoints/", "features/", "models/"]
    reads = sorted(
        arn_text(r).split("dogbreeds-artifact-bucket>/", 1)[1] for r in statements["ArtifactsRead"]["Resource"]
    )
    assert reads == ["checkpoints/*", "datasets/dogImages/*", "features/*", "pretrained/*"]
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
    assert statements["CheckDataSet"]["Condition"] == {
        "StringLike": {"s3:prefix": ["datasets/dogImages/", "pretrained/*"]}
    }


def test_pipeline_role_registers_only_in_its_group_and_writes_only_metrics_objects(training):
    statements = policy_statements(training, "PipelinePolicy")
    assert set(statements) == {
        "RunTrainingJobs",
        "RunTuningJobs",
        "WatchJobsThroughEvents",
        "PassExecutionRole",
        "CheckDataSet",
        "RecordModelMetrics",
        "EncryptModelMetrics",
        "RegisterModel",
        "EncryptJobVolumes",
    }
    register = statements["RegisterModel"]
    assert sorted(as_list(register["Action"])) == ["sagemaker:AddTags", "sagemaker:CreateModelPackage"]
    assert arn_text(register["Resource"]).endswith(":model-package/dogbreeds-models/*")
    write = statements["RecordModelMetrics"]
    assert write["Action"] == "s3:PutObject"
    assert arn_text(write["Resource"]).endswith("/models/dogbreeds-train-*/model-quality.json")
    encrypt = statements["EncryptModelMetrics"]
    assert encrypt["Action"] == "kms:GenerateDataKey"
    assert encrypt["Resource"] == statements["EncryptJobVolumes"]["Resource"], "the stack key, and only it"
    assert arn_text(encrypt["Condition"]["StringEquals"]["kms:ViaService"]) == "s3.<AWS::Region>.amazonaws.com"
    granted = {a for s in statements.values() for a in as_list(s["Action"])}
    assert not any(a.startswith("ssm:") for a in granted), "the pipeline writes no SSM parameter any more"


def test_state_machine_logs_everything_and_traces(training):
    _, machine = one(training, "AWS::StepFunctions::StateMachine", {"StateMachineName": "dogbreeds-training"})
    props = machine["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    assert "StateMachineType" not in props, "a standard workflow: it runs for hours"
    for log_group in resources(training, "AWS::Logs::LogGroup").values():
        assert log_group["Properties"]["RetentionInDays"] == 90


def test_the_model_package_group_is_declared_and_kept_with_the_data(training):
    _, group = one(training, "AWS::SageMaker::ModelPackageGroup")
    assert group["Properties"]["ModelPackageGroupName"] == "dogbreeds-models"
    assert "Rejected" in group["Properties"]["ModelPackageGroupDescription"]
    assert group["DeletionPolicy"] == "Retain", "retain_data keeps the models' history"
    (group_id,) = resources(training, "AWS::SageMaker::ModelPackageGroup")
    for machine in resources(training, "AWS::StepFunctions::StateMachine").values():
        assert group_id in machine["DependsOn"], "no execution before the group exists"


def test_the_only_parameter_is_the_approved_package_starting_as_not_approved_without_tags(training):
    _, parameter = one(training, "AWS::SSM::Parameter")
    assert parameter["Properties"]["Name"] == "/dogbreeds/model/approved-package"
    assert parameter["Properties"]["Value"] == NOT_APPROVED
    assert "Tags" not in parameter["Properties"], "CloudFormation must never rewrite what the recorder wrote"


def test_outputs_name_the_group_and_the_parameter_and_no_handoff(training):
    outputs = training["Outputs"]
    assert outputs["ModelPackageGroupName"]["Value"] == "dogbreeds-models"
    assert outputs["ApprovedPackageParameterName"]["Value"] == "/dogbreeds/model/approved-package"
    assert {"StateMachineArn", "ExecutionRoleArn", "CodeUri"} <= set(outputs)
    assert not {"ModelParameterName", "MetricsParameterName"} & set(outputs)


def test_the_approval_recorder_is_an_express_machine_that_logs_traces_and_may_do_two_things(training):
    _, machine = one(training, "AWS::StepFunctions::StateMachine", {"StateMachineName": "dogbreeds-approval-recorder"})
    props = machine["Properties"]
    assert props["StateMachineType"] == "EXPRESS"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert (props["LoggingConfiguration"]["Level"], props["LoggingConfiguration"]["IncludeExecutionData"]) == (
        "ALL",
        True,
    )
    statements = policy_statements(training, "ApprovalRecorderPolicy")
    assert {sid: s["Action"] for sid, s in statements.items()} == {
        "ListApprovedVersions": "sagemaker:ListModelPackages",
        "RecordApprovedVersion": "ssm:PutParameter",
    }
    assert sorted(arn_text(r).rsplit(":", 1)[-1] for r in statements["ListApprovedVersions"]["Resource"]) == [
        "model-package-group/dogbreeds-models",
        "model-package/dogbreeds-models/*",
    ]
    (parameter_id,) = resources(training, "AWS::SSM::Parameter")
    assert arn_text(statements["RecordApprovedVersion"]["Resource"]).endswith(f":parameter<{parameter_id}>")


@pytest.mark.parametrize("endpoint_type", ["ml.g4dn.xlarge", "ml.c5.xlarge", "ml.g5.2xlarge"])
def test_a_registered_model_is_declared_for_the_endpoints_type_and_its_family_only(endpoint_type):
    declared = serving_instance_types(endpoint_type)
    assert declared[0] == endpoint_type and len(declared) == len(set(declared)) > 1
    assert {family(t) for t in declared} == {family(endpoint_type)}, "the same accelerator: the same serving image"
