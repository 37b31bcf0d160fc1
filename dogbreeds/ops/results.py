"""What a training run leaves to look at: the tuning trials, the final metrics, and the job's curves and metrics.

The trials come from ListTrainingJobsForHyperParameterTuningJob (all of them: sorting there by the objective
would leave out the trials that reported none, the failed ones), ordered here best first by the tuning job's
objective. The files come from the job's ``output.tar.gz`` (``<S3OutputPath>/<job>/output/output.tar.gz``: the
folder train.py writes metrics.json and curves.png into, SM_OUTPUT_DATA_DIR, packed by SageMaker when the job
ends); only those two files are taken from it, read as a stream, never extracted by the paths it holds.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from dogbreeds.ops.errors import client_error_code
from dogbreeds.ops.follow import TERMINAL_JOB_STATES, duration

OUTPUT_FILES = ("metrics.json", "curves.png")
# ListTrainingJobsForHyperParameterTuningJob answers 10 trials a page unless asked; 100 is its most.
TRIALS_PAGE_SIZE = 100


# --- the trials -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One training job a tuning job started (a HyperParameterTrainingJobSummary)."""

    name: str
    status: str
    hyperparameters: dict[str, str]
    created: datetime
    started: datetime | None = None
    ended: datetime | None = None
    objective: float | None = None
    failure_reason: str | None = None

    @classmethod
    def from_summary(cls, summary: dict) -> Trial:
        metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        return cls(
            name=summary["TrainingJobName"],
            status=summary["TrainingJobStatus"],
            hyperparameters=dict(summary.get("TunedHyperParameters") or {}),
            created=summary["CreationTime"],
            started=summary.get("TrainingStartTime"),
            ended=summary.get("TrainingEndTime"),
            objective=metric.get("Value"),
            failure_reason=summary.get("FailureReason"),
        )


@dataclass(frozen=True)
class Objective:
    """The tuning job's objective: the metric and whether lower is better."""

    metric: str
    minimize: bool

    @classmethod
    def of(cls, tuning_job: dict) -> Objective:
        """From DescribeHyperParameterTuningJob."""
        config = tuning_job.get("HyperParameterTuningJobConfig", {}).get("HyperParameterTuningJobObjective") or {}
        return cls(config.get("MetricName", "objective"), config.get("Type", "Minimize") != "Maximize")


def list_trials(sagemaker, tuning_job: str) -> list[Trial]:
    paginator = sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    pages = paginator.paginate(HyperParameterTuningJobName=tuning_job, PaginationConfig={"PageSize": TRIALS_PAGE_SIZE})
    return [Trial.from_summary(s) for page in pages for s in page["TrainingJobSummaries"]]


def best_first(trials: list[Trial], objective: Objective) -> list[Trial]:
    """Trials with an objective value, best first; then the others, oldest first."""
    scored = sorted(
        (t for t in trials if t.objective is not None),
        key=lambda t: (t.objective if objective.minimize else -t.objective, t.created),
    )
    return scored + sorted((t for t in trials if t.objective is None), key=lambda t: t.created)


def _value(text: str) -> str:
    """A hyperparameter as the tuner wrote it, shortened when it is a long float (0.0123456789 -> 0.01235)."""
    try:
        int(text)
        return text
    except ValueError:
        pass
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


def _run_time(trial: Trial) -> str:
    if trial.ended is None and trial.status in TERMINAL_JOB_STATES:
        return "-"  # ended before training started
    return duration(trial.started, trial.ended)


def trials_table(trials: list[Trial], objective: Objective, best: str | None) -> tuple[list[str], list[list[str]]]:
    """The headers and rows of the trials table, best first (``best``: the tuning job's BestTrainingJob)."""
    names = sorted({k for t in trials for k in t.hyperparameters})
    headers = ["TRIAL", "STATUS", objective.metric, *names, "DURATION", "NOTE"]
    rows = []
    for t in best_first(trials, objective):
        if t.name == best:
            note = "best"
        elif t.failure_reason:
            note = t.failure_reason.splitlines()[0][:80]
        else:
            note = ""
        rows.append(
            [
                t.name,
                t.status,
                "-" if t.objective is None else f"{t.objective:.4g}",
                *(_value(t.hyperparameters[k]) if k in t.hyperparameters else "-" for k in names),
                _run_time(t),
                note,
            ]
        )
    return headers, rows


def trials_json(trials: list[Trial], objective: Objective, best: str | None) -> list[dict]:
    def seconds(t: Trial) -> int | None:
        return int((t.ended - t.started).total_seconds()) if t.started and t.ended else None

    return [
        {
            "training_job": t.name,
            "status": t.status,
            "objective": {"metric": objective.metric, "value": t.objective},
            "hyperparameters": t.hyperparameters,
            "started": t.started.astimezone(UTC).isoformat() if t.started else None,
            "ended": t.ended.astimezone(UTC).isoformat() if t.ended else None,
            "duration_seconds": seconds(t),
            "failure_reason": t.failure_reason,
            "best": t.name == best,
        }
        for t in best_first(trials, objective)
    ]


# --- the final metrics ------------------------------------------------------------------------------


def final_metrics(training_job: dict | None) -> dict[str, float]:
    """DescribeTrainingJob's FinalMetricDataList: metric -> value (the metric definitions' last values)."""
    return {m["MetricName"]: m["Value"] for m in (training_job or {}).get("FinalMetricDataList") or []}


def metric_rows(metrics: dict[str, float]) -> list[list[str]]:
    return [
        [name, f"{value:.6g}" if isinstance(value, int | float) else str(value)]
        for name, value in sorted(metrics.items())
    ]


# --- the job's files --------------------------------------------------------------------------------


@dataclass
class Downloaded:
    """The files taken from one job's output.tar.gz."""

    archive: str  # s3://... of output.tar.gz
    folder: Path  # where they were written
    files: dict[str, Path] = field(default_factory=dict)  # name -> path
    archive_missing: bool = False

    @property
    def missing(self) -> list[str]:
        return [] if self.archive_missing else [n for n in OUTPUT_FILES if n not in self.files]

    def as_json(self) -> dict:
        return {
            "archive": self.archive,
            "archive_found": not self.archive_missing,
            "folder": str(self.folder),
            "files": {name: str(path) for name, path in self.files.items()},
            "missing": self.missing,
        }


def output_archive(training_job: dict) -> tuple[str, str]:
    """The bucket and key of the job's output.tar.gz, from DescribeTrainingJob's OutputDataConfig."""
    base = training_job["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://").rstrip("/")
    bucket, _, prefix = base.partition("/")
    key = "/".join(p for p in (prefix, training_job["TrainingJobName"], "output", "output.tar.gz") if p)
    return bucket, key


def download_outputs(s3, training_job: dict, into: Path) -> Downloaded:
    """metrics.json and curves.png from the job's output.tar.gz into ``into/<job>/``.

    A job without the archive (it failed before train.py wrote anything, or SageMaker has not packed it yet)
    is ``archive_missing``; an archive that is not a gzip'd tar raises tarfile.ReadError.
    """
    bucket, key = output_archive(training_job)
    folder = into.expanduser().resolve() / training_job["TrainingJobName"]
    result = Downloaded(f"s3://{bucket}/{key}", folder)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as err:
        if client_error_code(err) in {"NoSuchKey", "404", "NotFound"}:
            result.archive_missing = True
            return result
        raise
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as archive:  # a stream: read once, front to back
            for member in archive:
                parts = [p for p in PurePosixPath(member.name).parts if p != "."]
                if not member.isfile() or len(parts) != 1 or parts[0] not in OUTPUT_FILES or parts[0] in result.files:
                    continue
                source = archive.extractfile(member)
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / parts[0]
                partial = target.with_name(target.name + ".part")
                with partial.open("wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                os.replace(partial, target)
                result.files[parts[0]] = target
                if len(result.files) == len(OUTPUT_FILES):
                    break
    finally:
        body.close()
    return result
