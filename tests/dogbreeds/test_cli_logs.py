"""logs: a training job's log streams (moto's CloudWatch Logs, and Stubber for exact paging), prefixed by host."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dogbreeds.ops import follow
from dogbreeds.ops.errors import EXIT_FAILED, EXIT_USAGE
from tests.dogbreeds.fakes import ACCOUNT, NAMES, REGION, TrainingLogs

JOB = f"{NAMES.job_name_prefix}-train-0123456789ab"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
GROUP = "/aws/sagemaker/TrainingJobs"


@pytest.fixture(autouse=True)
def pauses(monkeypatch) -> list:
    """follow.pause records its seconds and runs what the test queued for it."""
    actions: list = []
    seen: list[float] = []

    def pause(seconds: float) -> None:
        seen.append(seconds)
        if actions:
            actions.pop(0)()

    monkeypatch.setattr(follow, "pause", pause)
    pause.actions, pause.seen = actions, seen
    return pause


def job(status: str = "Completed", secondary: str | None = None, **extra) -> dict:
    answer = {
        "TrainingJobName": JOB,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{JOB}",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/models/x/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary or status,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 50},
        "StoppingCondition": {},
        "CreationTime": T0,
        **extra,
    }
    if status != "InProgress":
        answer.setdefault("TrainingStartTime", T0 + timedelta(minutes=2))
        answer.setdefault("TrainingEndTime", T0 + timedelta(minutes=12, seconds=30))
    return answer


def stub_jobs(fake, *answers: dict) -> None:
    sm = fake.stub("sagemaker")
    for answer in answers:
        sm.add_response("describe_training_job", answer, {"TrainingJobName": JOB})


def test_every_hosts_lines_interleaved_by_time_each_after_its_host(fake, run_cli):
    logs = TrainingLogs()
    logs.write(JOB, "algo-2", (1500, "[1,mpirank:1] rank 1 ready"), (3500, "Traceback (most recent call last):"))
    logs.write(JOB, "algo-1", (1000, "rank 0 ready"), (2000, "epoch=1; valid_loss=0.9;"), (3000, "done"))
    logs.write(f"{JOB}0", "algo-1", (1200, "another job whose name starts with this one's"))
    stub_jobs(fake, job("Failed", FailureReason="AlgorithmError: exit code 1"))

    result = run_cli("logs", JOB)
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert result.out.splitlines() == [
        "[algo-1] rank 0 ready",
        "[algo-2] [1,mpirank:1] rank 1 ready",
        "[algo-1] epoch=1; valid_loss=0.9;",
        "[algo-1] done",
        "[algo-2] Traceback (most recent call last):",
    ]
    assert result.err == (
        f"{JOB}: Failed / Failed - AlgorithmError: exit code 1; ran 0:10:30; 5 lines from 2 log streams\n"
    )


def test_json_lines_parse_one_by_one(fake, run_cli):
    logs = TrainingLogs()
    stream = logs.write(JOB, "algo-1", (1000, "epoch=1; valid_loss=0.9;"), (2000, 'a "quoted" line'))
    stub_jobs(fake, job())
    result = run_cli("logs", JOB, "--json")
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [(x["host"], x["message"]) for x in lines] == [
        ("algo-1", "epoch=1; valid_loss=0.9;"),
        ("algo-1", 'a "quoted" line'),
    ]
    first = lines[0]
    assert first["job"] == JOB and first["stream"] == stream
    assert first["timestamp_ms"] == logs.base + 1000
    assert datetime.fromisoformat(first["timestamp"]) == datetime.fromtimestamp((logs.base + 1000) / 1000, UTC)
    assert "2 lines from 1 log stream" in result.err


def test_follow_reads_every_page_until_the_token_repeats(fake, run_cli, pauses):
    """GetLogEvents' paging, exactly: an empty page with a new token is not the end; the same token is; the next
    read goes on from the last token; a host that starts late is read from its head."""
    sm, cw = fake.stub("sagemaker"), fake.stub("logs")
    one, two = f"{JOB}/algo-1-1767225600", f"{JOB}/algo-2-1767225660"
    streams = {"logGroupName": GROUP, "logStreamNamePrefix": f"{JOB}/"}

    def listed(*names: str) -> None:
        cw.add_response("describe_log_streams", {"logStreams": [{"logStreamName": n} for n in names]}, streams)

    def page(stream: str, token: str | None, following: str, *events: tuple[int, str]) -> None:
        expected = {"logGroupName": GROUP, "logStreamName": stream, "startFromHead": True}
        if token is not None:
            expected["nextToken"] = token
        answer = {
            "events": [{"timestamp": t, "message": m, "ingestionTime": t + 1} for t, m in events],
            "nextForwardToken": following,
            "nextBackwardToken": "b/0",
        }
        cw.add_response("get_log_events", answer, expected)

    running, done = job("InProgress", "Training"), job("Completed")
    sm.add_response("describe_training_job", running, {"TrainingJobName": JOB})
    # read 1: one host so far, three pages, one of them empty, then the end (the same token again)
    listed(one)
    page(one, None, "f/1", (1000, "epoch=1;"), (1100, "epoch=2;"))
    page(one, "f/1", "f/2")
    page(one, "f/2", "f/3", (1200, "epoch=3;"))
    page(one, "f/3", "f/3")
    sm.add_response("describe_training_job", done, {"TrainingJobName": JOB})
    # read 2: the first host goes on from its token; the second host is read from its head
    listed(one, two)
    page(one, "f/3", "f/4", (4000, "test_accuracy=0.8;"))
    page(one, "f/4", "f/4")
    page(two, None, "g/1", (3500, "rank 1: done"))
    page(two, "g/1", "g/1")
    sm.add_response("describe_training_job", done, {"TrainingJobName": JOB})
    # read 3, after the end: nothing new, then it stops
    listed(one, two)
    page(one, "f/4", "f/4")
    page(two, "g/1", "g/1")

    result = run_cli("logs", JOB, "--follow", "--poll-seconds", "9")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert result.out.splitlines() == [
        "[algo-1] epoch=1;",
        "[algo-1] epoch=2;",
        "[algo-1] epoch=3;",
        "[algo-2] rank 1: done",  # logged before the line below, read in the same round
        "[algo-1] test_accuracy=0.8;",
    ]
    assert pauses.seen == [9.0, 5]  # the poll, then the short wait for the last lines after the end
    assert result.err == f"{JOB}: Completed / Completed; ran 0:10:30; 5 lines from 2 log streams\n"


def test_follow_with_small_pages_against_moto_prints_each_line_once(fake, run_cli, pauses, monkeypatch):
    monkeypatch.setattr(follow, "PAGE_LIMIT", 2)
    monkeypatch.setattr(follow, "MAX_PAGES_PER_READ", 2)  # a busy stream is read on at the next poll
    logs = TrainingLogs()
    logs.write(JOB, "algo-1", *[(i * 100, f"line {i}") for i in range(1, 6)])
    pauses.actions.append(lambda: logs.write(JOB, "algo-1", (700, "line 6"), (800, "line 7")))
    stub_jobs(fake, job("InProgress", "Training"), job("InProgress", "Training"), job(), job())
    result = run_cli("logs", JOB, "--follow")
    assert result.code == 0, result.err
    fake.assert_stubs_used()
    assert result.out.splitlines() == [f"[algo-1] line {i}" for i in range(1, 8)]


def test_a_job_without_streams_yet_says_so(fake, run_cli):
    TrainingLogs()
    stub_jobs(fake, job("InProgress", "Starting"))
    result = run_cli("logs", JOB)
    assert result.code == 0, result.err
    assert result.out == ""
    assert result.err == (
        f"{JOB} has no log streams yet (InProgress / Starting): its hosts log once training starts; --follow waits "
        "for them\n"
    )


def test_no_log_group_yet_is_no_streams(fake, run_cli):
    """The first job in a region: /aws/sagemaker/TrainingJobs does not exist yet (moto: ResourceNotFound)."""
    stub_jobs(fake, job("Failed", "Failed", FailureReason="CapacityError: no ml.g5.xlarge capacity"))
    result = run_cli("logs", JOB)
    assert result.code == 0, result.err
    assert result.err == f"{JOB} logged nothing: Failed / Failed - CapacityError: no ml.g5.xlarge capacity\n"


def test_an_unknown_job_is_an_error(fake, run_cli):
    fake.stub("sagemaker").add_client_error(
        "describe_training_job", "ValidationException", "Requested resource not found.", 400
    )
    result = run_cli("logs", JOB)
    assert result.code == EXIT_FAILED
    assert result.err.startswith(f"error: There is no training job {JOB} in {REGION}: `dogbreeds train` prints")
    assert "logs" not in fake.created


@pytest.mark.parametrize("name", ["-starts-with-a-hyphen", "has_underscore", "x" * 64])
def test_a_name_that_is_no_job_name_is_a_usage_error(fake, run_cli, name):
    result = run_cli("logs", name) if not name.startswith("-") else run_cli("logs", "--", name)
    assert result.code == EXIT_USAGE
    assert result.err == f"error: JOB {name!r}: a training job's name is 1-63 letters, digits and hyphens\n"
    assert fake.opened == []
