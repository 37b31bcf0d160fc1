"""The training stack: the code asset, the execution role, and the pipeline's definition, executed."""

from __future__ import annotations

import json
import tarfile

import pytest

import metrics
from stacks.constructs.code_asset import build_code_archive, code_files
from stacks.training import NOT_TRAINED
from tests.helpers import arn_text, as_list, one, policy_statements
from tests.stacks.asl import Interpreter, TaskFailedError, definition_from_template

TRAINING_SYNC = "arn:aws:states:::sagemaker:createTrainingJob.sync"
TUNING_SYNC = "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync"
MODEL_URI = "s3://bucket/models/dogbreeds-train-x/output/model.tar.gz"


@pytest.fixture(scope="module")
def training(assembly) -> dict:
    return assembly.template("training")


@pytest.fixture(scope="module")
def definition(training) -> dict:
    return definition_from_template(training)


class FakeAws:
    """Answers the pipeline's tasks like the services would; records nothing itself (the run does)."""

    def __init__(self, *, splits=("train/", "valid/", "test/"), weights=True, test_accuracy=0.81, fail_train=None):
        self.splits, self.weights, self.test_accuracy, self.fail_train = splits, weights, test_accuracy, fail_train

    def __call__(self, resource: str, args: dict):
        if resource.endswith(":s3:listObjectsV2"):
            if args.get("Delimiter") == "/":
                return {"CommonPrefixes": [{"Prefix": args["Prefix"] + s} for s in self.splits], "KeyCount": 3}
            if not self.weights:
                return {"KeyCount": 0}
            return {"KeyCount": 1, "Contents": [{"Key": args["Prefix"] + "-11ad3fa6.pth"}]}
        if resource == TUNING_SYNC:
            return {
                "HyperParameterTuningJobName": args["HyperParameterTuningJobName"],
                "BestTrainingJob": {"TunedHyperParameters": {"learning_rate": "0.0123", "batch_size": "128"}},
            }
        if resource == TRAINING_SYNC:
            if self.fail_train:
                raise TaskFailedError("SageMaker.AmazonSageMakerException", self.fail_train)
            final = [{"MetricName": "valid_loss", "Value": 0.52}]
            if self.test_accuracy is not None:
                final.append({"MetricName": "test_accuracy", "Value": self.test_accuracy})
            return {
                "TrainingJobName": args["TrainingJobName"],
                "ModelArtifacts": {"S3ModelArtifacts": MODEL_URI},
                "FinalMetricDataList": final,
            }
        if resource.endswith(":ssm:putParameter"):
            return {"Version": 2}
        raise AssertionError(f"unexpected task {resource}")


def run(definition, execution_input, **aws):
    return Interpreter(definition, FakeAws(**aws)).run(execution_input)


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


# --- the pipeline definition --------------------------------------------------------------------


def test_definition_uses_jsonata_and_has_the_whole_flow(definition):
    assert definition["QueryLanguage"] == "JSONata"
    states = definition["States"]
    assert states["Tune hyperparameters"]["Resource"] == TUNING_SYNC
    assert states["Train"]["Resource"] == TRAINING_SYNC
    assert states["Hand off model"]["Resource"] == "arn:aws:states:::aws-sdk:ssm:putParameter"
    assert {"Quality gate", "Below quality gate", "Bad input", "No data set"} <= set(states)


def test_tuning_ranges_objective_and_limits(definition, settings):
    config = definition["States"]["Tune hyperparameters"]["Arguments"]["HyperParameterTuningJobConfig"]
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch_size", "Values": ["32", "64", "128", "256", "512"]}]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "valid_loss"}
    assert config["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": settings.tuning_max_jobs,
        "MaxParallelTrainingJobs": settings.tuning_max_parallel_jobs,
    }
    assert config["TrainingJobEarlyStoppingType"] == "Auto"


def test_metric_definitions_are_the_training_scripts_regexes(definition):
    expected = [{"Name": name, "Regex": regex} for name, regex in metrics.METRIC_REGEXES.items()]
    train = definition["States"]["Train"]["Arguments"]["AlgorithmSpecification"]
    tune = definition["States"]["Tune hyperparameters"]["Arguments"]["TrainingJobDefinition"]
    assert train["MetricDefinitions"] == expected
    assert tune["AlgorithmSpecification"]["MetricDefinitions"] == expected


def test_metric_regexes_in_the_template_read_the_lines_the_script_prints(definition):
    lines = "\n".join(
        [
            metrics.metric_line(epoch=1, train_loss=1.25, train_accuracy=0.5, valid_loss=0.9, valid_accuracy=0.61),
            "best_valid_loss=0.1; unrelated noise",
            metrics.metric_line(valid_loss=0.85),
            metrics.metric_line(test_loss=0.8, test_accuracy=0.7),
        ]
    )
    import re

    found = {
        d["Name"]: [float(v) for v in re.findall(d["Regex"], lines)]
        for d in definition["States"]["Train"]["Arguments"]["AlgorithmSpecification"]["MetricDefinitions"]
    }
    assert found["valid_loss"] == [0.9, 0.85]
    assert found["test_accuracy"] == [0.7]
    assert found["train_accuracy"] == [0.5]


def test_default_run_tunes_then_trains_on_two_instances_with_torchrun(definition):
    result = run(definition, {})
    assert result.status == "SUCCEEDED", result.cause
    assert result.path[-6:] == [
        "Tune hyperparameters",
        "Train",
        "Quality gate",
        "Hand off model",
        "Record metrics",
        "Done",
    ]
    train = result.call("Train")
    hp = train["HyperParameters"]
    assert hp["sagemaker_torch_distributed_enabled"] == "true"
    assert json.loads(hp["sagemaker_program"]) == "train.py"
    assert json.loads(hp["sagemaker_submit_directory"]).startswith("<Fn::Sub>")
    assert (hp["learning_rate"], hp["batch_size"]) == ("0.0123", "128"), "the tuned values"
    assert json.loads(hp["backbone"]) == "resnet50" and hp["epochs"] == "10"
    assert train["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50}
    assert [c["ChannelName"] for c in train["InputDataConfig"]] == ["training", "pretrained"]
    assert train["CheckpointConfig"]["S3Uri"].endswith(f"/checkpoints/{train['TrainingJobName']}/")
    assert train["VpcConfig"]["Subnets"] and train["VpcConfig"]["SecurityGroupIds"]
    tune = result.call("Tune hyperparameters")
    static = tune["TrainingJobDefinition"]["StaticHyperParameters"]
    assert "learning_rate" not in static and "batch_size" not in static
    assert static["epochs"] == "3" and "sagemaker_torch_distributed_enabled" not in static
    assert len(tune["HyperParameterTuningJobName"]) <= 32
    assert result.output == {
        "model_data_url": MODEL_URI,
        "training_job": train["TrainingJobName"],
        "tuning_job": tune["HyperParameterTuningJobName"],
        "metrics": {"valid_loss": 0.52, "test_accuracy": 0.81},
    }


def test_input_overrides_instance_count_type_epochs_and_hyperparameters(definition):
    result = run(
        definition,
        {
            "tune": False,
            "instance_count": 4,
            "instance_type": "ml.p3.2xlarge",
            "epochs": 3,
            "use_spot": True,
            "hyperparameters": {"learning_rate": 0.05, "batch_size": 32, "backbone": "resnet34"},
        },
    )
    assert result.status == "SUCCEEDED", result.cause
    assert "Tune hyperparameters" not in result.path
    train = result.call("Train")
    assert train["ResourceConfig"]["InstanceCount"] == 4
    # ml.p3 has no NVMe storage: its EBS volume is encrypted with the stack key.
    assert train["ResourceConfig"]["VolumeKmsKeyId"].startswith("<StackOutput:")
    assert train["EnableManagedSpotTraining"] is True
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 28800}
    hp = train["HyperParameters"]
    assert (hp["learning_rate"], hp["batch_size"], hp["backbone"], hp["epochs"]) == ("0.05", "32", '"resnet34"', "3")


def test_nvme_instance_types_get_no_volume_key(definition):
    for instance_type, keyed in (("ml.g5.2xlarge", False), ("ml.m5d.xlarge", False), ("ml.c5.4xlarge", True)):
        train = run(definition, {"tune": False, "instance_type": instance_type}).call("Train")
        assert ("VolumeKmsKeyId" in train["ResourceConfig"]) is keyed, instance_type


def test_pretrained_channel_only_when_the_backbone_weights_are_there(definition):
    train = run(definition, {"tune": False}, weights=False).call("Train")
    assert [c["ChannelName"] for c in train["InputDataConfig"]] == ["training"]


@pytest.mark.parametrize(
    ("execution_input", "cause"),
    [
        ([], 'The input must be a JSON object, for example {"tune": false, "epochs": 5}.'),
        (
            {"epochs": 0},
            "epochs must be a whole number from 1 to 1000.",
        ),
        ({"epochs": 2.5}, "epochs must be a whole number from 1 to 1000."),
        ({"instance_count": 21}, "instance_count must be a whole number from 1 to 20."),
        (
            {"instance_type": "p3.2xlarge"},
            "instance_type must be a SageMaker training instance type such as ml.g4dn.xlarge.",
        ),
        ({"tune": "no"}, "tune must be true or false."),
        (
            {"tune": False, "hyperparameters": {"augment": "yes"}},
            'hyperparameters.augment must be true, false or "auto".',
        ),
        (
            {"tunes": False},
            "Unknown field(s) tunes; accepted: tune, instance_count, instance_type, epochs, use_spot, hyperparameters.",
        ),
        (
            {"tune": False, "hyperparameters": {"lr": 0.1}},
            "Unknown hyperparameter(s) lr; accepted: learning_rate, batch_size, backbone, trainable, patience, seed, "
            "image_size, amp, channels_last, augment.",
        ),
        (
            {"tune": False, "hyperparameters": {"learning_rate": "0.1"}},
            "hyperparameters.learning_rate must be a number above 0 and below 1.",
        ),
        (
            {"tune": False, "hyperparameters": {"backbone": "vgg16"}},
            "hyperparameters.backbone must be one of resnet18, resnet34, resnet50, resnet101.",
        ),
        ({"hyperparameters": "fast"}, 'hyperparameters must be an object, for example {"backbone": "resnet34"}.'),
        (
            {"hyperparameters": {"batch_size": 64}},
            'learning_rate and batch_size are chosen by tuning when tune is true; set "tune": false to fix them.',
        ),
    ],
)
def test_bad_input_fails_before_any_job_with_a_clear_cause(definition, execution_input, cause):
    result = run(definition, execution_input)
    assert result.status == "FAILED"
    assert result.error == "InvalidInput"
    assert result.cause == f"The execution input was refused: {cause}"
    assert result.calls == [], "no task ran"


def test_missing_data_set_split_fails_with_what_to_do(definition):
    result = run(definition, {}, splits=("train/",))
    assert result.status == "FAILED" and result.error == "MissingDataSet"
    assert result.cause == (
        "s3://<ImportValue:dogbreeds-artifact-bucket>/datasets/dogImages/ lacks valid/, test/: upload the dogImages "
        "data set first (dogbreeds upload-data), with train/, valid/ and test/ folders."
    )
    assert not any(r in (TRAINING_SYNC, TUNING_SYNC) for _, r, _ in result.calls)


def test_quality_gate_stops_a_weak_model_before_the_handoff(definition, settings):
    result = run(definition, {"tune": False}, test_accuracy=0.41)
    assert result.status == "FAILED" and result.error == "QualityGateFailed"
    assert result.cause == (
        f"test_accuracy 0.41 is below the quality gate {settings.quality_gate_min_test_accuracy} (setting "
        f"quality_gate_min_test_accuracy); the model {MODEL_URI} was not handed to the endpoint."
    )
    assert "Hand off model" not in result.path


def test_quality_gate_fails_when_the_job_reported_no_test_accuracy(definition):
    result = run(definition, {"tune": False}, test_accuracy=None)
    assert result.status == "FAILED" and result.error == "QualityGateFailed"
    assert "reported no test_accuracy metric" in result.cause


def test_handoff_writes_the_model_uri_and_its_metrics(definition):
    result = run(definition, {"tune": False})
    assert result.call("Hand off model") == {
        "Name": "/dogbreeds/model/data-url",
        "Value": MODEL_URI,
        "Type": "String",
        "Overwrite": True,
    }
    recorded = json.loads(result.call("Record metrics")["Value"])
    assert recorded["metrics"] == {"valid_loss": 0.52, "test_accuracy": 0.81}
    assert recorded["model_data_url"] == MODEL_URI
    assert recorded["hyperparameters"]["learning_rate"] == 0.01


def test_a_failed_training_job_fails_the_execution_with_its_reason(definition):
    result = run(definition, {"tune": False}, fail_train="AlgorithmError: data set check failed")
    assert result.status == "FAILED"
    assert result.cause == "AlgorithmError: data set check failed"
    assert "Hand off model" not in result.path


def test_each_execution_gets_its_own_job_names(definition):
    fake = FakeAws()
    first = Interpreter(definition, fake, execution_id="arn:aws:states:r:a:execution:m:one").run({"tune": False})
    second = Interpreter(definition, fake, execution_id="arn:aws:states:r:a:execution:m:two").run({"tune": False})
    assert first.call("Train")["TrainingJobName"] != second.call("Train")["TrainingJobName"]
    assert first.call("Train")["TrainingJobName"].startswith("dogbreeds-train-")


def test_every_hyperparameter_the_input_accepts_is_an_option_of_train_py():
    import train
    from stacks.training_pipeline import HYPERPARAMETERS

    options = {action.dest for action in train.get_args_parser()._actions}
    assert set(HYPERPARAMETERS) <= options, set(HYPERPARAMETERS) - options
