"""train: start the state machine (moto), follow it (Stubber: Step Functions history, SageMaker; moto: the jobs'
CloudWatch Logs streams and their output.tar.gz in S3), then the trials, the final metrics, the files, the model."""

from __future__ import annotations

import io
import json
import re
import tarfile
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from dogbreeds.ops import follow, results
from dogbreeds.ops.errors import EXIT_FAILED, EXIT_INTERRUPTED
from tests.dogbreeds.conftest import BUCKET
from tests.dogbreeds.fakes import ACCOUNT, NAMES, REGION, TrainingLogs, output_tar_gz, package_arn

STATE_MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{NAMES.state_machine}"
EXECUTION = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{NAMES.state_machine}:run-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TUNING_JOB = f"{NAMES.job_name_prefix}-hpo-0123456789ab"
TRIAL = f"{TUNING_JOB[:19]}-001-1a2b3c4d"
TRAINING_JOB = f"{NAMES.job_name_prefix}-train-0123456789ab"
MODEL = f"s3://{BUCKET}/models/{TRAINING_JOB}/output/model.tar.gz"
OUTPUT_KEY = f"models/{TRAINING_JOB}/output/output.tar.gz"
METRICS_JSON = json.dumps({"test": {"accuracy": 0.83}}).encode()
CURVES_PNG = b"\x89PNG\r\n\x1a\n(the curves)"


class Clock:
    """follow.pause and follow.now: a pause moves the clock on and runs what the test queued for it."""

    def __init__(self) -> None:
        self.now = T0 + timedelta(seconds=5)
        self.sleeps: list[float] = []
        self.actions: list = []

    def pause(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)
        if self.actions:
            self.actions.pop(0)()


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> Clock:
    fake_clock = Clock()
    monkeypatch.setattr(follow, "pause", fake_clock.pause)
    monkeypatch.setattr(follow, "now", lambda: fake_clock.now)
    return fake_clock


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
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/models/"},  # the pipeline's, with its slash
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
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "valid_loss"},
            "ResourceLimits": {"MaxParallelTrainingJobs": 2},
        },
        "HyperParameterTuningJobStatus": status,
        "CreationTime": T0,
        "TrainingJobStatusCounters": counters,
        "ObjectiveStatusCounters": {},
    }
    if best:
        answer["BestTrainingJob"] = best
    return answer


def trial(name: str, status: str, *, minutes: int = 10, objective: float | None = None, **extra) -> dict:
    """A HyperParameterTrainingJobSummary; it ran ``minutes`` unless it is still running."""
    summary = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}",
        "CreationTime": T0,
        "TrainingStartTime": T0 + timedelta(minutes=1),
        "TrainingJobStatus": status,
        "TunedHyperParameters": {"learning_rate": "0.01", "batch_size": "64"},
        **extra,
    }
    if status != "InProgress":
        summary["TrainingEndTime"] = T0 + timedelta(minutes=1 + minutes)
    if objective is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": "Minimize",
            "MetricName": "valid_loss",
            "Value": objective,
        }
        summary["ObjectiveStatus"] = "Succeeded"
    return summary


def best_of(summary: dict) -> dict:
    """The tuning job's BestTrainingJob: the trial's summary."""
    return {k: v for k, v in summary.items() if k != "ObjectiveStatus"}


def upload_output(files: dict[str, bytes], key: str = OUTPUT_KEY) -> None:
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=key, Body=output_tar_gz(files))


def rows_after(out: str, title: str) -> list[list[str]]:
    """A plain-text table's rows (header first) after its title, cells split on two or more spaces."""
    lines = out[out.index(title) :].splitlines()[1:]
    rows = []
    for line in lines:
        if not line.startswith("  ") or not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


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


def test_no_follow_json_is_the_started_execution(fake, run_cli):
    fake.stub("stepfunctions").add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0})
    result = run_cli("train", "--no-follow", "--epochs", "2", "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)  # stdout is the JSON alone
    assert answer == {
        "execution_arn": EXECUTION,
        "name": "run-1",
        "input": {"epochs": 2},
        "console": answer["console"],
    }
    assert answer["console"].startswith(f"https://{REGION}.console.aws.amazon.com/states/")
    assert f"Started {EXECUTION}" in result.err


# --- follow -----------------------------------------------------------------------------------------


def test_follows_tuning_and_training_with_every_log_line(fake, bucket, run_cli, clock, tmp_path):
    sfn, sm = fake.stub("stepfunctions"), fake.stub("sagemaker")
    logs = TrainingLogs()
    logs.write(TRIAL, "algo-1", (1000, "INFO starting"), (2000, "epoch=1; train_loss=1.5; valid_loss=1.2;"))
    clock.actions = [  # what the jobs log while the CLI waits between polls
        lambda: logs.write(TRIAL, "algo-1", (3000, "valid_loss=0.81;")),
        lambda: logs.write(
            TRAINING_JOB, "algo-1", (5000, "epoch=1; train_loss=0.9;"), (6000, "test_loss=0.6; test_accuracy=0.83;")
        ),
    ]
    upload_output({"metrics.json": METRICS_JSON, "curves.png": CURVES_PNG})
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
    trials_params = {"HyperParameterTuningJobName": TUNING_JOB, "MaxResults": 100}
    done = trial(TRIAL, "Completed", objective=0.81)
    output = {"model_package_arn": package_arn(4), "approval_status": "PendingManualApproval", "model_data_url": MODEL,
              "training_job": TRAINING_JOB, "tuning_job": TUNING_JOB,
              "metrics": {"test_accuracy": 0.83, "valid_loss": 0.6}}  # fmt: skip

    sfn.add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0})
    # poll 1: tuning runs one trial
    sfn.add_response("describe_execution", execution("RUNNING"), {"executionArn": EXECUTION})
    sfn.add_response("get_execution_history", history(*start), history_params)
    sm.add_response("describe_hyper_parameter_tuning_job", tuning_job("InProgress", {"InProgress": 1, "Completed": 0}))
    sm.add_response(
        "list_training_jobs_for_hyper_parameter_tuning_job",
        {"TrainingJobSummaries": [trial(TRIAL, "InProgress")]},
        trials_params,
    )
    sm.add_response(
        "describe_training_job",
        training_job(TRIAL, "InProgress", "Training", "Training image download completed."),
        {"TrainingJobName": TRIAL},
    )
    # poll 2: tuning done; the final job is starting
    sfn.add_response("describe_execution", execution("RUNNING"))
    sfn.add_response("get_execution_history", history(*then))
    sm.add_response("describe_hyper_parameter_tuning_job", tuning_job("Completed", {"Completed": 1}, best_of(done)))
    sm.add_response("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": [done]})
    sm.add_response("describe_training_job", training_job(TRIAL, "Completed", "Completed"))
    sm.add_response("describe_training_job", training_job(TRAINING_JOB, "InProgress", "Downloading"))
    # poll 3: the execution has ended
    stopped = execution("SUCCEEDED", output=json.dumps(output), stopDate=T0 + timedelta(seconds=19))
    sfn.add_response("describe_execution", stopped)
    sfn.add_response("get_execution_history", history(*then, {"type": "ExecutionSucceeded"}))
    sm.add_response("describe_hyper_parameter_tuning_job", tuning_job("Completed", {"Completed": 1}, best_of(done)))
    sm.add_response("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": [done]})
    sm.add_response("describe_training_job", training_job(TRIAL, "Completed", "Completed"))
    sm.add_response("describe_training_job", training_job(TRAINING_JOB, "Completed", "Completed"))
    # the last look after the end: the final job's late log lines
    sm.add_response("describe_training_job", training_job(TRAINING_JOB, "Completed", "Completed"))

    result = run_cli("train", "--poll-seconds", "7", "--output-dir", str(tmp_path))
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    out = result.out
    expected_in_order = [
        f"Started {EXECUTION}",
        "state: Configure (0:00:05 elapsed)",
        "state: Tune hyperparameters (0:00:05 elapsed)",
        f"tuning job {TUNING_JOB}: InProgress (1 running, 0 completed, 0 failed, 0 stopped) (0:00:05 elapsed)",
        f"  trial {TRIAL}: InProgress / Training - Training image download completed. (0:00:05 elapsed)",
        f"  [{TRIAL} algo-1] INFO starting",  # every line, not only the metric lines
        f"  [{TRIAL} algo-1] epoch=1; train_loss=1.5; valid_loss=1.2;",
        "state: Train (0:00:12 elapsed)",
        f"tuning job {TUNING_JOB}: Completed (0 running, 1 completed, 0 failed, 0 stopped); best: {TRIAL} "
        "valid_loss=0.81",
        f"  trial {TRIAL}: Completed / Completed",
        f"  [{TRIAL} algo-1] valid_loss=0.81;",
        f"training job {TRAINING_JOB}: InProgress / Downloading (0:00:12 elapsed)",
        f"training job {TRAINING_JOB}: Completed / Completed (0:00:19 elapsed)",
        f"  [{TRAINING_JOB} algo-1] epoch=1; train_loss=0.9;",
        f"  [{TRAINING_JOB} algo-1] test_loss=0.6; test_accuracy=0.83;",
        f"Trials of tuning job {TUNING_JOB}, best first (valid_loss):",
        f"Final metrics of training job {TRAINING_JOB}:",
        f"Saved metrics.json and curves.png of training job {TRAINING_JOB} into {tmp_path.resolve() / TRAINING_JOB}/ "
        f"(from s3://{BUCKET}/{OUTPUT_KEY})",
        "Execution SUCCEEDED after 0:00:19. Model package version 4: PendingManualApproval",
        f"  package: {package_arn(4)}",
        f"  model: {MODEL}",
        f"  training job: {TRAINING_JOB} (tuning job {TUNING_JOB})",
        "Waiting for approval: check it (dogbreeds models), then `dogbreeds approve 4` (or `dogbreeds reject 4 "
        f"--reason TEXT`); once approved, `npx cdk deploy {NAMES.stack('endpoint')}` serves it.",
    ]
    positions = [out.index(text) for text in expected_in_order]
    assert positions == sorted(positions)
    assert out.count("epoch=1; train_loss=1.5; valid_loss=1.2;") == 1  # printed once, though read on every poll
    assert rows_after(out, "Trials of tuning job") == [
        ["TRIAL", "STATUS", "valid_loss", "batch_size", "learning_rate", "DURATION", "NOTE"],
        [TRIAL, "Completed", "0.81", "64", "0.01", "0:10:00", "best"],
    ]
    assert rows_after(out, "Final metrics of training job") == [
        ["METRIC", "VALUE"],
        ["test_accuracy", "0.83"],
        ["valid_loss", "0.6"],
    ]
    assert (tmp_path / TRAINING_JOB / "metrics.json").read_bytes() == METRICS_JSON
    assert (tmp_path / TRAINING_JOB / "curves.png").read_bytes() == CURVES_PNG
    assert clock.sleeps == [7.0, 7.0, 5]


def test_a_crash_shows_every_ranks_traceback_interleaved(fake, bucket, run_cli, tmp_path):
    """Both hosts of the final job crash; their lines come in the order they were logged, each after its host."""
    sfn, sm = fake.stub("stepfunctions"), fake.stub("sagemaker")
    logs = TrainingLogs()
    logs.write(
        TRAINING_JOB,
        "algo-2",
        (1001, "Traceback (most recent call last):"),
        (1003, '  File "/opt/ml/code/train.py", line 1010, in main'),
        (1005, "RuntimeError: NCCL communicator was aborted on rank 1"),
    )
    logs.write(
        TRAINING_JOB,
        "algo-1",
        (900, "epoch=1; train_loss=1.1; valid_loss=1.0;"),
        (1000, "Traceback (most recent call last):"),
        (1002, '  File "/opt/ml/code/train.py", line 1010, in main\n    loss.backward()'),  # one event, two lines
        (1004, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
    )
    reason = "AlgorithmError: ExecuteUserScriptError: exit code 1"
    cause = json.dumps({"TrainingJobName": TRAINING_JOB, "FailureReason": reason})
    events = [entered("Train"), scheduled("createTrainingJob.sync", TrainingJobName=TRAINING_JOB)]
    failed = training_job(
        TRAINING_JOB,
        "Failed",
        "Failed",
        FailureReason=reason,
        FinalMetricDataList=[{"MetricName": "valid_loss", "Value": 1.0, "Timestamp": T0}],
    )
    stopped = execution("FAILED", error="JobFailed", cause=cause, stopDate=T0 + timedelta(minutes=42))
    sfn.add_response("describe_execution", stopped)
    sfn.add_response("get_execution_history", history(*events, {"type": "ExecutionFailed"}))
    sm.add_response("describe_training_job", failed)
    sm.add_response("describe_training_job", failed)

    result = run_cli("train", "--attach", "run-1", "--output-dir", str(tmp_path))
    assert result.code == EXIT_FAILED
    fake.assert_stubs_used()
    prefix = f"  [{TRAINING_JOB} "
    logged = [line for line in result.out.splitlines() if line.startswith(prefix)]
    assert logged == [
        f"{prefix}algo-1] epoch=1; train_loss=1.1; valid_loss=1.0;",
        f"{prefix}algo-1] Traceback (most recent call last):",
        f"{prefix}algo-2] Traceback (most recent call last):",
        f'{prefix}algo-1]   File "/opt/ml/code/train.py", line 1010, in main',
        f"{prefix}algo-1]     loss.backward()",
        f'{prefix}algo-2]   File "/opt/ml/code/train.py", line 1010, in main',
        f"{prefix}algo-1] torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        f"{prefix}algo-2] RuntimeError: NCCL communicator was aborted on rank 1",
    ]
    assert f"training job {TRAINING_JOB}: Failed / Failed - {reason} (0:42:00 elapsed)" in result.out
    assert rows_after(result.out, "Final metrics of training job") == [["METRIC", "VALUE"], ["valid_loss", "1"]]
    assert (
        f"Training job {TRAINING_JOB} has no output.tar.gz (s3://{BUCKET}/{OUTPUT_KEY} not found): nothing to download."
    ) in result.out
    assert not (tmp_path / TRAINING_JOB).exists()
    assert result.err == (
        f"error: The training execution FAILED (after 0:42:00): JobFailed: {TRAINING_JOB}: {reason}\n"
    )


def test_logs_metrics_shows_only_the_metric_lines_and_none_reads_no_logs(fake, bucket, run_cli, tmp_path):
    logs = TrainingLogs()
    logs.write(TRAINING_JOB, "algo-1", (1, "Downloading input data"), (2, "epoch=1; train_loss=0.9; valid_loss=0.8;"))

    def stub_run() -> None:
        sfn, sm = fake.stub("stepfunctions"), fake.stub("sagemaker")
        events = [entered("Train"), scheduled("createTrainingJob.sync", TrainingJobName=TRAINING_JOB)]
        sfn.add_response("describe_execution", execution("FAILED", error="JobFailed", cause="stopped", stopDate=T0))
        sfn.add_response("get_execution_history", history(*events, {"type": "ExecutionFailed"}))
        for _ in range(2):
            sm.add_response("describe_training_job", training_job(TRAINING_JOB, "Stopped", "Stopped"))

    stub_run()
    metrics = run_cli("train", "--attach", "run-1", "--logs", "metrics", "--no-download")
    assert metrics.code == EXIT_FAILED
    assert f"  [{TRAINING_JOB} algo-1] epoch=1; train_loss=0.9; valid_loss=0.8;" in metrics.out
    assert "Downloading input data" not in metrics.out
    assert "s3" not in fake.created  # --no-download

    fake.created.clear()
    stub_run()
    quiet = run_cli("train", "--attach", "run-1", "--logs", "none", "--output-dir", str(tmp_path))
    assert quiet.code == EXIT_FAILED
    assert "algo-1]" not in quiet.out
    assert "logs" not in fake.created


# --- the end of a run: trials, metrics, files, JSON ------------------------------------------------


TRIALS = [  # as ListTrainingJobsForHyperParameterTuningJob answers them: by name, two pages
    [
        trial(f"{TUNING_JOB[:19]}-001-aaaaaaaa", "Completed", minutes=10, objective=0.95,
              TunedHyperParameters={"learning_rate": "0.05", "batch_size": "64"}),
        trial(f"{TUNING_JOB[:19]}-002-bbbbbbbb", "Failed", minutes=2,
              TunedHyperParameters={"learning_rate": "0.0912345678", "batch_size": "512"},
              FailureReason="AlgorithmError: CUDA out of memory\nTraceback (most recent call last): ..."),
    ],
    [
        trial(f"{TUNING_JOB[:19]}-003-cccccccc", "Completed", minutes=12, objective=0.81,
              TunedHyperParameters={"learning_rate": "0.0123456789", "batch_size": "128"}),
        trial(f"{TUNING_JOB[:19]}-004-dddddddd", "Stopped", minutes=4, objective=1.4,
              TunedHyperParameters={"learning_rate": "0.001", "batch_size": "32"}),
    ],
]  # fmt: skip
ALL_TRIALS = [*TRIALS[0], *TRIALS[1]]
BEST = ALL_TRIALS[2]


def stub_finished_tuning_run(fake, *, final_status: str = "Completed", metrics: dict | None = None) -> None:
    """An execution that has ended: a tuning job with four trials (listed on two pages), then the final job."""
    sfn, sm = fake.stub("stepfunctions"), fake.stub("sagemaker")
    events = [
        entered("Tune hyperparameters"),
        scheduled("createHyperParameterTuningJob.sync", HyperParameterTuningJobName=TUNING_JOB),
        entered("Train"),
        scheduled("createTrainingJob.sync", TrainingJobName=TRAINING_JOB),
    ]
    output = {"model_package_arn": package_arn(7), "approval_status": "PendingManualApproval",
              "model_data_url": MODEL, "training_job": TRAINING_JOB, "tuning_job": TUNING_JOB,
              "metrics": metrics or {"test_accuracy": 0.87}}  # fmt: skip
    stopped = T0 + timedelta(hours=1, minutes=2, seconds=3)
    sfn.add_response("describe_execution", execution("SUCCEEDED", output=json.dumps(output), stopDate=stopped))
    sfn.add_response("get_execution_history", history(*events, {"type": "ExecutionSucceeded"}))
    counters = {"Completed": 2, "NonRetryableError": 1, "Stopped": 1}
    for _ in range(2):  # the poll, then the last look after the end
        sm.add_response("describe_hyper_parameter_tuning_job", tuning_job("Completed", counters, best_of(BEST)))
        params = {"HyperParameterTuningJobName": TUNING_JOB, "MaxResults": 100}
        sm.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            {"TrainingJobSummaries": TRIALS[0], "NextToken": "page-2"},
            params,
        )
        sm.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job",
            {"TrainingJobSummaries": TRIALS[1]},
            {**params, "NextToken": "page-2"},
        )
        sm.add_response("describe_training_job", training_job(TRAINING_JOB, final_status, final_status))
        for summary in ALL_TRIALS:
            status = summary["TrainingJobStatus"]
            sm.add_response("describe_training_job", training_job(summary["TrainingJobName"], status, status))


def test_the_trials_table_lists_every_trial_best_first(fake, bucket, run_cli, tmp_path, monkeypatch):
    stub_finished_tuning_run(fake)
    upload_output({"metrics.json": METRICS_JSON, "curves.png": CURVES_PNG})
    monkeypatch.chdir(tmp_path)  # the default --output-dir: the current folder
    result = run_cli("train", "--attach", "run-1")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert rows_after(result.out, f"Trials of tuning job {TUNING_JOB}, best first (valid_loss):") == [
        ["TRIAL", "STATUS", "valid_loss", "batch_size", "learning_rate", "DURATION", "NOTE"],
        [ALL_TRIALS[2]["TrainingJobName"], "Completed", "0.81", "128", "0.01235", "0:12:00", "best"],
        [ALL_TRIALS[0]["TrainingJobName"], "Completed", "0.95", "64", "0.05", "0:10:00"],
        [ALL_TRIALS[3]["TrainingJobName"], "Stopped", "1.4", "32", "0.001", "0:04:00"],
        [ALL_TRIALS[1]["TrainingJobName"], "Failed", "-", "512", "0.09123", "0:02:00",
         "AlgorithmError: CUDA out of memory"],
    ]  # fmt: skip
    assert rows_after(result.out, "Final metrics of training job") == [["METRIC", "VALUE"], ["test_accuracy", "0.87"]]
    assert (tmp_path / TRAINING_JOB / "curves.png").read_bytes() == CURVES_PNG
    assert "Execution SUCCEEDED after 1:02:03. Model package version 7: PendingManualApproval" in result.out


def test_json_prints_the_end_of_the_run_for_scripts(fake, bucket, run_cli, tmp_path):
    stub_finished_tuning_run(fake, metrics={"test_accuracy": 0.87, "valid_loss": 0.5})
    upload_output({"metrics.json": METRICS_JSON})  # no curves.png
    TrainingLogs().write(TRAINING_JOB, "algo-1", (1, "test_accuracy=0.87;"))
    result = run_cli("train", "--attach", "run-1", "--json", "--output-dir", str(tmp_path))
    assert result.code == 0, result.err
    answer = json.loads(result.out)  # stdout is the JSON alone; what was followed went to stderr
    assert f"  [{TRAINING_JOB} algo-1] test_accuracy=0.87;" in result.err
    assert "Trials of tuning job" in result.err
    assert {k: answer[k] for k in ("execution_arn", "status", "error", "version", "approval_status")} == {
        "execution_arn": EXECUTION,
        "status": "SUCCEEDED",
        "error": None,
        "version": 7,
        "approval_status": "PendingManualApproval",
    }
    assert answer["elapsed_seconds"] == 3723
    assert answer["training_job"] == TRAINING_JOB and answer["tuning_job"] == TUNING_JOB
    assert answer["metrics"] == {"test_accuracy": 0.87, "valid_loss": 0.5}
    trials = answer["trials"][TUNING_JOB]
    assert [(t["training_job"], t["objective"]["value"], t["best"]) for t in trials] == [
        (ALL_TRIALS[2]["TrainingJobName"], 0.81, True),
        (ALL_TRIALS[0]["TrainingJobName"], 0.95, False),
        (ALL_TRIALS[3]["TrainingJobName"], 1.4, False),
        (ALL_TRIALS[1]["TrainingJobName"], None, False),
    ]
    assert trials[0]["hyperparameters"] == {"learning_rate": "0.0123456789", "batch_size": "128"}
    assert trials[0]["duration_seconds"] == 720 and trials[0]["objective"]["metric"] == "valid_loss"
    assert trials[3]["failure_reason"].startswith("AlgorithmError: CUDA out of memory")
    assert answer["downloaded"] == {
        "archive": f"s3://{BUCKET}/{OUTPUT_KEY}",
        "archive_found": True,
        "folder": str(tmp_path / TRAINING_JOB),
        "files": {"metrics.json": str(tmp_path / TRAINING_JOB / "metrics.json")},
        "missing": ["curves.png"],
    }
    assert f"Not in s3://{BUCKET}/{OUTPUT_KEY}: curves.png" in result.err


def test_a_failed_run_still_prints_its_json_then_the_error(fake, run_cli):
    sfn = fake.stub("stepfunctions")
    cause = "The execution input was refused: hyperparameters.backbone must be one of resnet18, resnet34."
    sfn.add_response("describe_execution", execution("FAILED", error="InvalidInput", cause=cause, stopDate=T0))
    sfn.add_response("get_execution_history", history({"type": "ExecutionFailed"}))
    result = run_cli("train", "--attach", "run-1", "--json")
    assert result.code == EXIT_FAILED
    answer = json.loads(result.out)
    assert (answer["status"], answer["error"], answer["cause"]) == ("FAILED", "InvalidInput", cause)
    assert answer["trials"] == {} and answer["downloaded"] is None and answer["version"] is None
    assert result.err.endswith(f"error: The training execution FAILED (after 0:00:00): InvalidInput: {cause}\n")


def test_on_a_terminal_the_status_is_live_and_the_tables_are_rich(fake, bucket, run_cli, monkeypatch, tmp_path):
    monkeypatch.setattr(follow, "is_terminal", lambda stream: True)
    monkeypatch.setenv("COLUMNS", "200")
    stub_finished_tuning_run(fake)
    TrainingLogs().write(TRAINING_JOB, "algo-1", (1, "[rank 0] a line with [brackets] and :smile:"))
    result = run_cli("train", "--attach", "run-1", "--output-dir", str(tmp_path))
    assert result.code == 0, result.err
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.out)  # without the terminal's escape sequences
    assert "\x1b[" in result.out  # styled
    assert f"[{TRAINING_JOB} algo-1] [rank 0] a line with [brackets] and :smile:" in plain  # no markup read
    assert f"Trials of tuning job {TUNING_JOB}, best first (valid_loss):" in plain
    assert re.search(
        rf"{ALL_TRIALS[2]['TrainingJobName']}\s+Completed\s+0\.81\s+128\s+0\.01235\s+0:12:00\s+best", plain
    )
    assert "Execution SUCCEEDED after 1:02:03." in plain


def test_ctrl_c_stops_following_not_the_execution(fake, run_cli, monkeypatch):
    sfn = fake.stub("stepfunctions")
    sfn.add_response("describe_execution", execution("RUNNING"))
    sfn.add_response("get_execution_history", history(entered("Train")))

    def interrupt(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(follow, "pause", interrupt)
    result = run_cli("train", "--attach", EXECUTION)
    assert result.code == EXIT_INTERRUPTED
    assert "Stopped following; the execution goes on. Follow it again: dogbreeds train --attach run-1" in result.out
    assert f"aws stepfunctions stop-execution --execution-arn {EXECUTION}" in result.out


def test_an_approved_model_is_handed_to_the_recorder_then_the_deploy(fake, run_cli, tmp_path):
    sfn, sm = fake.stub("stepfunctions"), fake.stub("sagemaker")
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
    stopped = T0 + timedelta(minutes=30)
    sfn.add_response("describe_execution", execution("SUCCEEDED", output=json.dumps(output), stopDate=stopped))
    sfn.add_response("get_execution_history", history(*events, {"type": "ExecutionSucceeded"}))
    for _ in range(2):  # the poll, then the last look after the end
        sm.add_response("describe_training_job", done)

    result = run_cli("train", "--attach", "run-1", "--no-download")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    summary = result.out[result.out.index("Execution SUCCEEDED") :].splitlines()
    assert summary == [
        "Execution SUCCEEDED after 0:30:00. Model package version 5: Approved",
        f"  package: {package_arn(5)}",
        f"  model: {MODEL}",
        f"  training job: {TRAINING_JOB}",  # no tuning job
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
    stopped = T0 + timedelta(hours=2)
    sfn.add_response(
        "describe_execution", execution("FAILED", error="QualityGateFailed", cause=cause, stopDate=stopped)
    )
    sfn.add_response("get_execution_history", history({"type": "ExecutionFailed"}))
    result = run_cli("train", "--attach", "run-1")
    assert result.code == EXIT_FAILED
    assert result.err == (
        f"error: The training execution FAILED (after 2:00:00): QualityGateFailed: {cause} (dogbreeds models lists "
        "it)\n"
    )


def test_a_refused_input_shows_the_pipelines_cause(fake, run_cli):
    sfn = fake.stub("stepfunctions")
    cause = "The execution input was refused: hyperparameters.backbone must be one of resnet18, resnet34."
    sfn.add_response("start_execution", {"executionArn": EXECUTION, "startDate": T0})
    sfn.add_response("describe_execution", execution("FAILED", error="InvalidInput", cause=cause, stopDate=T0))
    sfn.add_response("get_execution_history", history({"type": "ExecutionFailed"}))
    result = run_cli("train", "-H", "backbone=vgg16")
    assert result.code == EXIT_FAILED
    assert result.err == f"error: The training execution FAILED (after 0:00:00): InvalidInput: {cause}\n"


def test_an_output_dir_that_is_a_file_is_a_usage_error(fake, run_cli, tmp_path):
    (tmp_path / "results").write_text("not a folder")
    result = run_cli("train", "--attach", "run-1", "--output-dir", str(tmp_path / "results"))
    assert result.code == 2
    assert result.err == f"error: --output-dir {tmp_path / 'results'}: not a folder\n"
    assert fake.stacks.asked == []


# --- the files from output.tar.gz ---------------------------------------------------------------------


def test_only_the_two_files_at_the_archives_root_are_taken(bucket, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:

        def add(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.size, info.type, info.linkname = len(data), kind, link
            archive.addfile(info, io.BytesIO(data))

        add("../curves.png", b"outside")  # never written outside the folder
        add("checkpoints/metrics.json", b"nested")  # not train.py's
        add("metrics.json", kind=tarfile.SYMTYPE, link="/etc/passwd")  # not a file
        add("./metrics.json", METRICS_JSON)
        add("curves.png", CURVES_PNG)
        add("metrics.json", b"a second copy: the first one counts")
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=OUTPUT_KEY, Body=buffer.getvalue())
    into = tmp_path / "out"
    folder = into / TRAINING_JOB
    described = training_job(TRAINING_JOB, "Completed", "Completed")
    got = results.download_outputs(boto3.client("s3", region_name=REGION), described, into)
    assert got.files == {"metrics.json": folder / "metrics.json", "curves.png": folder / "curves.png"}
    assert got.missing == [] and not got.archive_missing
    assert (folder / "metrics.json").read_bytes() == METRICS_JSON
    assert (folder / "curves.png").read_bytes() == CURVES_PNG
    assert sorted(str(p.relative_to(into)) for p in into.rglob("*")) == [
        TRAINING_JOB,
        f"{TRAINING_JOB}/curves.png",
        f"{TRAINING_JOB}/metrics.json",
    ]
    assert not (tmp_path / "curves.png").exists()


def test_an_output_that_is_no_archive_is_a_warning_not_a_failed_run(fake, bucket, run_cli, tmp_path):
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key=OUTPUT_KEY, Body=b"not gzip")
    sfn, sm = fake.stub("stepfunctions"), fake.stub("sagemaker")
    output = {"model_package_arn": package_arn(5), "approval_status": "Approved", "model_data_url": MODEL,
              "training_job": TRAINING_JOB, "metrics": {}}  # fmt: skip
    events = [entered("Train"), scheduled("createTrainingJob.sync", TrainingJobName=TRAINING_JOB)]
    sfn.add_response("describe_execution", execution("SUCCEEDED", output=json.dumps(output), stopDate=T0))
    sfn.add_response("get_execution_history", history(*events, {"type": "ExecutionSucceeded"}))
    for _ in range(2):
        sm.add_response("describe_training_job", training_job(TRAINING_JOB, "Completed", "Completed"))
    result = run_cli("train", "--attach", "run-1", "--output-dir", str(tmp_path))
    assert result.code == 0, result.err
    assert result.err.startswith(
        f"warning: could not take metrics.json and curves.png from the output of {TRAINING_JOB}: "
    )
    assert "Execution SUCCEEDED" in result.out


def test_a_failed_feature_extraction_is_named_as_such_and_not_taken_for_the_final_job(fake, run_cli):
    sfn, sm = fake.stub("stepfunctions"), fake.stub("sagemaker")
    extraction = f"{NAMES.job_name_prefix}-features-0123456789ab"
    reason = "AlgorithmError: cannot store the extracted features"
    cause = f"SageMaker job {extraction} ended Failed: {reason}"
    events = [
        {"type": "ExecutionStarted"},
        entered("Tune?"),
        entered("Extract features"),
        scheduled("createTrainingJob.sync", TrainingJobName=extraction),
        {"type": "ExecutionFailed"},
    ]
    sfn.add_response("describe_execution", execution("FAILED", error="JobFailed", cause=cause, stopDate=T0))
    sfn.add_response("get_execution_history", history(*events))
    for _ in range(2):  # the poll, and the last look after the end
        sm.add_response("describe_training_job", training_job(extraction, "Failed", "Failed", FailureReason=reason))
    result = run_cli("train", "--attach", "run-1", "--logs", "none")
    assert result.code == EXIT_FAILED
    fake.assert_stubs_used()
    assert f"feature extraction job {extraction}: Failed / Failed - {reason}" in result.out
    assert f"training job {extraction}" not in result.out.replace(f"extraction job {extraction}", "")
    assert "Final metrics" not in result.out and "could not" not in result.err, "no model, no outputs to fetch"
    assert result.err.endswith(f"error: The training execution FAILED (after 0:00:00): JobFailed: {cause}\n")
