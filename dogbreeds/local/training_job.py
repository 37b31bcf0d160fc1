"""A SageMaker training job on this machine: the real training toolkit runs train.py under a stand-in /opt/ml.

``train`` (the entry point of the SageMaker PyTorch training container: sagemaker-training with
sagemaker-pytorch-training) reads ``SAGEMAKER_BASE_DIR`` instead of ``/opt/ml``, unpacks the code
archive named by ``sagemaker_submit_directory`` into ``<base>/code``, sets the ``SM_*`` variables and
runs ``sagemaker_program`` with the hyperparameters as ``--name value``; with
``sagemaker_torch_distributed_enabled`` it runs it under ``torchrun``, one process per GPU, or
``sagemaker_mpi_num_of_processes_per_host`` processes. Afterwards SageMaker would tar ``<base>/model``
into ``model.tar.gz`` and ``<base>/output/data`` into ``output.tar.gz``; a failed job's reason is the
``<base>/output/failure`` file.

The layout is that of a one-instance job (host ``algo-1``); ``SM_STUDIO_LOCAL_MODE`` spares the toolkit
its DNS wait for the host names, which would otherwise be retried for minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TOOLKIT = VENV_BIN / "train"  # the container's entry point
TRAINING_MODULE = "sagemaker_pytorch_container.training:main"
PROGRAM = "train.py"
HOST = "algo-1"
RESOURCE_CONFIG = {
    "current_host": HOST,
    "hosts": [HOST],
    "current_group_name": "homogeneousCluster",
    "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": [HOST]}],
    "network_interface_name": "eth0",
}
CHANNEL_CONFIG = {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
# Variables of a SageMaker job or a torchrun launch that must not leak from this process into the job.
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_BUILD_CODE_ARCHIVE = (
    "import sys; from pathlib import Path; from dogbreeds_stacks.constructs.code_asset import build_code_archive; "
    "print(build_code_archive(build_dir=Path(sys.argv[1])))"
)


class JobError(RuntimeError):
    """The job could not be set up or run; the message says why."""


@dataclass(frozen=True)
class TrainingJob:
    """The stand-in ``/opt/ml`` of one job and where SageMaker collects its results."""

    base: Path

    @property
    def model_dir(self) -> Path:
        """``/opt/ml/model``: what becomes ``model.tar.gz``."""
        return self.base / "model"

    @property
    def output_data_dir(self) -> Path:
        """``/opt/ml/output/data``: what becomes ``output.tar.gz`` (metrics.json, curves.png)."""
        return self.base / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return self.base / "output" / "failure"

    @property
    def success_file(self) -> Path:
        return self.base / "output" / "success"

    @property
    def checkpoint_dir(self) -> Path:
        return self.base / "checkpoints"

    def failure_reason(self) -> str | None:
        """The job's FailureReason as SageMaker reports it (the failure file's first 1024 characters)."""
        if not self.failure_file.is_file():
            return None
        return self.failure_file.read_text(errors="replace")[:1024]


def build_code_archive(build_dir: Path) -> Path:
    """training/ packed as the training stack uploads it for ``sagemaker_submit_directory`` (the same function).

    It runs in a child process: the module imports the CDK, whose runtime is a Node.js process.
    """
    result = subprocess.run(  # noqa: S603 (this interpreter and a fixed script)
        [sys.executable, "-c", _BUILD_CODE_ARCHIVE, str(build_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise JobError(f"could not build the training code archive: {result.stderr.strip()[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def lay_out_job(
    base: Path, channels: Mapping[str, Path], hyperparameters: Mapping[str, object], code_archive: Path
) -> TrainingJob:
    """The ``/opt/ml`` folder of a one-instance job, hyperparameters JSON-encoded as the SageMaker API carries them.

    Each channel is linked (a File-mode channel would be a copy in ``input/data/<channel>``).
    """
    for name, source in channels.items():
        channel = base / "input" / "data" / name
        channel.parent.mkdir(parents=True, exist_ok=True)
        channel.symlink_to(Path(source).resolve(), target_is_directory=Path(source).is_dir())
    config = base / "input" / "config"
    config.mkdir(parents=True)
    program = {"sagemaker_program": PROGRAM, "sagemaker_submit_directory": str(code_archive)}
    encoded = {name: json.dumps(value) for name, value in (program | dict(hyperparameters)).items()}
    (config / "hyperparameters.json").write_text(json.dumps(encoded, indent=2))
    (config / "inputdataconfig.json").write_text(json.dumps(dict.fromkeys(channels, CHANNEL_CONFIG), indent=2))
    (config / "resourceconfig.json").write_text(json.dumps(RESOURCE_CONFIG, indent=2))
    job = TrainingJob(base)
    job.model_dir.mkdir()
    # Without output/, the toolkit cannot record a failure and exits 0 after a failed script.
    job.output_data_dir.mkdir(parents=True)
    return job


def launch_environment(base_environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment (or ``base_environment``) without SageMaker or torchrun variables, with this
    interpreter's scripts (torchrun, as in the container) first on PATH and unbuffered output: what a
    training process started from here gets, whether the toolkit starts it or not."""
    source = os.environ if base_environment is None else base_environment
    environment = {
        name: value
        for name, value in source.items()
        if not name.startswith(("SM_", "SAGEMAKER_")) and name not in _LAUNCH_VARIABLES
    }
    environment["PATH"] = f"{VENV_BIN}{os.pathsep}{environment.get('PATH', '')}"
    environment["PYTHONUNBUFFERED"] = "1"  # progress lines as they happen
    return environment


def job_environment(job: TrainingJob, base_environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """``launch_environment`` plus what points the toolkit at ``job``."""
    environment = launch_environment(base_environment)
    environment["SAGEMAKER_BASE_DIR"] = str(job.base)
    environment["SAGEMAKER_TRAINING_MODULE"] = TRAINING_MODULE
    environment["SM_STUDIO_LOCAL_MODE"] = "true"
    return environment


def start_job(job: TrainingJob) -> subprocess.Popen[str]:
    """Start the toolkit on ``job``, its output (stdout and stderr) on the returned process's ``stdout``.

    The toolkit and everything it starts (torchrun, the training processes) form their own process
    group, so that ``stop_process`` ends them all, and a Ctrl-C in the terminal reaches only this process.
    """
    if not TOOLKIT.is_file():
        raise JobError(f"{TOOLKIT} does not exist: install the SageMaker training toolkit (the 'local' extra)")
    return subprocess.Popen(  # noqa: S603 (the toolkit's entry point, no shell)
        [str(TOOLKIT)],
        cwd=job.base,
        env=job_environment(job),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """End ``process`` and its process group (started with ``start_new_session``): SIGTERM, then SIGKILL."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    # Children the group leader left behind (it has exited, the group may not have).
    _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal_number)
