"""``dogbreeds train``: start the training pipeline, then follow it until it ends.

Following prints the state the execution is in, each SageMaker job's status and secondary status
(the tuning job, its trials, the final training job), the metric lines the jobs write to CloudWatch
Logs (only lines that training/metrics.py's METRIC_REGEXES match), and at the end the model package
version the pipeline registered, its approval status and what to do next, or the execution's error and
cause. Job names come from the execution's history (the arguments of each SageMaker task), so nothing
here re-derives the pipeline's naming.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, field

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import EXIT_INTERRUPTED, OpsError, UsageError, client_error_code
from dogbreeds.ops.registry import APPROVED, version_of
from stacks.contract import load_metrics_module, training_hyperparameters

HYPERPARAMETERS = training_hyperparameters().PIPELINE_HYPERPARAMETERS

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_JOB_STATES = frozenset({"Completed", "Failed", "Stopped"})
TERMINAL_EXECUTION_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
# The error of an execution whose model failed the quality gate (its cause names the Rejected version).
QUALITY_GATE_FAILED = "QualityGateFailed"


def pause(seconds: float) -> None:
    """The wait between polls (tests replace it)."""
    time.sleep(seconds)


def metric_regexes() -> list[re.Pattern[str]]:
    """training/metrics.py's METRIC_REGEXES, read as the training stack reads them."""
    try:
        module = load_metrics_module()
    except FileNotFoundError as err:
        raise OpsError(f"{err} not found: run the CLI from the project's checkout (pip install -e .)") from None
    return [re.compile(r) for r in module.METRIC_REGEXES.values()]


# --- the execution input ----------------------------------------------------------------------------


def parse_hyperparameters(items: list[str]) -> dict[str, object]:
    """``k=v`` items: v as JSON when it parses (numbers, true/false), else as a string."""
    values: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--hyperparameter {item}: takes KEY=VALUE, for example -H backbone=resnet34")
        if key not in HYPERPARAMETERS:
            raise UsageError(f"--hyperparameter {item}: {key} is not one of {', '.join(HYPERPARAMETERS)}")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return values


def execution_input(args: argparse.Namespace) -> dict[str, object]:
    """Only what the operator set; the state machine fills in the deployed defaults."""
    given: dict[str, object] = {}
    if args.tune is not None:
        given["tune"] = args.tune
    if args.instance_count is not None:
        given["instance_count"] = args.instance_count
    if args.instance_type is not None:
        given["instance_type"] = args.instance_type
    if args.epochs is not None:
        given["epochs"] = args.epochs
    if args.spot is not None:
        given["use_spot"] = args.spot
    hyperparameters = parse_hyperparameters(args.hyperparameter)
    if hyperparameters:
        given["hyperparameters"] = hyperparameters
    return given


def console_url(region: str, execution_arn: str) -> str:
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"


# --- following --------------------------------------------------------------------------------------


@dataclass
class Job:
    name: str
    kind: str  # "training" or "tuning"
    label: str  # how it is printed
    status: tuple[str, ...] = ()
    terminal_seen: bool = False
    finished: bool = False  # terminal, and its log lines fetched once more since
    log_start: int = 0  # milliseconds: CloudWatch Logs events from here on
    seen_events: set[str] = field(default_factory=set)


class Follower:
    """Polls one execution: new history events, the SageMaker jobs they started, those jobs' logs."""

    def __init__(self, aws: Aws, execution_arn: str, *, poll_seconds: float) -> None:
        self.sfn = aws.client("stepfunctions")
        self.sagemaker = aws.client("sagemaker")
        self.logs = aws.client("logs")
        self.arn = execution_arn
        self.poll_seconds = poll_seconds
        self.metric_patterns = metric_regexes()
        self.last_event_id = 0
        self.state: str | None = None
        self.jobs: dict[str, Job] = {}

    def run(self) -> dict:
        """Follow until the execution ends; returns its DescribeExecution."""
        while True:
            execution = self.sfn.describe_execution(executionArn=self.arn)
            self.read_history()
            self.poll_jobs()
            if execution["status"] in TERMINAL_EXECUTION_STATES:
                # One more look: the jobs' final statuses and last log lines.
                pause(min(self.poll_seconds, 5))
                self.poll_jobs()
                return execution
            pause(self.poll_seconds)

    # history -> states and jobs

    def read_history(self) -> None:
        paginator = self.sfn.get_paginator("get_execution_history")
        for page in paginator.paginate(executionArn=self.arn, includeExecutionData=True):
            for event in page["events"]:
                if event["id"] <= self.last_event_id:
                    continue
                self.last_event_id = event["id"]
                self.on_event(event)

    def on_event(self, event: dict) -> None:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            name = event["stateEnteredEventDetails"]["name"]
            if name != self.state:
                self.state = name
                print(f"state: {name}", flush=True)
        elif kind == "TaskScheduled":
            details = event["taskScheduledEventDetails"]
            if details.get("resourceType") != "sagemaker":
                return
            try:
                parameters = json.loads(details.get("parameters") or "{}")
            except json.JSONDecodeError:
                return
            if "HyperParameterTuningJobName" in parameters:
                name = parameters["HyperParameterTuningJobName"]
                self.add_job(Job(name, "tuning", f"tuning job {name}"))
            elif "TrainingJobName" in parameters:
                name = parameters["TrainingJobName"]
                self.add_job(Job(name, "training", f"training job {name}"))

    def add_job(self, job: Job) -> None:
        if job.name not in self.jobs:
            self.jobs[job.name] = job

    # jobs -> statuses and metric lines

    def poll_jobs(self) -> None:
        """Each unfinished job once (trials a tuning job reveals are polled in the same round)."""
        polled: set[str] = set()
        while pending := [j for j in self.jobs.values() if not j.finished and j.name not in polled]:
            for job in pending:
                polled.add(job.name)
                terminal = self.poll_tuning(job) if job.kind == "tuning" else self.poll_training(job)
                if terminal is None:  # not created yet
                    continue
                if job.kind == "training":
                    self.print_metric_lines(job)
                # One more round after the end, for log lines CloudWatch Logs had not ingested yet.
                job.finished = terminal and job.terminal_seen
                job.terminal_seen = terminal

    def poll_training(self, job: Job) -> bool | None:
        try:
            d = self.sagemaker.describe_training_job(TrainingJobName=job.name)
        except Exception as err:
            if _not_found(err):
                return None
            raise
        status = (d["TrainingJobStatus"], d.get("SecondaryStatus", ""))
        if status != job.status:
            job.status = status
            transitions = d.get("SecondaryStatusTransitions") or []
            message = transitions[-1].get("StatusMessage", "") if transitions else ""
            line = f"{job.label}: {status[0]} / {status[1]}"
            if message:
                line += f" - {message}"
            if d.get("FailureReason"):
                line += f" - {d['FailureReason']}"
            print(line, flush=True)
        return status[0] in TERMINAL_JOB_STATES

    def poll_tuning(self, job: Job) -> bool | None:
        try:
            d = self.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job.name)
        except Exception as err:
            if _not_found(err):
                return None
            raise
        counters = d.get("TrainingJobStatusCounters", {})
        failed = counters.get("NonRetryableError", 0) + counters.get("RetryableError", 0)
        summary = (
            f"{counters.get('InProgress', 0)} running, {counters.get('Completed', 0)} completed, "
            f"{failed} failed, {counters.get('Stopped', 0)} stopped"
        )
        best = d.get("BestTrainingJob") or {}
        objective = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        best_text = ""
        if objective:
            best_text = f"; best: {best.get('TrainingJobName')} {objective['MetricName']}={objective['Value']:g}"
        status = (d["HyperParameterTuningJobStatus"], summary, best_text)
        if status != job.status:
            job.status = status
            line = f"{job.label}: {status[0]} ({summary}){best_text}"
            if d.get("FailureReason"):
                line += f" - {d['FailureReason']}"
            print(line, flush=True)
        # Its trials are training jobs: follow each one's status and metric lines.
        paginator = self.sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
        for page in paginator.paginate(HyperParameterTuningJobName=job.name):
            for trial in page["TrainingJobSummaries"]:
                name = trial["TrainingJobName"]
                self.add_job(Job(name, "training", f"  trial {name}"))
        return d["HyperParameterTuningJobStatus"] in TERMINAL_JOB_STATES

    def print_metric_lines(self, job: Job) -> None:
        paginator = self.logs.get_paginator("filter_log_events")
        pages = paginator.paginate(logGroupName=LOG_GROUP, logStreamNamePrefix=job.name, startTime=job.log_start)
        try:
            events = [e for page in pages for e in page.get("events", [])]
        except Exception as err:
            if client_error_code(err) == "ResourceNotFoundException":
                return  # no log group or stream yet
            raise
        for event in sorted(events, key=lambda e: (e["timestamp"], e.get("eventId", ""))):
            event_id = event.get("eventId") or f"{event['logStreamName']}:{event['timestamp']}:{event['message']}"
            if event_id in job.seen_events:
                continue
            job.seen_events.add(event_id)
            job.log_start = max(job.log_start, event["timestamp"])
            message = event["message"].strip()
            if any(p.search(message) for p in self.metric_patterns):
                host = event["logStreamName"].rsplit("/", 1)[-1].rsplit("-", 1)[0]
                print(f"  [{job.name} {host}] {message}", flush=True)


def _not_found(err: Exception) -> bool:
    code = client_error_code(err)
    return code in {"ValidationException", "ResourceNotFound"} and (
        code == "ResourceNotFound" or "not found" in str(err).lower() or "does not exist" in str(err).lower()
    )


def failure_message(execution: dict) -> str:
    """The execution's error and cause; a SageMaker task's cause (JSON) is reduced to its FailureReason."""
    error = execution.get("error") or "no error name"
    cause = execution.get("cause") or "no cause given"
    try:
        detail = json.loads(cause)
    except (json.JSONDecodeError, TypeError):
        detail = None
    if isinstance(detail, dict):
        reason = detail.get("FailureReason") or detail.get("errorMessage") or detail.get("Cause")
        job = detail.get("TrainingJobName") or detail.get("HyperParameterTuningJobName")
        if reason:
            cause = f"{job}: {reason}" if job else str(reason)
    return f"{error}: {cause}"


# --- the command ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tune learning rate and batch size first (default: the deployed setting tuning_enabled)",
    )
    parser.add_argument("--instance-count", type=int, help="instances of the final training job (DDP across all)")
    parser.add_argument("--instance-type", help="instance type of the final training job, such as ml.g5.xlarge")
    parser.add_argument("--epochs", type=int, help="epochs of the final training job")
    parser.add_argument(
        "--hyperparameter",
        "-H",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a hyperparameter (repeatable): {', '.join(HYPERPARAMETERS)}",
    )
    parser.add_argument(
        "--spot",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="managed spot training (default: the deployed setting training_use_spot)",
    )
    parser.add_argument("--no-follow", action="store_true", help="start the execution and return")
    parser.add_argument(
        "--attach",
        metavar="EXECUTION",
        help="follow an execution already started (its name or ARN) instead of starting one",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=30.0, help="seconds between looks at the execution (default: %(default)s)"
    )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if args.poll_seconds <= 0:
        raise UsageError("--poll-seconds must be above 0")
    given = execution_input(args)
    if args.attach and given:
        raise UsageError("--attach follows an execution already started: it takes no run options")
    stacks = Stacks(aws, config)
    state_machine = stacks.output("training", "StateMachineArn")
    sfn = aws.client("stepfunctions")

    if args.attach:
        arn = args.attach
        if not arn.startswith("arn:"):
            arn = state_machine.replace(":stateMachine:", ":execution:", 1) + ":" + arn
        print(f"Following {arn}")
    else:
        arn = sfn.start_execution(stateMachineArn=state_machine, input=json.dumps(given))["executionArn"]
        print(f"Started {arn}")
        print(f"  input: {json.dumps(given)}")
    print(f"  console: {console_url(aws.region, arn)}", flush=True)
    if args.no_follow:
        print(f"Follow it with: dogbreeds train --attach {arn.rsplit(':', 1)[-1]}")
        return 0

    follower = Follower(aws, arn, poll_seconds=args.poll_seconds)
    try:
        execution = follower.run()
    except KeyboardInterrupt:
        print(
            f"\nStopped following; the execution goes on. Follow it again: dogbreeds train --attach "
            f"{arn.rsplit(':', 1)[-1]}; stop it: aws stepfunctions stop-execution --execution-arn {arn}",
            flush=True,
        )
        return EXIT_INTERRUPTED

    status = execution["status"]
    if status != "SUCCEEDED":
        message = failure_message(execution)
        if execution.get("error") == QUALITY_GATE_FAILED:
            message += " (dogbreeds models lists it)"
        raise OpsError(f"The training execution {status}: {message}")
    parameter = stacks.outputs("training").get("ApprovedPackageParameterName", "the approved-package parameter")
    for line in summary(json.loads(execution.get("output") or "{}"), config, parameter):
        print(line)
    return 0


def summary(output: dict, config: Config, parameter: str) -> list[str]:
    """The end of a successful run: the registered version, its approval status, its metrics, what next."""
    arn = output.get("model_package_arn")
    if not arn:  # a pipeline deployed before the Model Registry
        return [
            f"Execution SUCCEEDED. Model: {output.get('model_data_url')}",
            f"The training stack predates the Model Registry: `{config.cdk_command('deploy', 'training')}` updates it.",
        ]
    number, approval = version_of(arn), output.get("approval_status")
    lines = [f"Execution SUCCEEDED. Model package version {number}: {approval}", f"  package: {arn}"]
    lines.append(f"  model: {output.get('model_data_url')}")
    jobs = f"  training job: {output.get('training_job')}"
    if output.get("tuning_job"):
        jobs += f" (tuning job {output['tuning_job']})"
    lines.append(jobs)
    for name, value in sorted((output.get("metrics") or {}).items()):
        lines.append(f"  {name}={value:g}" if isinstance(value, int | float) else f"  {name}={value}")
    deploy = config.cdk_command("deploy", "endpoint")
    if approval == APPROVED:
        lines.append(
            f"Approved automatically (model_approval=auto): the approval recorder updates {parameter} within "
            f"seconds; then `{deploy}` serves it."
        )
    else:
        lines.append(
            f"Waiting for approval: check it (dogbreeds models), then `dogbreeds approve {number}` "
            f"(or `dogbreeds reject {number} --reason TEXT`); once approved, `{deploy}` serves it."
        )
    return lines
