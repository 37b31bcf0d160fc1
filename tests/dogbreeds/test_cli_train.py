"""train: start the state machine (moto), follow it (Stubber: Step Functions history, SageMaker, Logs)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import boto3
import pytest

from dogbreeds.ops import training
from dogbreeds.ops.errors import EXIT_FAILED, EXIT_INTERRUPTED
from tests.dogbreeds.fakes import ACCOUNT, NAMES, REGION, package_arn

STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{NAMES.state_machine}"
EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{NAMES.state_machine}:run-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TUNING_JOB = f"{NAMES.job_name_prefix}-hpo-0123456789ab"
TRIAL = f"{TUNING_JOB[:19]}-001-1a2b3c4d"
TRAINING_JOB = f"{NAMES.job_name_prefix}-train-0123456789ab"
MODEL = f"s3://bucket/models/{TRAINING_JOB}/output/model.tar.gz"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    """The follower sleeps between polls; here it only counts."""
    sleeps: list[float] = []
    monkeypatch.setattr(training, "pause", sleeps.append)
    return sleeps


# --- responses --------------------------------------------------------------------------------------


def execution(status: str, **extra) -> dict:
    return {
        "executionArn": EXECUTION,
        "stateMachineArn": STATE_MACHINE,
        "status": status,
        "startDate": T0,
        **extra,
    }


def history(*events: dict) -> dict:
    return {"events": [{"id": i, "timestamp": T0, **e} for i, e in enumerate(events, start=1)]}


def entered(name: str) -> dict:
    return {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": name}}


def scheduled(resource: str, **parameters) -> dict:
    return {
        "type": "TaskScheduled",
        "taskScheduledEventDetails": {
            "resourceType": "sagemaker",
            "resource": resource,
            "region": REGION,
            "parameters": json.dumps(parameters),
        },
    }


def training_job(name: str, status: str, secondary: str, message: str = "", **extra) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": MODEL},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 50},
        "StoppingCondition": {},
        "CreationTime": T0,
        "SecondaryStatusTransitions": [{"Status": secondary, "StartTime": T0, "StatusMessage": message}],
        **extra,
    }


def tuning_job(status: str, counters: dict, best: dict | None = None) -> dict:
    answer = {
        "HyperParameterTuningJobName": TUNING_JOB,
        "HyperParameterTuningJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:hyper-parameter-tuning-job/x",
        "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
        "HyperParameterTuningJobStatus": status,
        "CreationTime": T0,
        "TrainingJobStatusCounters": counters,
        "ObjectiveStatusCounters": {},
    }
    if best:
        answer["BestTrainingJob"] = best
    return answer


def trials(status: str) -> dict:
    return {
        "TrainingJobSummaries": [
            {
                "TrainingJobName": TRIAL,
                "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{TRIAL}",
                "CreationTime": T0,
                "TrainingJobStatus": status,
                "TunedHyperParameters": {"learning_rate": "0.01"},
            }
        ]
    }


def log_events(job: str, *lines: tuple[int, str]) -> dict:
    return {
        "events": [
            {"logStreamName": f"{job}/algo-1-1767225600", "timestamp": ts, "message": text, "eventId": f"{job}{ts}"}
            for ts, text in lines
        ]
    }


def logs_params(job: str, start: int) -> dict:
    return {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": job, "startTime": start}


# --- start ------------------------------------------------------------------------------------------


def test_no_follow_starts_the_state_machine_with_only_what_was_set(fake, run_cli):
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        name=NAMES.state_machine,
        definition=json.dumps({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/pipeline",
    )["stateMachineArn"]
    assert arn == STATE_MACHINE

    result = run_cli(
        "train", "--no-tune", "--instance-count", "3", "--instance-type", "ml.g5.xlarge", "--epochs", "5",
        "-H", "learning_rate=0.02", "--hyperparameter", "backbone=resnet34", "-H", "channels_last=true",
        "--spot", "--no-follow",
    )  # fmt: skip
    assert result.code == 0, result.err
    (started,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    given = json.loads(sfn.describe_execution(executionArn=started["executionArn"])["input"])
    assert given == {
        "tune": False,
        "instance_count": 3,
        "instance_type": "ml.g5.xlarge",
        "epochs": 5,
        "use_spot": True,
        "hyperparameters": {"learning_rate": 0.02, "backbone": "resnet34", "channels_last": True},
    }
    assert f"Started {started['executionArn']}" in result.out
    assert f"dogbreeds train --attach {started['name']}" in result.out
    assert "sagemaker" not in fake.created  # nothing followed


def test_no_options_start_with_an_empty_input(fake, run_cli):
    stub = fake.stub("stepfunctions")
    stub.add_response(
        "start_execution",
        {"executionArn": EXECUTION, "startDate": T0},
        {"stateMachineArn": STATE_MACHINE, "input": "{}"},
    )
    assert run_cli("train", "--no-follow").code == 0
    fake.assert_stubs_used()


# --- follow -----------------------------------------------------------------------------------------


def test_follows_tuning_and_training_to_the_model(fake, run_cli, no_sleep):
    sfn, sm, logs = fake.stub("stepfunctions"), fake.stub("sagemaker"), fake.stub("logs")
    start = [
        {"type": "ExecutionStarted"},
        {"type": "PassStateEntered", "stateEnteredEventDetails": {"name": "Configure"}},
        entered("Tune hyperparameters"),
        scheduled("createHyperParameterTuningJob.sync", HyperParameterTuningJobName=TUNING_JOB),
    ]
    then = [
        *start,
        {"type": "TaskSucceeded"},
        entered("Train"),
        scheduled("createTrainingJob.sync", TrainingJobName=TRAINING_JOB),
    ]
    history_params = {"executionArn": EXECUTION, "includeExecutionData": True}
    running = {"InProgress": 1, "Completed": 0}
    best = {
        "TrainingJobName": TRIAL,
        "TrainingJobArn": "arn:aws:sagemaker:eu-west-1:1:training-job/t",
        "CreationTime": T0,
        "TrainingJobStatus": "Completed",
        "TunedHyperParameters": {"learning_rate": "0.01"},
        "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "valid_loss", "Value": 0.81},
    }
    output = {"model_package_arn": package_arn(4), "approval_status": "PendingManualApproval", "model_data_url": MODEL,
              "training_job": TRAINING_JOB, "tuning_job": TUNING_JOB,
              "metrics": {"test_accuracy": 0.83, "valid_loss": 0.6}}  # fmt: skip

    sfn.add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0})
    # poll 1: tuning runs one trial
    sfn.add_response("describe_execution", execution("RUNNING"), {"executionArn": EXECUTION})
    sfn.add_response("get_execution_history", history(*start), history_params)
    sm.add_response("describe_hyper_parameter_tuning_job", tuning_job("InProgress", running))
    sm.add_response("list_training_jobs_for_hyper_parameter_tuning_job", trials("InProgress"))
    sm.add_response(
        "describe_training_job",
        training_job(TRIAL, "InProgress", "Training", "Training image download completed."),
        {"TrainingJobName": TRIAL},
    )
    logs.add_response(
        "filter_log_events",
        log_events(TRIAL, (1000, "INFO starting"), (2000, "epoch=1; train_loss=1.5; valid_loss=1.2;")),
        logs_params(TRIAL, 0),
    )
    # poll 2: tuning done; the final job is starting
    sfn.add_response("describe_execution", execution("RUNNING"))
    sfn.add_response("get_execution_history", history(*then))
    sm.add_response("describe_hyper_parameter_tuning_job", tuning_job("Completed", {"Completed": 1}, best))
    sm.add_response("list_training_jobs_for_hyper_parameter_tuning_job", trials("Completed"))
    sm.add_response("describe_training_job", training_job(TRIAL, "Completed", "Completed"))
    logs.add_response(  # the same last event again (startTime is inclusive), then a new one
        "filter_log_events",
        log_events(TRIAL, (2000, "epoch=1; train_loss=1.5; valid_loss=1.2;"), (3000, "valid_loss=0.81;")),
        logs_params(TRIAL, 2000),
    )
    sm.add_response("describe_training_job", training_job(TRAINING_JOB, "InProgress", "Downloading"))
    logs.add_response("filter_log_events", log_events(TRAINING_JOB), logs_params(TRAINING_JOB, 0))
    # poll 3: the execution has ended
    sfn.add_response("describe_execution", execution("SUCCEEDED", output=json.dumps(output), stopDate=T0))
    sfn.add_response("get_execution_history", history(*then, {"type": "ExecutionSucceeded"}))
    sm.add_response("describe_hyper_parameter_tuning_job", tuning_job("Completed", {"Completed": 1}, best))
    sm.add_response("list_training_jobs_for_hyper_parameter_tuning_job", trials("Completed"))
    sm.add_response("describe_training_job", training_job(TRIAL, "Completed", "Completed"))
    logs.add_response("filter_log_events", log_events(TRIAL), logs_params(TRIAL, 3000))
    sm.add_response("describe_training_job", training_job(TRAINING_JOB, "Completed", "Completed"))
    logs.add_response(
        "filter_log_events",
        log_events(TRAINING_JOB, (5000, "epoch=1; train_loss=0.9;"), (6000, "test_loss=0.6; test_accuracy=0.83;")),
    )
    # the last look after the end: the final job's late log lines
    sm.add_response("describe_training_job", training_job(TRAINING_JOB, "Completed", "Completed"))
    logs.add_response("filter_log_events", log_events(TRAINING_JOB), logs_params(TRAINING_JOB, 6000))

    result = run_cli("train", "--poll-seconds", "7")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    out = result.out
    expected_in_order = [
        f"Started {EXECUTION}",
        "state: Configure",
        "state: Tune hyperparameters",
        f"tuning job {TUNING_JOB}: InProgress (1 running, 0 completed, 0 failed, 0 stopped)",
        f"  trial {TRIAL}: InProgress / Training - Training image download completed.",
        f"  [{TRIAL} algo-1] epoch=1; train_loss=1.5; valid_loss=1.2;",
        "state: Train",
        f"tuning job {TUNING_JOB}: Completed (0 running, 1 completed, 0 failed, 0 stopped); best: {TRIAL} "
        "valid_loss=0.81",
        f"  trial {TRIAL}: Completed / Completed",
        f"  [{TRIAL} algo-1] valid_loss=0.81;",
        f"training job {TRAINING_JOB}: InProgress / Downloading",
        f"training job {TRAINING_JOB}: Completed / Completed",
        f"  [{TRAINING_JOB} algo-1] test_loss=0.6; test_accuracy=0.83;",
        "Execution SUCCEEDED. Model package version 4: PendingManualApproval",
        f"  package: {package_arn(4)}",
        f"  model: {MODEL}",
        f"  training job: {TRAINING_JOB} (tuning job {TUNING_JOB})",
        "  test_accuracy=0.83",
        "  valid_loss=0.6",
        "Waiting for approval: check it (dogbreeds models), then `dogbreeds approve 4` (or `dogbreeds reject 4 "
        f"--reason TEXT`); once approved, `npx cdk deploy {NAMES.stack('endpoint')}` serves it.",
    ]
    positions = [out.index(text) for text in expected_in_order]
    assert positions == sorted(positions)
    assert "INFO starting" not in out  # not a metric line
    assert out.count("epoch=1; train_loss=1.5; valid_loss=1.2;") == 1  # printed once, though read twice
    assert no_sleep == [7.0, 7.0, 5]


def test_a_failed_execution_exits_1_with_its_error_and_cause(fake, run_cli):
    sfn, sm, logs = fake.stub("stepfunctions"), fake.stub("sagemaker"), fake.stub("logs")
    cause = json.dumps({"TrainingJobName": TRAINING_JOB, "FailureReason": "AlgorithmError: CUDA out of memory"})
    events = [entered("Train"), scheduled("createTrainingJob.sync", TrainingJobName=TRAINING_JOB)]
    failed = training_job(TRAINING_JOB, "Failed", "Failed", FailureReason="AlgorithmError: CUDA out of memory")
    sfn.add_response("describe_execution", execution("FAILED", error="States.TaskFailed", cause=cause))
    sfn.add_response("get_execution_history", history(*events, {"type": "ExecutionFailed"}))
    sm.add_response("describe_training_job", failed)
    logs.add_client_error("filter_log_events", "ResourceNotFoundException", "The specified log group does not exist.")
    sm.add_response("describe_training_job", failed)
    logs.add_response("filter_log_events", log_events(TRAINING_JOB))

    result = run_cli("train", "--attach", "run-1")
    assert result.code == EXIT_FAILED
    fake.assert_stubs_used()
    assert f"Following {EXECUTION}" in result.out  # the name became the execution's ARN
    assert f"training job {TRAINING_JOB}: Failed / Failed - AlgorithmError: CUDA out of memory" in result.out
    assert result.err == (
        f"error: The training execution FAILED: States.TaskFailed: {TRAINING_JOB}: AlgorithmError: CUDA out of memory\n"
    )


def test_a_refused_input_shows_the_pipelines_cause(fake, run_cli):
    sfn = fake.stub("stepfunctions")
    cause = "The execution input was refused: hyperparameters.backbone must be one of resnet18, resnet34."
    sfn.add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0})
    sfn.add_response("describe_execution", execution("FAILED", error="InvalidInput", cause=cause))
    sfn.add_response("get_execution_history", history({"type": "ExecutionFailed"}))
    result = run_cli("train", "-H", "backbone=vgg16")
    assert result.code == EXIT_FAILED
    assert result.err == f"error: The training execution FAILED: InvalidInput: {cause}\n"


def test_ctrl_c_stops_following_not_the_execution(fake, run_cli, monkeypatch):
    sfn = fake.stub("stepfunctions")
    sfn.add_response("describe_execution", execution("RUNNING"))
    sfn.add_response("get_execution_history", history(entered("Train")))

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "pause", interrupt)
    result = run_cli("train", "--attach", EXECUTION)
    assert result.code == EXIT_INTERRUPTED
    assert "Stopped following; the execution goes on. Follow it again: dogbreeds train --attach run-1" in result.out
    assert f"aws stepfunctions stop-execution --execution-arn {EXECUTION}" in result.out


def test_an_approved_model_is_handed_to_the_recorder_then_the_deploy(fake, run_cli):
    sfn, sm, logs = fake.stub("stepfunctions"), fake.stub("sagemaker"), fake.stub("logs")
    output = {
        "model_package_arn": package_arn(5),
        "approval_status": "Approved",
        "model_data_url": MODEL,
        "training_job": TRAINING_JOB,
        "tuning_job": None,
        "metrics": {"test_accuracy": 0.9},
    }
    events = [entered("Train"), scheduled("createTrainingJob.sync", TrainingJobName=TRAINING_JOB)]
    done = training_job(TRAINING_JOB, "Completed", "Completed")
    sfn.add_response("describe_execution", execution("SUCCEEDED", output=json.dumps(output), stopDate=T0))
    sfn.add_response("get_execution_history", history(*events, {"type": "ExecutionSucceeded"}))
    for _ in range(2):  # the poll, then the last look after the end
        sm.add_response("describe_training_job", done)
        logs.add_response("filter_log_events", log_events(TRAINING_JOB))

    result = run_cli("train", "--attach", "run-1")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    summary = result.out[result.out.index("Execution SUCCEEDED") :].splitlines()
    assert summary == [
        "Execution SUCCEEDED. Model package version 5: Approved",
        f"  package: {package_arn(5)}",
        f"  model: {MODEL}",
        f"  training job: {TRAINING_JOB}",  # no tuning job
        "  test_accuracy=0.9",
        f"Approved automatically (model_approval=auto): the approval recorder updates "
        f"{NAMES.approved_package_parameter} within seconds; then `npx cdk deploy {NAMES.stack('endpoint')}` serves "
        "it.",
    ]


def test_a_model_below_the_quality_gate_names_its_rejected_package(fake, run_cli):
    sfn = fake.stub("stepfunctions")
    cause = (
        "test_accuracy 0.41 is below the quality gate 0.6 (setting quality_gate_min_test_accuracy); the model is "
        f"registered as {package_arn(6)}, Rejected, and will not be served."
    )
    sfn.add_response("describe_execution", execution("FAILED", error="QualityGateFailed", cause=cause))
    sfn.add_response("get_execution_history", history({"type": "ExecutionFailed"}))
    result = run_cli("train", "--attach", "run-1")
    assert result.code == EXIT_FAILED
    assert result.err == (
        f"error: The training execution FAILED: QualityGateFailed: {cause} (dogbreeds models lists it)\n"
    )
