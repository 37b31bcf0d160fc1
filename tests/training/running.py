"""Running train.py for the tests: in this process for what its code decides, in processes of its own for what
only processes show (torchrun's ranks; the SageMaker toolkit: tests/training/sagemaker_job.py).

``train_here`` runs ``train.run`` as ``python train.py ARGS`` would (the same exit status, stdout and stderr)
without paying for a new interpreter and its torch import, a few seconds per run on this machine.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import train
from dogbreeds.local.training_job import VENV_BIN, launch_environment
from metrics import parse_metrics

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "training" / "train.py"
# resnet18 from random weights on 32-pixel crops of 48x40 images: an epoch takes well under a second.
TINY = ("--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--batch-size", "8", "--workers", "0")


@dataclass(frozen=True)
class Result:
    """What a train.py run left: its exit status and output."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def metrics(self) -> dict[str, list[float]]:
        """The metric lines' values, as SageMaker reads them from the log."""
        return parse_metrics(self.stdout)

    @property
    def error(self) -> str:
        """The last line on stderr (``train.py: error: ...`` after a failure)."""
        return (self.stderr.strip().splitlines() or [""])[-1]


@dataclass(frozen=True)
class Run:
    """A finished train.py run: its output and its folders."""

    result: Result
    model_dir: Path
    output_dir: Path

    @property
    def stdout(self) -> str:
        return self.result.stdout

    @property
    def metrics(self) -> dict[str, list[float]]:
        return self.result.metrics

    @property
    def summary(self) -> dict:
        """metrics.json."""
        return json.loads((self.output_dir / train.METRICS_FILE).read_text())


def finished_run(work: Path, *args: object) -> Run:
    """train.py ARGS in this process, writing its model and outputs under ``work``; it must succeed."""
    result = train_here(*args, "--model-dir", work / "model", "--output-dir", work / "output")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    return Run(result, work / "model", work / "output")


def train_here(*args: object, env: Mapping[str, str] | None = None) -> Result:
    """``python train.py ARGS`` in this process: the exit status (``train.run``'s, or argparse's 2), stdout, stderr.

    While it runs, the environment is what a training process started from here gets
    (``training_job.launch_environment``: no SageMaker or torchrun variables) plus ``env``; afterwards the
    environment and the logging set-up that train.py changes are as they were.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        _environment(launch_environment() | dict(env or {})),
        _logging_restored(),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            status = train.run(train.get_args_parser().parse_args([str(arg) for arg in args]))
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
    return Result(status, stdout.getvalue(), stderr.getvalue())


def train_under_torchrun(*args: object, cwd: Path, processes: int = 2) -> Result:
    """``torchrun --standalone --nproc-per-node PROCESSES train.py ARGS`` in ``cwd``, as a job's host runs it."""
    launcher = [VENV_BIN / "torchrun", "--standalone", f"--nproc-per-node={processes}", TRAIN_PY]
    result = subprocess.run(
        [str(part) for part in (*launcher, *args)],
        cwd=cwd,
        env=launch_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return Result(result.returncode, result.stdout, result.stderr)


@contextlib.contextmanager
def _environment(environment: Mapping[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in set(os.environ) - set(environment):
            patch.delenv(name)
        for name, value in environment.items():
            patch.setenv(name, value)
        yield


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """train.setup_logging replaces the root logger's handlers (pytest's among them); put them back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
