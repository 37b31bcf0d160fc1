"""``dogbreeds train``: start the training pipeline, then follow it until it ends.

Following shows, as they happen, the state the execution is in and the time since it started; each SageMaker
job's status and secondary status (the tuning job, its trials, the final training job); and every line the jobs
log to CloudWatch Logs, from every host's stream, prefixed by the job and the host (``--logs metrics``: only the
lines training/metrics.py's METRIC_REGEXES match, ``--logs none``: none), as ``estimator.fit(logs="All")`` does.
On a terminal a live status line keeps the state, the latest job status and the elapsed time in view.

At the end: the tuning trials, best first (hyperparameters, objective, status, run time); the final metrics;
metrics.json and curves.png from the final job's output, saved into ``--output-dir``/<job>/; then the model
package version the pipeline registered, its approval status and what to do next, or the execution's error and
cause. ``--json`` prints that end as one JSON object on stdout (what is followed goes to stderr). Job names come
from the execution's history (the arguments of each SageMaker task), so nothing here re-derives the pipeline's
naming.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dogbreeds.ops import follow
from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import EXIT_INTERRUPTED, OpsError, UsageError, from_botocore
from dogbreeds.ops.follow import TERMINAL_JOB_STATES, Display, JobLogs, not_found
from dogbreeds.ops.registry import APPROVED, version_of
from dogbreeds.ops.results import (
    Downloaded,
    Objective,
    Trial,
    download_outputs,
    final_metrics,
    list_trials,
    metric_rows,
    trials_json,
    trials_table,
)
from dogbreeds_stacks.contract import FEATURE_EXTRACTION_STATE, load_metrics_module, training_hyperparameters

HYPERPARAMETERS = training_hyperparameters().PIPELINE_HYPERPARAMETERS

TERMINAL_EXECUTION_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
# The error of an execution whose model failed the quality gate (its cause names the Rejected version).
QUALITY_GATE_FAILED = "QualityGateFailed"
LOG_MODES = ("all", "metrics", "none")


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
    trial: bool = False  # a training job its tuning job started
    extraction: bool = False  # the job that stores the features of head-only trials: no model, no metrics
    status: tuple[str, ...] = ()
    terminal_seen: bool = False
    finished: bool = False  # terminal, and its log lines read once more since
    described: dict | None = None  # its last Describe* answer
    trials: list[Trial] = field(default_factory=list)  # a tuning job's, as last listed
    logs: JobLogs | None = None


class Follower:
    """Polls one execution: new history events, the SageMaker jobs they started, every log stream of those jobs."""

    def __init__(self, aws: Aws, execution_arn: str, *, poll_seconds: float, display: Display, logs: str) -> None:
        self.sfn = aws.client("stepfunctions")
        self.sagemaker = aws.client("sagemaker")
        self.logs = aws.client("logs") if logs != "none" else None
        self.metric_patterns = metric_regexes() if logs == "metrics" else None
        self.arn = execution_arn
        self.poll_seconds = poll_seconds
        self.display = display
        self.last_event_id = 0
        self.state: str | None = None
        self.jobs: dict[str, Job] = {}
        self.execution: dict = {}
        self.latest = ""  # the latest status line, for the live status

    def run(self) -> dict:
        """Follow until the execution ends; returns its DescribeExecution."""
        self.display.status(self.status_line)
        while True:
            self.execution = self.sfn.describe_execution(executionArn=self.arn)
            self.read_history()
            self.poll_jobs()
            self.display.refresh()
            if self.execution["status"] in TERMINAL_EXECUTION_STATES:
                # One more look: the jobs' final statuses and last log lines.
                follow.pause(min(self.poll_seconds, 5))
                self.poll_jobs()
                return self.execution
            follow.pause(self.poll_seconds)

    def elapsed(self) -> str:
        start = self.execution.get("startDate")
        return follow.elapsed(start, self.execution.get("stopDate")) if start else "0:00:00"

    def status_line(self) -> str:
        """The live status: the execution's status and elapsed time, its state, the latest job status."""
        parts = [f"{self.execution.get('status', 'STARTING')} {self.elapsed()}"]
        if self.state:
            parts.append(self.state)
        if self.latest:
            parts.append(self.latest)
        return " · ".join(parts)

    def say(self, text: str) -> None:
        self.latest = text.strip()
        self.display.line(f"{text} ({self.elapsed()} elapsed)")

    @property
    def final_job(self) -> Job | None:
        """The training job the execution itself started last (a retry starts one under a new name), not a trial
        or the feature extraction job."""
        finals = [j for j in self.jobs.values() if j.kind == "training" and not (j.trial or j.extraction)]
        return finals[-1] if finals else None

    @property
    def tuning_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.kind == "tuning"]

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
                self.say(f"state: {name}")
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
            elif "TrainingJobName" in parameters and self.state == FEATURE_EXTRACTION_STATE:
                name = parameters["TrainingJobName"]
                self.add_job(Job(name, "training", f"feature extraction job {name}", extraction=True))
            elif "TrainingJobName" in parameters:
                name = parameters["TrainingJobName"]
                self.add_job(Job(name, "training", f"training job {name}"))

    def add_job(self, job: Job) -> None:
        if job.name not in self.jobs:
            self.jobs[job.name] = job

    # jobs -> statuses and log lines

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
                    self.print_log_lines(job)
                # One more round after the end, for log lines CloudWatch Logs had not ingested yet.
                job.finished = terminal and job.terminal_seen
                job.terminal_seen = terminal

    def poll_training(self, job: Job) -> bool | None:
        try:
            d = self.sagemaker.describe_training_job(TrainingJobName=job.name)
        except Exception as err:
            if not_found(err):
                return None
            raise
        job.described = d
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
            self.say(line)
        return status[0] in TERMINAL_JOB_STATES

    def poll_tuning(self, job: Job) -> bool | None:
        try:
            d = self.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job.name)
        except Exception as err:
            if not_found(err):
                return None
            raise
        job.described = d
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
            self.say(line)
        # Its trials are training jobs: follow each one's status and log lines.
        job.trials = list_trials(self.sagemaker, job.name)
        for trial in job.trials:
            self.add_job(Job(trial.name, "training", f"  trial {trial.name}", trial=True))
        return d["HyperParameterTuningJobStatus"] in TERMINAL_JOB_STATES

    def print_log_lines(self, job: Job) -> None:
        if self.logs is None:
            return
        if job.logs is None:
            job.logs = JobLogs(self.logs, job.name)
        for line in job.logs.read():
            if self.metric_patterns and not any(p.search(line.message) for p in self.metric_patterns):
                continue
            self.display.log(f"{job.name} {line.host}", line.stream, line.message, indent="  ")


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


# --- the end of a run -------------------------------------------------------------------------------


@dataclass
class Report:
    """What the end of a followed run shows, and ``--json`` prints."""

    execution: dict
    trials: dict[str, list[dict]] = field(default_factory=dict)  # tuning job -> trials, best first
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_job: str | None = None
    downloaded: Downloaded | None = None

    def as_json(self) -> dict:
        e = self.execution
        output = json.loads(e.get("output") or "{}") if e.get("status") == "SUCCEEDED" else {}
        started, stopped = e.get("startDate"), e.get("stopDate")
        return {
            "execution_arn": e.get("executionArn"),
            "status": e.get("status"),
            "error": e.get("error"),
            "cause": e.get("cause"),
            "started": _iso(started),
            "stopped": _iso(stopped),
            "elapsed_seconds": int((stopped - started).total_seconds()) if started and stopped else None,
            "model_package_arn": output.get("model_package_arn"),
            "version": version_of(output.get("model_package_arn")),
            "approval_status": output.get("approval_status"),
            "model_data_url": output.get("model_data_url"),
            "training_job": output.get("training_job") or self.metrics_job,
            "tuning_job": output.get("tuning_job") or next(iter(self.trials), None),
            "metrics": self.metrics,
            "trials": self.trials,
            "downloaded": self.downloaded.as_json() if self.downloaded else None,
        }


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def report(follower: Follower, args: argparse.Namespace, aws: Aws, display: Display) -> Report:
    """The trials tables, the final metrics and the download, shown as they are made."""
    execution = follower.execution
    result = Report(execution)
    for job in follower.tuning_jobs:
        if not job.trials or job.described is None:
            continue
        objective = Objective.of(job.described)
        best = (job.described.get("BestTrainingJob") or {}).get("TrainingJobName")
        headers, rows = trials_table(job.trials, objective, best)
        display.line()
        display.table(f"Trials of tuning job {job.name}, best first ({objective.metric}):", headers, rows)
        result.trials[job.name] = trials_json(job.trials, objective, best)

    final = follower.final_job
    output = json.loads(execution.get("output") or "{}") if execution["status"] == "SUCCEEDED" else {}
    result.metrics = dict(output.get("metrics") or final_metrics(final.described if final else None))
    result.metrics_job = final.name if final else None
    if result.metrics:
        display.line()
        title = f"Final metrics of training job {result.metrics_job}:" if final else "Final metrics:"
        display.table(title, ["METRIC", "VALUE"], metric_rows(result.metrics), right=[1])

    if final is not None and final.described is not None and not args.no_download:
        result.downloaded = _download(aws, final.described, args.output_dir, display)
    return result


def _download(aws: Aws, job: dict, into: Path, display: Display) -> Downloaded | None:
    """metrics.json and curves.png into ``into``/<job>/; a failure is a warning: the run itself is done."""
    name = job["TrainingJobName"]
    try:
        got = download_outputs(aws.client("s3"), job, into)
    except (tarfile.TarError, OSError) as err:
        _warn(f"could not take metrics.json and curves.png from the output of {name}: {err}")
        return None
    except Exception as err:
        mapped = from_botocore(err)
        if mapped is None:
            raise
        _warn(f"could not download the output of {name}: {mapped}")
        return None
    display.line()
    if got.archive_missing:
        display.line(
            f"Training job {name} has no output.tar.gz ({got.archive} not found): nothing to download. train.py "
            "writes metrics.json and curves.png as it ends and SageMaker uploads them as that archive; a job that "
            f"failed before train.py wrote them has none (`dogbreeds logs {name}` shows why)."
        )
        return got
    if got.files:
        saved = " and ".join(got.files)
        display.line(f"Saved {saved} of training job {name} into {got.folder}/ (from {got.archive})")
    if got.missing:
        them = "it" if len(got.missing) == 1 else "them"
        display.line(f"Not in {got.archive}: {' and '.join(got.missing)} (train.py had not written {them})")
    return got


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


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
        "--logs",
        choices=LOG_MODES,
        default="all",
        help="the jobs' log lines to show: all (every host's), metrics (the metric lines only) or none "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where the final job's metrics.json and curves.png are saved, in a folder named after the job "
        "(default: the current folder)",
    )
    parser.add_argument("--no-download", action="store_true", help="do not download metrics.json and curves.png")
    parser.add_argument("--json", action="store_true", help="print the end of the run as one JSON object on stdout")
    parser.add_argument(
        "--poll-seconds", type=float, default=10.0, help="seconds between looks at the execution (default: %(default)s)"
    )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if args.poll_seconds <= 0:
        raise UsageError("--poll-seconds must be above 0")
    given = execution_input(args)
    if args.attach and given:
        raise UsageError("--attach follows an execution already started: it takes no run options")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise UsageError(f"--output-dir {args.output_dir}: not a folder")
    stacks = Stacks(aws, config)
    state_machine = stacks.output("training", "StateMachineArn")
    sfn = aws.client("stepfunctions")
    # With --json, stdout holds the JSON only: what is followed goes to stderr.
    display = Display(sys.stderr if args.json else sys.stdout)

    if args.attach:
        arn = args.attach
        if not arn.startswith("arn:"):
            arn = state_machine.replace(":stateMachine:", ":execution:", 1) + ":" + arn
        display.line(f"Following {arn}")
    else:
        arn = sfn.start_execution(stateMachineArn=state_machine, input=json.dumps(given))["executionArn"]
        display.line(f"Started {arn}")
        display.line(f"  input: {json.dumps(given)}")
    console = console_url(aws.region, arn)
    display.line(f"  console: {console}")
    name = arn.rsplit(":", 1)[-1]
    if args.no_follow:
        display.line(f"Follow it with: dogbreeds train --attach {name}")
        if args.json:
            print(json.dumps({"execution_arn": arn, "name": name, "input": given, "console": console}, indent=2))
        return 0

    follower = Follower(aws, arn, poll_seconds=args.poll_seconds, display=display, logs=args.logs)
    try:
        execution = follower.run()
    except KeyboardInterrupt:
        display.close()
        display.line(
            f"\nStopped following; the execution goes on. Follow it again: dogbreeds train --attach "
            f"{name}; stop it: aws stepfunctions stop-execution --execution-arn {arn}"
        )
        return EXIT_INTERRUPTED
    finally:
        display.close()

    result = report(follower, args, aws, display)
    status = execution["status"]
    if args.json:
        print(json.dumps(result.as_json(), indent=2), flush=True)
    if status != "SUCCEEDED":
        message = failure_message(execution)
        if execution.get("error") == QUALITY_GATE_FAILED:
            message += " (dogbreeds models lists it)"
        raise OpsError(f"The training execution {status} (after {follower.elapsed()}): {message}")
    parameter = stacks.outputs("training").get("ApprovedPackageParameterName", "the approved-package parameter")
    display.line()
    for line in summary(json.loads(execution.get("output") or "{}"), config, parameter, follower.elapsed()):
        display.line(line)
    return 0


def summary(output: dict, config: Config, parameter: str, took: str) -> list[str]:
    """The end of a successful run: the registered version, its approval status, what next."""
    arn = output.get("model_package_arn")
    if not arn:  # a pipeline deployed before the Model Registry
        return [
            f"Execution SUCCEEDED after {took}. Model: {output.get('model_data_url')}",
            f"The training stack predates the Model Registry: `{config.cdk_command('deploy', 'training')}` updates it.",
        ]
    number, approval = version_of(arn), output.get("approval_status")
    lines = [f"Execution SUCCEEDED after {took}. Model package version {number}: {approval}", f"  package: {arn}"]
    lines.append(f"  model: {output.get('model_data_url')}")
    jobs = f"  training job: {output.get('training_job')}"
    if output.get("tuning_job"):
        jobs += f" (tuning job {output['tuning_job']})"
    lines.append(jobs)
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
