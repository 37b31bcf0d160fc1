"""``dogbreeds logs JOB``: a training job's CloudWatch logs, every host's stream, each line after its host.

The lines of all the job's streams (``<job>/algo-N-...``: one per host, which torchrun's ranks on that host
share) are interleaved by time and printed as ``[algo-1] message``; ``--json`` prints one JSON object per line
instead (job, host, stream, timestamp, message). ``--follow`` goes on reading while the job runs, and stops once
it has ended and its last lines are in; on a terminal a status line shows the job's status and run time. The
job's status (with its FailureReason) goes to stderr at the end, so that stdout holds the log alone. JOB is a
training job: a tuning trial, or the final job (``dogbreeds train`` prints their names, ``dogbreeds models``
the final job of each version).
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from dogbreeds.ops import follow
from dogbreeds.ops.aws import Aws
from dogbreeds.ops.config import Config
from dogbreeds.ops.errors import EXIT_INTERRUPTED, OpsError, UsageError
from dogbreeds.ops.follow import TERMINAL_JOB_STATES, Display, JobLogs, LogLine, not_found

# SageMaker's pattern for a training job's name.
JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the training job's name (a trial's or the final job's)")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="keep reading while the job runs; stop once it has ended"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per log line instead of text")
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=5.0,
        help="with --follow: seconds between reads (default: %(default)s)",
    )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    del config  # the job's name says everything
    if not JOB_NAME.fullmatch(args.job):
        raise UsageError(f"JOB {args.job!r}: a training job's name is 1-63 letters, digits and hyphens")
    if args.poll_seconds <= 0:
        raise UsageError("--poll-seconds must be above 0")
    sagemaker = aws.client("sagemaker")
    job = describe(sagemaker, args.job, aws.region)
    reader = JobLogs(aws.client("logs"), args.job)
    display = Display(sys.stderr if args.json else sys.stdout)
    shown = 0

    def show(lines: list[LogLine]) -> None:
        nonlocal shown
        shown += len(lines)
        for line in lines:
            if args.json:
                print(json.dumps(line.as_json()), flush=True)
            else:
                display.log(line.host, line.stream, line.message)

    if not args.follow:
        show(reader.read())
    else:
        if not args.json:  # JSON lines and a redrawn status line would share the terminal
            display.status(lambda: f"{args.job}: {_status(job)} · {_ran(job)}")
        terminal_seen = False
        try:
            while True:
                show(reader.read())
                terminal = job["TrainingJobStatus"] in TERMINAL_JOB_STATES
                if terminal and terminal_seen:
                    break
                terminal_seen = terminal
                # Once it has ended, one more read soon: CloudWatch Logs may not have ingested the last lines.
                follow.pause(min(args.poll_seconds, 5) if terminal else args.poll_seconds)
                job = describe(sagemaker, args.job, aws.region)
        except KeyboardInterrupt:
            display.close()
            print(f"\nStopped following {args.job}; the job goes on.", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        finally:
            display.close()
    print(footer(job, shown, len(reader.tokens), following=args.follow), file=sys.stderr, flush=True)
    return 0


def describe(sagemaker, name: str, region: str) -> dict:
    try:
        return sagemaker.describe_training_job(TrainingJobName=name)
    except Exception as err:
        if not_found(err):
            raise OpsError(
                f"There is no training job {name} in {region}: `dogbreeds train` prints the names of the jobs it "
                "starts (the trials too) and `dogbreeds models` the training job of each version."
            ) from None
        raise


def _status(job: dict) -> str:
    status = f"{job['TrainingJobStatus']} / {job.get('SecondaryStatus', '')}".rstrip(" /")
    return f"{status} - {job['FailureReason']}" if job.get("FailureReason") else status


def _ran(job: dict) -> str:
    start = job.get("TrainingStartTime")
    if start is None:
        return "not started"
    return f"ran {follow.duration(start, job.get('TrainingEndTime'))}"


def footer(job: dict, lines: int, streams: int, *, following: bool) -> str:
    name = job["TrainingJobName"]
    if streams == 0:
        if job["TrainingJobStatus"] in TERMINAL_JOB_STATES:
            return f"{name} logged nothing: {_status(job)}"
        hint = "" if following else "; --follow waits for them"
        return f"{name} has no log streams yet ({_status(job)}): its hosts log once training starts{hint}"
    return f"{name}: {_status(job)}; {_ran(job)}; {lines} lines from {streams} log stream{'s' * (streams != 1)}"
