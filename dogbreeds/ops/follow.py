"""Following SageMaker training jobs: every log stream of a job, read to its end, and how the lines are shown.

A training job writes one CloudWatch Logs stream per host in ``/aws/sagemaker/TrainingJobs``, named
``<job>/algo-<N>-<epoch seconds>`` (torchrun's ranks on a host share its stream; a spot job that restarts
starts new ones). ``JobLogs`` finds a job's streams (DescribeLogStreams) and reads each with GetLogEvents from
its head, keeping the stream's ``nextForwardToken`` so that the next read returns only what came since. A
stream has been read to its end when GetLogEvents answers the token it was given; a page may be empty before
that, so an empty page is no end.

``Display`` writes what a command follows: on a terminal with rich (a live status line with the elapsed time,
tables), elsewhere plain lines and aligned columns that a script or a CI log reads as they are.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TextIO

from dogbreeds.ops.errors import client_error_code

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_JOB_STATES = frozenset({"Completed", "Failed", "Stopped"})
# GetLogEvents' page size: None leaves it to the service (up to 10,000 events or 1 MB); tests lower it.
PAGE_LIMIT: int | None = None
# A stream that writes faster than it is read is read on at the next poll, so that every stream gets its turn.
MAX_PAGES_PER_READ = 50


def pause(seconds: float) -> None:
    """The wait between polls (tests replace it)."""
    time.sleep(seconds)


def now() -> datetime:
    """The time elapsed times are measured to (tests replace it)."""
    return datetime.now(UTC)


def elapsed(since: datetime, until: datetime | None = None) -> str:
    """``H:MM:SS`` (``1 day, H:MM:SS`` past a day) from ``since`` to ``until`` (default: now)."""
    seconds = max(0, int(((until or now()) - since).total_seconds()))
    return str(timedelta(seconds=seconds))


def duration(start: datetime | None, end: datetime | None) -> str:
    """A job's run time as ``H:MM:SS``; ``running`` while it has no end; ``-`` before it starts."""
    if start is None:
        return "-"
    return elapsed(start, end) if end is not None else "running"


def host_of(stream: str) -> str:
    """``<job>/algo-2-1767225600`` -> ``algo-2``."""
    name = stream.rsplit("/", 1)[-1]
    head, _, tail = name.rpartition("-")
    return head if head and tail.isdigit() else name


def not_found(err: Exception) -> bool:
    """SageMaker's answer for a job that does not exist (yet): ValidationException or ResourceNotFound."""
    code = client_error_code(err)
    text = str(err).lower()
    return code == "ResourceNotFound" or (
        code == "ValidationException" and ("not found" in text or "does not exist" in text)
    )


# --- the logs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    """One line of a job's log: an event, or one line of a multi-line event."""

    job: str
    stream: str
    timestamp: int  # milliseconds since the epoch, as CloudWatch Logs gives it
    message: str

    @property
    def host(self) -> str:
        return host_of(self.stream)

    def as_json(self) -> dict:
        at = datetime.fromtimestamp(self.timestamp / 1000, UTC)
        return {
            "job": self.job,
            "host": self.host,
            "stream": self.stream,
            "timestamp": at.isoformat(timespec="milliseconds"),
            "timestamp_ms": self.timestamp,
            "message": self.message,
        }


@dataclass
class JobLogs:
    """Every log stream of one training job, each read on from where the last read stopped."""

    logs: object  # a CloudWatch Logs client
    job: str
    tokens: dict[str, str | None] = field(default_factory=dict)  # stream -> its nextForwardToken

    def streams(self) -> list[str]:
        """The job's streams (``<job>/...``: the slash keeps ``job-1`` from matching ``job-10``)."""
        paginator = self.logs.get_paginator("describe_log_streams")
        try:
            return [
                s["logStreamName"]
                for page in paginator.paginate(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job}/")
                for s in page.get("logStreams", [])
            ]
        except Exception as err:
            if client_error_code(err) == "ResourceNotFoundException":
                return []  # no job has logged in this region yet: the log group does not exist
            raise

    def read(self) -> list[LogLine]:
        """What every stream has logged since the last read, interleaved by time (each stream in its order)."""
        for stream in self.streams():
            self.tokens.setdefault(stream, None)
        lines: list[LogLine] = []
        for stream in sorted(self.tokens):
            lines += self._read_stream(stream)
        return sorted(lines, key=lambda line: line.timestamp)  # stable: a stream's own order is kept

    def _read_stream(self, stream: str) -> list[LogLine]:
        token = self.tokens[stream]
        lines: list[LogLine] = []
        for _ in range(MAX_PAGES_PER_READ):
            request: dict = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if token is not None:
                request["nextToken"] = token
            if PAGE_LIMIT is not None:
                request["limit"] = PAGE_LIMIT
            try:
                page = self.logs.get_log_events(**request)
            except Exception as err:
                if client_error_code(err) == "ResourceNotFoundException":
                    break  # the stream is gone (the log group's retention); what was read stays
                raise
            for event in page.get("events", []):
                for text in event.get("message", "").rstrip("\r\n").splitlines() or [""]:
                    lines.append(LogLine(self.job, stream, event["timestamp"], text.rstrip()))
            following = page.get("nextForwardToken")
            if following is None or following == token:
                break  # the end of the stream, for now
            token = following
        self.tokens[stream] = token
        return lines


# --- the display ----------------------------------------------------------------------------------------

# Colours of the hosts' prefixes on a terminal, in turn.
_HOST_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal that can redraw a status line (tests replace it)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class Display:
    """Lines, a live status line and tables on ``stream``: rich on a terminal, plain text elsewhere.

    Log text is always written as it is: rich's markup and highlighting are off, so ``[...]`` in a log line
    stays in the line.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.terminal = is_terminal(self.stream)
        self._console = None
        self._live = None
        self._status: Callable[[], str] | None = None
        self._spinner = None
        self._styles: dict[str, str] = {}
        if self.terminal:
            from rich.console import Console  # only on a terminal: scripts never pay for the import

            self._console = Console(file=self.stream, markup=False, highlight=False, emoji=False, force_terminal=True)

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self, text: str = "", *, style: str | None = None) -> None:
        if self._console is None:
            print(text, file=self.stream, flush=True)
            return
        from rich.text import Text

        self._console.print(Text(text, style=style or ""), soft_wrap=True)

    def log(self, prefix: str, key: str, message: str, *, indent: str = "") -> None:
        """A log line after its ``[prefix]``; on a terminal each ``key`` (a stream) keeps a colour."""
        if self._console is None:
            print(f"{indent}[{prefix}] {message}", file=self.stream, flush=True)
            return
        from rich.text import Text

        style = self._styles.setdefault(key, _HOST_STYLES[len(self._styles) % len(_HOST_STYLES)])
        self._console.print(Text.assemble(indent, (f"[{prefix}]", style), " ", message), soft_wrap=True)

    def status(self, render: Callable[[], str]) -> None:
        """On a terminal, a status line below the output, redrawn (with ``render()``) several times a second."""
        self._status = render
        if self._console is None or self._live is not None:
            return
        from rich.live import Live
        from rich.spinner import Spinner

        self._spinner = Spinner("dots", text="")
        self._live = Live(
            console=self._console,
            get_renderable=self._render_status,
            refresh_per_second=2,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def refresh(self) -> None:
        """Redraw the status line now (it is redrawn twice a second anyway)."""
        if self._live is not None:
            self._live.refresh()

    def _render_status(self):
        self._spinner.update(text=self._status() if self._status else "")
        return self._spinner

    def table(
        self,
        title: str,
        headers: Sequence[str],
        rows: Iterable[Sequence[str]],
        *,
        right: Iterable[int] = (),
    ) -> None:
        """A table: a rich table on a terminal, aligned columns (two spaces apart) elsewhere.

        ``right``: the indexes of the columns aligned right (numbers).
        """
        rows = [list(row) for row in rows]
        right = set(right)
        if self._console is not None:
            from rich import box
            from rich.table import Table

            table = Table(box=box.SIMPLE_HEAD, show_edge=False)
            for i, header in enumerate(headers):
                table.add_column(header, justify="right" if i in right else "left", overflow="fold")
            for row in rows:
                table.add_row(*row)
            self.line(title, style="bold")  # a title of its own: the table's would wrap to the table's width
            self._console.print(table)
            return
        widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
        self.line(title)
        for row in [list(headers), *rows]:
            cells = [
                str(cell).rjust(width) if i in right else str(cell).ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            self.line(("  " + "  ".join(cells)).rstrip())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
