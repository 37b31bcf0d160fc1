"""The training pipeline as Step Functions sees it: the synthesized definition checked by validators from
outside this project (LocalStack's ASL grammar, cfn-lint's schema) and executed, on every path, by
LocalStack's interpreter in moto (tests/stacks/stepfunctions_local.py)."""

from __future__ import annotations

import argparse
import copy
import json
import re

import pytest
from cfnlint.api import ManualArgs, lint
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser, ASLParserException

import metrics
import train
from dogbreeds_stacks.contract import NOT_APPROVED, model_environment, training_hyperparameters
from dogbreeds_stacks.training_pipeline import (
    ATTEMPT_ID_LENGTH,
    CLIENT_TOKEN_LENGTH,
    RUN_ID_LENGTH,
    SERVING_CONTENT_TYPES,
    training_instance_types,
)
from tests.cfn_values import Deployment
from tests.helpers import one
from tests.stacks.stepfunctions_local import JobOutcome, LocalPipeline, service_model_problems

TRAINING_SYNC = "sagemaker:createTrainingJob.sync"
TUNING_SYNC = "sagemaker:createHyperParameterTuningJob.sync"
SPLITS = ("train/", "valid/", "test/")
# The execution's output, as the CLI reads it.
OUTPUT_KEYS = {"model_package_arn", "approval_status", "model_data_url", "training_job", "tuning_job", "metrics"}


@pytest.fixture(scope="module")
def deployment(assembly) -> Deployment:
    return Deployment.from_directory(assembly.directory)


@pytest.fixture(scope="module")
def local(deployment, settings):
    with LocalPipeline(deployment, settings.stack_name("training"), settings.names.state_machine) as pipeline:
        deploy_registry(pipeline)
        yield pipeline


def deploy_registry(pipeline: LocalPipeline) -> None:
    """The stack's model package group, created in moto as CloudFormation creates it, and the approved-package
    parameter with its initial value."""
    template = pipeline.deployment.templates[pipeline.stack]
    _, group = one(template, "AWS::SageMaker::ModelPackageGroup")
    _, parameter = one(template, "AWS::SSM::Parameter")
    props = pipeline.deployment.resolve(pipeline.stack, group["Properties"])
    pipeline.client("sagemaker").create_model_package_group(**props)
    props = pipeline.deployment.resolve(pipeline.stack, parameter["Properties"])
    pipeline.client("ssm").put_parameter(Name=props["Name"], Value=props["Value"], Type=props["Type"])


@pytest.fixture(scope="module")
def definition(local) -> dict:
    return local.definition


@pytest.fixture
def pipeline(local):
    """The pipeline with a complete data set and the default backbone's weights in its bucket."""
    local.sagemaker.training_outcomes.clear()
    local.sagemaker.tuning_outcomes.clear()
    local.retry_intervals.clear()
    stock(local)
    return local


def bucket(pipeline: LocalPipeline) -> str:
    return pipeline.definition["States"]["Configure"]["Assign"]["config"]["bucket"]


def stock(pipeline: LocalPipeline, *, splits=SPLITS, weights=("resnet50-0676ba61.pth",)) -> None:
    s3 = pipeline.client("s3")
    name = bucket(pipeline)
    if name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=name)
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    for split in splits:
        s3.put_object(Bucket=name, Key=f"datasets/dogImages/{split}001.Affenpinscher/a.jpg", Body=b"jpeg")
    for weight in weights:
        s3.put_object(Bucket=name, Key=f"pretrained/{weight}", Body=b"weights")


def succeeded(pipeline: LocalPipeline, execution_input: dict, **kwargs):
    result = pipeline.run(execution_input, **kwargs)
    assert result.status == "SUCCEEDED", (result.error, result.cause, result.states)
    assert pipeline.invalid == [], "every request (jobs and SDK integrations) must satisfy botocore's service model"
    return result


def quality_gate_failed(pipeline: LocalPipeline, execution_input: dict):
    result = pipeline.run(execution_input)
    assert (result.status, result.error) == ("FAILED", "QualityGateFailed"), (result.cause, result.states)
    assert pipeline.invalid == []
    return result


def packages(pipeline: LocalPipeline, group: str) -> list[dict]:
    """Every version of the group in moto's registry, oldest first, described."""
    sagemaker = pipeline.client("sagemaker")
    listed = sagemaker.list_model_packages(ModelPackageGroupName=group, SortOrder="Ascending")
    return [
        sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        for summary in listed["ModelPackageSummaryList"]
    ]


def registered(pipeline: LocalPipeline, result) -> dict:
    """The version the execution registered, described by moto's registry."""
    (package,) = registrations_by(pipeline, result)
    return package


def registrations_by(pipeline: LocalPipeline, result) -> list[dict]:
    """The versions of the group the execution registered: none, or one."""
    group = pipeline.definition["States"]["Register model"]["Arguments"]["ModelPackageGroupName"]
    return [p for p in packages(pipeline, group) if _made_by(p, result)]


def _made_by(package: dict, result) -> bool:
    return package.get("MetadataProperties", {}).get("GeneratedBy") == result.arn


def metrics_object(pipeline: LocalPipeline, package: dict) -> tuple[dict, dict]:
    """The package's model-quality statistics from moto's S3: (the object's head, its JSON)."""
    uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    name, key = uri.removeprefix("s3://").split("/", 1)
    s3 = pipeline.client("s3")
    return s3.head_object(Bucket=name, Key=key), json.loads(s3.get_object(Bucket=name, Key=key)["Body"].read())


# --- validators from outside the project --------------------------------------------------------


def test_aws_states_language_grammar_accepts_the_definition(local):
    AmazonStateLanguageParser.parse(local.definition_text)


def test_the_grammar_refuses_a_choice_without_choices(local):
    broken = local.definition
    choice = broken["States"]["Input valid?"]
    choice["Conditions"] = choice.pop("Choices")
    with pytest.raises(ASLParserException, match="Conditions"):
        AmazonStateLanguageParser.parse(json.dumps(broken))


def lint_with_definition_objects(local: LocalPipeline, overrides: dict[str, dict] | None = None) -> list[str]:
    """cfn-lint on the template with each state machine's definition as an object (it cannot look into
    DefinitionString): the deployed one, or the one ``overrides`` gives for that state machine's name."""
    template = copy.deepcopy(local.deployment.templates[local.stack])
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            name = resource["Properties"]["StateMachineName"]
            del resource["Properties"]["DefinitionString"]
            resource["Properties"]["Definition"] = (overrides or {}).get(name) or json.loads(
                local.machines[name].definition_text
            )
    # W7001: the definitions are given resolved, so a mapping only a definition reads looks unused.
    config = ManualArgs(regions=[local.deployment.region], ignore_checks=["W3005", "W7001"])
    return [f"{m.rule.id}: {m.message}" for m in lint(json.dumps(template), config=config)]


def test_cfn_lint_schema_accepts_the_definition(local):
    assert lint_with_definition_objects(local) == []


def test_cfn_lint_schema_refuses_a_choice_without_choices(local):
    broken = local.definition
    choice = broken["States"]["Passed quality gate?"]
    choice["Conditions"] = choice.pop("Choices")
    problems = lint_with_definition_objects(local, {local.name: broken})
    assert any(p.startswith("E3601") and "'Choices' is a required property" in p for p in problems), problems


# --- what the definition declares --------------------------------------------------------------------


def test_definition_uses_jsonata_and_has_the_whole_flow(definition):
    assert definition["QueryLanguage"] == "JSONata"
    states = definition["States"]
    assert states["Tune hyperparameters"]["Resource"] == f"arn:aws:states:::{TUNING_SYNC}"
    assert states["Train"]["Resource"] == f"arn:aws:states:::{TRAINING_SYNC}"
    assert states["Extract features"]["Resource"] == f"arn:aws:states:::{TRAINING_SYNC}"
    assert states["Record model metrics"]["Resource"] == "arn:aws:states:::aws-sdk:s3:putObject"
    assert states["Register model"]["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:createModelPackage"
    assert {"Quality gate", "Below quality gate", "No test metric", "Bad input", "No data set", "Job failed"} <= set(
        states
    )
    assert not any("ssm:putParameter" in state.get("Resource", "") for state in states.values()), "the handoff is gone"


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


def test_metric_definitions_are_the_training_scripts_regexes_and_read_its_lines(definition):
    expected = [{"Name": name, "Regex": regex} for name, regex in metrics.METRIC_REGEXES.items()]
    train = definition["States"]["Train"]["Arguments"]["AlgorithmSpecification"]
    tune = definition["States"]["Tune hyperparameters"]["Arguments"]["TrainingJobDefinition"]
    assert train["MetricDefinitions"] == expected
    assert tune["AlgorithmSpecification"]["MetricDefinitions"] == expected
    lines = "\n".join(
        [
            metrics.metric_line(epoch=1, train_loss=1.25, train_accuracy=0.5, valid_loss=0.9, valid_accuracy=0.61),
            "best_valid_loss=0.1; unrelated noise",
            metrics.metric_line(valid_loss=0.85),
            metrics.metric_line(test_loss=0.8, test_accuracy=0.7),
        ]
    )
    found = {d["Name"]: [float(v) for v in re.findall(d["Regex"], lines)] for d in train["MetricDefinitions"]}
    assert found["valid_loss"] == [0.9, 0.85]
    assert found["test_accuracy"] == [0.7]
    assert found["train_accuracy"] == [0.5]


def test_jobs_are_retried_only_when_sagemaker_refused_to_start_them_and_failures_are_caught(definition):
    for state in ("Extract features", "Tune hyperparameters", "Train"):
        retried = {e for r in definition["States"][state]["Retry"] for e in r["ErrorEquals"]}
        assert "States.TaskFailed" not in retried and "States.ALL" not in retried, "a job that ran is not rerun"
        assert "SageMaker.ResourceLimitExceededException" in retried
        assert definition["States"][state]["Catch"][0]["Next"] == "Job failed"


# --- executions: the default run ------------------------------------------------------------------------


def test_default_run_tunes_then_trains_on_two_instances_with_torchrun(pipeline, settings):
    result = succeeded(pipeline, {})
    assert result.states[-7:] == [
        "Tune hyperparameters",
        "Train",
        "Quality gate",
        "Record model metrics",
        "Register model",
        "Passed quality gate?",
        "Done",
    ]
    train = result.call("Train")
    hp = train["HyperParameters"]
    assert hp["sagemaker_torch_distributed_enabled"] == "true"
    assert json.loads(hp["sagemaker_program"]) == "train.py"
    assert re.fullmatch(
        r"s3://cdk-[a-z0-9]+-assets-\d{12}-[a-z0-9-]+/[0-9a-f]{64}\.gz", json.loads(hp["sagemaker_submit_directory"])
    )
    tune = result.call("Tune hyperparameters")
    best = pipeline.sagemaker.described(tune["HyperParameterTuningJobName"])["BestTrainingJob"]
    assert (hp["learning_rate"], hp["batch_size"]) == (
        best["TunedHyperParameters"]["learning_rate"],
        best["TunedHyperParameters"]["batch_size"],
    ), "the tuned values win over the defaults"
    assert json.loads(hp["backbone"]) == "resnet50" and hp["epochs"] == str(settings.training_epochs)
    assert train["ResourceConfig"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50}
    assert [c["ChannelName"] for c in train["InputDataConfig"]] == ["training", "pretrained"]
    assert train["VpcConfig"]["Subnets"] and train["VpcConfig"]["SecurityGroupIds"]
    assert train["OutputDataConfig"]["KmsKeyId"].startswith("arn:aws:kms:")
    static = tune["TrainingJobDefinition"]["StaticHyperParameters"]
    assert "learning_rate" not in static and "batch_size" not in static
    assert static["epochs"] == str(settings.tuning_epochs) and "sagemaker_torch_distributed_enabled" not in static
    assert json.loads(static["quantize"]) == "none"  # trials never write an int8 model
    assert "quantize" not in hp  # inference_precision=auto: nor does the final job
    package = registered(pipeline, result)
    assert result.output == {
        "model_package_arn": package["ModelPackageArn"],
        "approval_status": "PendingManualApproval",
        "model_data_url": pipeline.sagemaker.described(train["TrainingJobName"])["ModelArtifacts"]["S3ModelArtifacts"],
        "training_job": train["TrainingJobName"],
        "tuning_job": tune["HyperParameterTuningJobName"],
        "metrics": {"valid_loss": 0.52, "test_accuracy": 0.81},
    }
    assert set(result.output) == OUTPUT_KEYS


def test_job_names_fit_sagemakers_limits_and_checkpoints_are_per_run(pipeline):
    result = succeeded(pipeline, {})
    tuning_name = result.call("Tune hyperparameters")["HyperParameterTuningJobName"]
    training_name = result.call("Train")["TrainingJobName"]
    run_id = f"[0-9a-f]{{{RUN_ID_LENGTH}}}"
    attempt = f"[0-9a-f]{{{ATTEMPT_ID_LENGTH}}}"
    assert re.fullmatch(rf"dogbreeds-hpo-{run_id}-{attempt}", tuning_name) and len(tuning_name) <= 32
    assert re.fullmatch(rf"dogbreeds-train-{run_id}-{attempt}", training_name)
    run = training_name.split("-")[2]
    assert tuning_name.split("-")[2] == run
    assert result.call("Train")["CheckpointConfig"] == {
        "S3Uri": f"s3://{bucket(pipeline)}/checkpoints/{run}/",
        "LocalPath": "/opt/ml/checkpoints",
    }


# --- executions: head-only tuning shares one feature extraction ------------------------------------------

HEAD_ONLY = {"hyperparameters": {"trainable": "head"}}


def test_head_only_tuning_extracts_the_features_once_before_the_trials(pipeline):
    result = succeeded(pipeline, HEAD_ONLY)
    start = result.states.index("Tune?")
    assert result.states[start : start + 4] == ["Tune?", "Extract features", "Tune hyperparameters", "Train"]
    extract, tune, train = (result.call(state) for state in ("Extract features", "Tune hyperparameters", "Train"))
    trials = tune["TrainingJobDefinition"]
    store = f"s3://{bucket(pipeline)}/features/"
    hp = extract["HyperParameters"]
    assert hp["extract_features"] == "true" and json.loads(hp["feature_store"]) == store
    # The trials' values, channels, image and instance type: the key they compute is the one the step stored.
    assert {k: v for k, v in hp.items() if k != "extract_features"} == trials["StaticHyperParameters"]
    assert extract["InputDataConfig"] == trials["InputDataConfig"] == train["InputDataConfig"]
    assert extract["AlgorithmSpecification"] == {
        "TrainingImage": trials["AlgorithmSpecification"]["TrainingImage"],
        "TrainingInputMode": "File",
    }
    assert extract["ResourceConfig"] == trials["ResourceConfig"]
    assert extract["ResourceConfig"]["InstanceCount"] == 1
    assert extract["OutputDataConfig"] == trials["OutputDataConfig"]
    assert extract["VpcConfig"] == trials["VpcConfig"]
    run = train["TrainingJobName"].split("-")[2]
    assert re.fullmatch(rf"dogbreeds-features-{run}-[0-9a-f]{{{ATTEMPT_ID_LENGTH}}}", extract["TrainingJobName"])
    # The final job reads them too (when its instances compute them the same way); the registry records only
    # what defines the model.
    assert json.loads(train["HyperParameters"]["feature_store"]) == store
    metadata = registered(pipeline, result)["CustomerMetadataProperties"]
    assert metadata["hp.trainable"] == "head" and not any("feature" in key for key in metadata)


@pytest.mark.parametrize(
    ("execution_input", "extracts", "shares"),
    [
        ({}, False, False),  # the default, last_block: the backbone trains, nothing to share
        ({"hyperparameters": {"trainable": "all"}}, False, False),
        ({"hyperparameters": {"trainable": "head", "augment": True}}, False, False),  # features computed every epoch
        ({"hyperparameters": {"trainable": "head", "augment": "auto"}}, True, True),
        ({"hyperparameters": {"trainable": "head", "augment": False}}, True, True),
        ({"tune": False, "hyperparameters": {"trainable": "head"}}, False, True),  # no trials; the final job reads
    ],
)
def test_features_are_shared_only_where_the_runs_cache_them(pipeline, execution_input, extracts, shares):
    result = succeeded(pipeline, execution_input)
    assert ("Extract features" in result.states) is extracts
    assert ("feature_store" in result.call("Train")["HyperParameters"]) is shares
    if execution_input.get("tune", True):
        static = result.call("Tune hyperparameters")["TrainingJobDefinition"]["StaticHyperParameters"]
        assert ("feature_store" in static) is shares


def toolkit_arguments(hyperparameters: dict[str, str]) -> argparse.Namespace:
    """train.py's options as the SageMaker training toolkit passes the job's hyperparameters: each value
    JSON-decoded, then ``--name str(value)``; the toolkit's own sagemaker_* values are not passed."""
    argv = []
    for name, value in hyperparameters.items():
        if not name.startswith("sagemaker_"):
            argv += [f"--{name}", str(json.loads(value))]
    return train.get_args_parser().parse_args(argv)


def test_the_extraction_job_and_the_trials_open_the_same_s3_store_in_train_py(pipeline):
    result = succeeded(pipeline, HEAD_ONLY)
    extraction = toolkit_arguments(result.call("Extract features")["HyperParameters"])
    static = result.call("Tune hyperparameters")["TrainingJobDefinition"]["StaticHyperParameters"]
    trial = toolkit_arguments(static | {"learning_rate": "0.01", "batch_size": "64"})
    assert extraction.extract_features is True and trial.extract_features is False
    stores = [
        train.open_feature_store(args, cache=train.augmentation_and_caching(args)[1]) for args in (extraction, trial)
    ]
    assert [(store.bucket, store.prefix) for store in stores] == [(bucket(pipeline), "features/")] * 2
    for name in ("backbone", "image_size", "amp", "channels_last", "seed", "pretrained", "resize_size"):
        assert getattr(extraction, name) == getattr(trial, name), name  # what the key is made of


def test_a_failed_feature_extraction_ends_the_run_before_tuning(pipeline):
    pipeline.sagemaker.training_outcomes.append(
        JobOutcome(status="Failed", failure_reason="AlgorithmError: cannot store the extracted features")
    )
    result = pipeline.run(HEAD_ONLY)
    assert (result.status, result.error) == ("FAILED", "JobFailed")
    name = result.call("Extract features")["TrainingJobName"]
    assert result.cause == f"SageMaker job {name} ended Failed: AlgorithmError: cannot store the extracted features"
    assert result.states[-2:] == ["Extract features", "Job failed"]
    assert not registrations_by(pipeline, result), "a failed job registers nothing"


def test_a_refused_feature_extraction_is_retried_with_a_new_job_name(pipeline):
    pipeline.sagemaker.training_outcomes.extend([JobOutcome(refuse="ResourceLimitExceeded"), JobOutcome()])
    result = succeeded(pipeline, HEAD_ONLY)
    names = [call["TrainingJobName"] for call in result.calls_of("Extract features")]
    assert len(names) == 2 and len(set(names)) == 2
    assert "Tune hyperparameters" in result.states


# --- executions: the model registry ------------------------------------------------------------------


def test_a_model_that_passes_is_registered_for_manual_approval_with_its_lineage(pipeline, settings, deployment):
    result = succeeded(pipeline, {"tune": False})
    package = registered(pipeline, result)
    train = result.call("Train")
    job = train["TrainingJobName"]
    model = pipeline.sagemaker.described(job)["ModelArtifacts"]["S3ModelArtifacts"]
    assert package["ModelPackageGroupName"] == settings.names.model_package_group
    assert package["ModelPackageArn"] == result.output["model_package_arn"]
    assert package["ModelPackageArn"].startswith(
        f"arn:aws:sagemaker:{deployment.region}:{deployment.account}:model-package/{settings.names.model_package_group}/"
    )
    assert package["ModelApprovalStatus"] == result.output["approval_status"] == "PendingManualApproval"
    assert package["ModelPackageDescription"] == (
        f"Passed the quality gate: test_accuracy 0.81 reaches {settings.quality_gate_min_test_accuracy} "
        f"(training job {job})."
    )
    (container,) = package["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"] == model == result.output["model_data_url"]
    assert container["Environment"] == model_environment(settings, deployment.region)
    assert re.fullmatch(
        rf"\d{{12}}\.dkr\.ecr\.{deployment.region}\.amazonaws\.com/pytorch-inference:"
        rf"{re.escape(settings.inference_framework_version)}-gpu-py3\d+",
        container["Image"],
    )
    specification = package["InferenceSpecification"]
    assert specification["SupportedContentTypes"] == list(SERVING_CONTENT_TYPES)
    assert specification["SupportedResponseMIMETypes"] == ["application/json"]
    assert specification["SupportedRealtimeInferenceInstanceTypes"][0] == settings.endpoint_instance_type
    assert package["CustomerMetadataProperties"] == {
        "training_job": job,
        "tuning_job": "none",
        "dataset": f"s3://{bucket(pipeline)}/datasets/dogImages/",
        "code": json.loads(train["HyperParameters"]["sagemaker_submit_directory"]),
        "test_accuracy": "0.81",
        "valid_loss": "0.52",
        "hp.learning_rate": str(settings.training_learning_rate),
        "hp.batch_size": str(settings.training_batch_size),
        "hp.backbone": settings.training_backbone,
        "hp.trainable": settings.training_trainable,
        "hp.patience": str(settings.training_patience),
        "hp.epochs": str(settings.training_epochs),
    }
    assert package["MetadataProperties"] == {"GeneratedBy": result.arn}


def test_the_metrics_object_is_encrypted_with_the_stack_key_beside_the_model(pipeline, settings, deployment):
    result = succeeded(pipeline, {"tune": False})
    package = registered(pipeline, result)
    job = result.call("Train")["TrainingJobName"]
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"] == f"s3://{bucket(pipeline)}/models/{job}/model-quality.json"
    head, body = metrics_object(pipeline, package)
    stack_key = result.call("Train")["OutputDataConfig"]["KmsKeyId"]
    assert stack_key.startswith(f"arn:aws:kms:{deployment.region}:{deployment.account}:key/")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", stack_key)
    assert head["ContentType"] == "application/json"
    assert body == {
        "multiclass_classification_metrics": {"accuracy": {"value": 0.81}},
        "metrics": {"valid_loss": 0.52, "test_accuracy": 0.81},
        "quality_gate": {
            "metric": "test_accuracy",
            "threshold": settings.quality_gate_min_test_accuracy,
            "verdict": "passed",
        },
        "training_job": job,
        "tuning_job": None,
        "model_data_url": result.output["model_data_url"],
        "hyperparameters": {
            "learning_rate": settings.training_learning_rate,
            "batch_size": settings.training_batch_size,
            "backbone": settings.training_backbone,
            "trainable": settings.training_trainable,
            "patience": settings.training_patience,
            "epochs": settings.training_epochs,
        },
    }


def test_a_tuned_model_carries_its_tuning_job_and_the_tuned_values(pipeline):
    result = succeeded(pipeline, {})
    package = registered(pipeline, result)
    tune = result.call("Tune hyperparameters")["HyperParameterTuningJobName"]
    tuned = pipeline.sagemaker.described(tune)["BestTrainingJob"]["TunedHyperParameters"]
    metadata = package["CustomerMetadataProperties"]
    assert metadata["tuning_job"] == tune == result.output["tuning_job"]
    assert (metadata["hp.learning_rate"], metadata["hp.batch_size"]) == (
        tuned["learning_rate"],
        tuned["batch_size"],
    )
    assert metrics_object(pipeline, package)[1]["tuning_job"] == tune


def test_each_execution_registers_one_new_version_with_its_own_client_token(pipeline, settings):
    before = len(packages(pipeline, settings.names.model_package_group))
    first = succeeded(pipeline, {"tune": False})
    second = succeeded(pipeline, {"tune": False})
    after = packages(pipeline, settings.names.model_package_group)
    assert len(after) == before + 2
    tokens = [run.call("Register model")["ClientToken"] for run in (first, second)]
    assert all(re.fullmatch(f"[0-9a-f]{{{CLIENT_TOKEN_LENGTH}}}", token) for token in tokens)
    assert tokens[0] != tokens[1]
    versions = [p["ModelPackageVersion"] for p in after[-2:]]
    assert versions[1] == versions[0] + 1


def test_the_request_checks_bite_on_what_sagemaker_refuses():
    # What the pipeline must never send: a metadata value with a quote (as a JSON-encoded hyperparameter has),
    # or one longer than 256 characters.
    request = {
        "ModelPackageGroupName": "dogbreeds-models",
        "CustomerMetadataProperties": {"hp.backbone": '"resnet50"', "code": "s3://b/" + "x" * 256},
    }
    problems = service_model_problems("sagemaker", "CreateModelPackage", request)
    assert any("hp.backbone" in p and "does not match" in p for p in problems), problems
    assert any("[code]" in p and "longer than 256" in p for p in problems), problems


def test_a_request_that_breaks_the_api_is_refused_and_the_run_ends_registration_failed(pipeline):
    broken = pipeline.definition
    register = broken["States"]["Register model"]["Arguments"]
    register["ModelPackageDescription"] = "{% $pad('', 1025, 'x') %}"
    sfn = pipeline.client("stepfunctions")
    pipeline.machine_arns["broken"] = sfn.create_state_machine(
        name="broken", definition=json.dumps(broken), roleArn=pipeline.role_arn
    )["stateMachineArn"]
    try:
        result = pipeline.run({"tune": False}, machine="broken")
        assert (result.status, result.error) == ("FAILED", "RegistrationFailed")
        assert "ModelPackageDescription" in result.cause and "longer than 1024" in result.cause
        assert len(result.calls_of("Register model")) == 4, "the first call and three retries"
        assert pipeline.sdk.invalid, "the refused requests are recorded"
    finally:
        pipeline.sdk.invalid.clear()
        del pipeline.machine_arns["broken"]


def test_without_tuning_the_defaults_train_and_the_tuning_job_is_null(pipeline, settings):
    result = succeeded(pipeline, {"tune": False})
    assert "Tune hyperparameters" not in result.states
    assert not any(resource == TUNING_SYNC for _, resource, _ in result.calls)
    hp = result.call("Train")["HyperParameters"]
    assert (hp["learning_rate"], hp["batch_size"]) == (
        str(settings.training_learning_rate),
        str(settings.training_batch_size),
    )
    assert result.output["tuning_job"] is None
    assert set(result.output) == OUTPUT_KEYS


# --- executions: the input's overrides -----------------------------------------------------------------


def test_input_overrides_instance_count_type_epochs_spot_and_hyperparameters(pipeline):
    result = succeeded(
        pipeline,
        {
            "tune": False,
            "instance_count": 4,
            "instance_type": "ml.p3.2xlarge",
            "epochs": 3,
            "use_spot": True,
            "hyperparameters": {"learning_rate": 0.05, "batch_size": 32, "backbone": "resnet34"},
        },
    )
    train = result.call("Train")
    assert train["ResourceConfig"]["InstanceCount"] == 4
    # ml.p3 has no NVMe storage: its EBS volume is encrypted with the stack key.
    assert train["ResourceConfig"]["VolumeKmsKeyId"] == train["OutputDataConfig"]["KmsKeyId"]
    assert train["EnableManagedSpotTraining"] is True
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400, "MaxWaitTimeInSeconds": 28800}
    hp = train["HyperParameters"]
    assert (hp["learning_rate"], hp["batch_size"], hp["backbone"], hp["epochs"]) == ("0.05", "32", '"resnet34"', "3")


def test_without_spot_there_is_no_wait_time(pipeline):
    train = succeeded(pipeline, {"tune": False, "use_spot": False}).call("Train")
    assert train["EnableManagedSpotTraining"] is False
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 14400}


@pytest.mark.parametrize(
    ("instance_type", "keyed"), [("ml.g5.2xlarge", False), ("ml.r5d.xlarge", False), ("ml.c5.4xlarge", True)]
)
def test_nvme_instance_types_get_no_volume_key(pipeline, instance_type, keyed):
    train = succeeded(pipeline, {"tune": False, "instance_type": instance_type}).call("Train")
    assert ("VolumeKmsKeyId" in train["ResourceConfig"]) is keyed


def test_pretrained_channel_only_when_the_backbone_weights_are_there(pipeline):
    stock(pipeline, weights=("resnet34-b627a593.pth",))
    train = succeeded(pipeline, {"tune": False}).call("Train")
    assert [c["ChannelName"] for c in train["InputDataConfig"]] == ["training"]
    other = succeeded(pipeline, {"tune": False, "hyperparameters": {"backbone": "resnet34"}}).call("Train")
    assert [c["ChannelName"] for c in other["InputDataConfig"]] == ["training", "pretrained"]


# --- executions: refused before any job ---------------------------------------------------------------

BAD_INPUTS = [
    ([], 'The input must be a JSON object, for example {"tune": false, "epochs": 5}.'),
    ({"epochs": 0}, "epochs must be a whole number from 1 to 1000."),
    ({"epochs": 2.5}, "epochs must be a whole number from 1 to 1000."),
    ({"instance_count": 21}, "instance_count must be a whole number from 1 to 20."),
    (
        {"instance_type": "ml.g4dn.xlarg"},
        "instance_type must be a SageMaker training instance type such as ml.g4dn.xlarge (one of the "
        f"{len(training_instance_types())} in the SageMaker API the stack was built with).",
    ),
    ({"tune": "no"}, "tune must be true or false."),
    ({"tune": False, "hyperparameters": {"augment": "yes"}}, 'hyperparameters.augment must be true, false or "auto".'),
    (
        {"tunes": False},
        "Unknown field(s) tunes; accepted: tune, instance_count, instance_type, epochs, use_spot, hyperparameters.",
    ),
    (
        {"tune": False, "hyperparameters": {"lr": 0.1}},
        "Unknown hyperparameter(s) lr; accepted: learning_rate, batch_size, backbone, trainable, patience, seed, "
        "image_size, amp, channels_last, augment, quantize.",
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
]


@pytest.mark.parametrize(("execution_input", "cause"), BAD_INPUTS)
def test_bad_input_fails_before_any_job_with_a_clear_cause(pipeline, execution_input, cause):
    result = pipeline.run(execution_input)
    assert (result.status, result.error) == ("FAILED", "InvalidInput")
    assert result.cause == f"The execution input was refused: {cause}"
    assert result.calls == [], "no task ran"


def test_every_training_instance_type_of_the_api_is_accepted(pipeline):
    assert "ml.p4d.24xlarge" in training_instance_types()
    result = succeeded(pipeline, {"tune": False, "instance_type": "ml.p4d.24xlarge"})
    assert result.call("Train")["ResourceConfig"]["InstanceType"] == "ml.p4d.24xlarge"


# --- executions: the data set --------------------------------------------------------------------------


def test_a_complete_data_set_passes_its_check(pipeline):
    # $filter of nothing is undefined; Step Functions fails a field that evaluates to undefined.
    result = succeeded(pipeline, {"tune": False})
    assert result.states[4:7] == ["List data set", "Data set present?", "List pretrained weights"]


@pytest.mark.parametrize(
    ("splits", "missing"),
    [(("train/",), "valid/, test/"), (("train/", "valid/"), "test/"), ((), "train/, valid/, test/")],
)
def test_missing_data_set_splits_fail_with_what_to_do(pipeline, splits, missing):
    stock(pipeline, splits=splits)
    result = pipeline.run({})
    assert (result.status, result.error) == ("FAILED", "MissingDataSet")
    assert result.cause == (
        f"s3://{bucket(pipeline)}/datasets/dogImages/ lacks {missing}: upload the dogImages data set first "
        "(dogbreeds upload-data), with train/, valid/ and test/ folders."
    )
    assert not any(resource in (TRAINING_SYNC, TUNING_SYNC) for _, resource, _ in result.calls)


# --- executions: the quality gate ---------------------------------------------------------------------


def test_a_model_below_the_gate_is_registered_rejected_with_its_metrics_then_the_run_fails(pipeline, settings):
    pipeline.sagemaker.training_outcomes.append(JobOutcome(metrics={"valid_loss": 1.9, "test_accuracy": 0.41}))
    result = quality_gate_failed(pipeline, {"tune": False})
    package = registered(pipeline, result)
    job = result.call("Train")["TrainingJobName"]
    assert result.cause == (
        f"test_accuracy 0.41 is below the quality gate {settings.quality_gate_min_test_accuracy} (setting "
        f"quality_gate_min_test_accuracy); the model is registered as {package['ModelPackageArn']}, Rejected, "
        "and will not be served."
    )
    assert result.states[-4:] == [
        "Record model metrics",
        "Register model",
        "Passed quality gate?",
        "Below quality gate",
    ]
    assert package["ModelApprovalStatus"] == "Rejected"
    assert package["ModelPackageDescription"] == (
        f"Rejected by the quality gate (test_accuracy 0.41 is below {settings.quality_gate_min_test_accuracy}, "
        f"training job {job}): registered for the record, never to be served."
    )
    metadata = package["CustomerMetadataProperties"]
    assert (metadata["test_accuracy"], metadata["valid_loss"], metadata["training_job"]) == ("0.41", "1.9", job)
    head, body = metrics_object(pipeline, package)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert body["multiclass_classification_metrics"] == {"accuracy": {"value": 0.41}}
    assert body["quality_gate"]["verdict"] == "below"


@pytest.mark.parametrize("final_metrics", [{"valid_loss": 0.5}, {}], ids=["no test metric", "no metric at all"])
def test_a_model_with_no_test_metric_is_registered_rejected_then_the_run_fails(pipeline, final_metrics):
    pipeline.sagemaker.training_outcomes.append(JobOutcome(metrics=final_metrics))
    result = quality_gate_failed(pipeline, {"tune": False})
    package = registered(pipeline, result)
    name = result.call("Train")["TrainingJobName"]
    assert result.cause == (
        f"Training job {name} reported no test_accuracy metric, so the quality gate cannot pass; its log shows "
        f"why the test evaluation did not run. The model is registered as {package['ModelPackageArn']} (Rejected)."
    )
    assert result.states[-1] == "No test metric"
    assert package["ModelApprovalStatus"] == "Rejected"
    metadata = package["CustomerMetadataProperties"]
    assert metadata["test_accuracy"] == "none"
    assert metadata["valid_loss"] == ("0.5" if final_metrics else "none")
    _, body = metrics_object(pipeline, package)
    assert body["multiclass_classification_metrics"] == {}
    assert body["metrics"] == final_metrics
    assert body["quality_gate"]["verdict"] == "missing"


def test_no_run_ever_touches_the_approved_package_parameter(pipeline, settings):
    pipeline.sagemaker.training_outcomes.append(JobOutcome(metrics={"test_accuracy": 0.2}))
    quality_gate_failed(pipeline, {"tune": False})
    succeeded(pipeline, {"tune": False})
    parameter = pipeline.client("ssm").get_parameter(Name=settings.names.approved_package_parameter)["Parameter"]
    assert parameter["Value"] == NOT_APPROVED, "only the approval recorder writes it"


# --- executions: failures, retries and redrives -------------------------------------------------------


def test_a_failed_training_job_ends_the_run_with_its_reason_and_is_not_rerun(pipeline):
    pipeline.sagemaker.training_outcomes.append(
        JobOutcome(status="Failed", failure_reason="AlgorithmError: data set check failed")
    )
    result = pipeline.run({"tune": False})
    (train,) = result.calls_of("Train")
    assert (result.status, result.error) == ("FAILED", "JobFailed")
    assert (
        result.cause == f"SageMaker job {train['TrainingJobName']} ended Failed: AlgorithmError: data set check failed"
    )
    assert result.states[-2:] == ["Train", "Job failed"]
    assert not result.calls_of("Register model") and not result.calls_of("Record model metrics")
    assert not registrations_by(pipeline, result), "a failed job registers nothing"


def test_a_failed_tuning_job_ends_the_run_before_training(pipeline):
    pipeline.sagemaker.tuning_outcomes.append(JobOutcome(status="Failed", failure_reason="No training job succeeded"))
    result = pipeline.run({})
    assert (result.status, result.error) == ("FAILED", "JobFailed")
    name = result.call("Tune hyperparameters")["HyperParameterTuningJobName"]
    assert result.cause == f"SageMaker job {name} ended Failed: No training job succeeded"
    assert "Train" not in result.states
    assert not registrations_by(pipeline, result), "a failed job registers nothing"


def test_a_full_quota_is_waited_out_with_a_new_job_name_for_each_attempt(pipeline):
    pipeline.sagemaker.training_outcomes.extend(
        [JobOutcome(refuse="ResourceLimitExceeded"), JobOutcome(refuse="ResourceLimitExceeded"), JobOutcome()]
    )
    result = succeeded(pipeline, {"tune": False})
    names = [call["TrainingJobName"] for call in result.calls_of("Train")]
    assert len(names) == 3 and len(set(names)) == 3, names
    checkpoints = {call["CheckpointConfig"]["S3Uri"] for call in result.calls_of("Train")}
    assert len(checkpoints) == 1, "each attempt resumes from the run's checkpoints"
    assert len(pipeline.retry_intervals) == 2 and all(0 <= s <= 1800 for s in pipeline.retry_intervals)


def test_a_refusal_that_outlasts_the_retries_is_reported(pipeline):
    pipeline.sagemaker.training_outcomes.extend([JobOutcome(refuse="ValidationException")] * 4)
    result = pipeline.run({"tune": False})
    assert (result.status, result.error) == ("FAILED", "JobFailed")
    assert len(result.calls_of("Train")) == 4, "the first call and three retries"
    assert result.cause.startswith("SageMaker.AmazonSageMakerException: SageMaker refused dogbreeds-train-")
    assert "Error Code: ValidationException" in result.cause


def test_a_redrive_starts_a_new_job_that_resumes_from_the_runs_checkpoints(pipeline):
    pipeline.sagemaker.training_outcomes.extend([JobOutcome(status="Stopped", failure_reason="Spot capacity lost")])
    failed = pipeline.run({"tune": False})
    assert failed.status == "FAILED"
    redriven = succeeded(pipeline, {"tune": False}, redrive_of=failed)
    first, second = failed.call("Train"), redriven.call("Train")
    assert first["TrainingJobName"] != second["TrainingJobName"], "SageMaker would refuse the same name again"
    assert first["CheckpointConfig"] == second["CheckpointConfig"]


def test_each_execution_gets_its_own_job_names(pipeline):
    first = succeeded(pipeline, {"tune": False}).call("Train")["TrainingJobName"]
    second = succeeded(pipeline, {"tune": False}).call("Train")["TrainingJobName"]
    assert first.split("-")[2] != second.split("-")[2]


# --- the input checks accept exactly what train.py accepts (training/hyperparameters.py) --------------------


def _edge_values(kind) -> tuple[list, object]:
    """Values train.py accepts at the edges of ``kind``, and one it refuses."""
    if hasattr(kind, "values"):
        return list(kind.values), "not-" + kind.values[0]
    if hasattr(kind, "low") and isinstance(kind.low, int):
        return [kind.low, kind.high], kind.high + 1
    if hasattr(kind, "low"):
        return [kind.low + 1e-6, kind.high - 1e-6], kind.high
    return ([True, False, "auto"] if kind.accepts("auto") else [True, False]), "yes"


def test_input_checks_accept_exactly_what_train_py_accepts(pipeline):
    train = training_hyperparameters()
    edges = {name: _edge_values(train.HYPERPARAMETERS[name].kind) for name in train.PIPELINE_HYPERPARAMETERS}
    # Every accepted edge value reaches the training job: run i sets each hyperparameter to its i-th edge value.
    for i in range(max(len(accepted) for accepted, _ in edges.values())):
        given = {name: accepted[min(i, len(accepted) - 1)] for name, (accepted, _) in edges.items()}
        assert all(train.HYPERPARAMETERS[name].kind.accepts(value) for name, value in given.items()), given
        hp = succeeded(pipeline, {"tune": False, "hyperparameters": given}).call("Train")["HyperParameters"]
        for name, value in given.items():
            expected = json.dumps(value) if isinstance(value, str | bool) else None
            assert hp[name] == expected if expected else float(hp[name]) == value, (name, value, hp[name])
    # One value just outside each: all refused at once, each with train.py's own wording.
    refused = {name: outside for name, (_, outside) in edges.items()}
    assert not any(train.HYPERPARAMETERS[name].kind.accepts(value) for name, value in refused.items())
    result = pipeline.run({"tune": False, "hyperparameters": refused})
    assert (result.status, result.error) == ("FAILED", "InvalidInput")
    messages = [f"hyperparameters.{name} must be {train.HYPERPARAMETERS[name].kind.accepted}." for name in refused]
    assert result.cause == "The execution input was refused: " + " ".join(messages)


def test_an_int8_endpoint_has_the_final_job_quantize(settings):
    from dataclasses import fields

    from dogbreeds_stacks import training_pipeline

    resources = training_pipeline.PipelineResources(
        **{
            f.name: [] if "list" in str(f.type) else {} if "dict" in str(f.type) else "x"
            for f in fields(training_pipeline.PipelineResources)
        }
    )
    int8 = settings.replace(endpoint_instance_type="ml.c7i.xlarge", inference_precision="int8")
    assert training_pipeline._config(int8, resources)["defaults"]["hyperparameters"]["quantize"] == "int8"
    for other in ("auto", "fp32", "bf16"):
        cpu = settings.replace(endpoint_instance_type="ml.c7i.xlarge", inference_precision=other)
        assert "quantize" not in training_pipeline._config(cpu, resources)["defaults"]["hyperparameters"]
