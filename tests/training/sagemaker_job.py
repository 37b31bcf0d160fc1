"""The one SageMaker training job of the test session, shared by tests/training and tests/local.

The real SageMaker training toolkit (the PyTorch training container's ``train`` entry point) runs train.py
under torchrun with two processes, in a stand-in ``/opt/ml`` laid out by local mode
(``dogbreeds.local.training_job``), with the code archive the training stack uploads: the path of the
pipeline's multi-instance job. Its processes' start-up costs most of its time, so it runs once per session
and is made to show everything at once:

- split channels (``train``, ``validation``, ``test``) and a ``pretrained`` channel of torchvision-named weights;
- odd valid and test sizes, so the two ranks' evaluation shards differ in size and no image may count twice;
- the hyperparameters JSON-encoded as the SageMaker API carries them (``channels_last`` a JSON true).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dogbreeds.local import training_job
from dogbreeds.local.imagesets import DEFAULT_CLASSES, make_image_set

CLASSES = DEFAULT_CLASSES
# Per class: 48 train images, 24 a rank; valid 15 (8 and 7), test 9 (5 and 4).
PER_SPLIT = {"train": 16, "valid": 5, "test": 3}
EPOCHS = 2
PROCESSES = 2
WEIGHTS_FILE = "resnet18-f37072fd.pth"  # torchvision's file name
HYPERPARAMETERS = {
    "backbone": "resnet18",
    "image_size": 32,
    "batch_size": 8,
    "epochs": EPOCHS,
    "patience": 0,
    "channels_last": True,  # reaches train.py as "--channels_last True"
    "workers": 0,
    "sagemaker_torch_distributed_enabled": True,
    # Processes per host: the number of GPUs on a GPU instance; two CPU processes here.
    "sagemaker_mpi_num_of_processes_per_host": PROCESSES,
}


@dataclass(frozen=True)
class SharedJob:
    job: training_job.TrainingJob
    log: str  # the toolkit's output, its processes' stdout and stderr
    status: int  # the toolkit's exit status
    images: Path  # the image set the channels link to


_JOBS: dict[Path, SharedJob] = {}


def sagemaker_job(tmp_path_factory: pytest.TempPathFactory) -> SharedJob:
    """The job, run on the first call of the session (the session-scoped fixtures of both folders call this)."""
    key = tmp_path_factory.getbasetemp()
    if key not in _JOBS:
        _JOBS[key] = _run(tmp_path_factory.mktemp("sagemaker-job"))
    return _JOBS[key]


def _run(work: Path) -> SharedJob:
    import torch
    from torchvision import models

    images = make_image_set(work / "dogImages", classes=CLASSES, per_split=PER_SPLIT)
    weights = work / "weights" / WEIGHTS_FILE
    weights.parent.mkdir()
    torch.save(models.resnet18().state_dict(), weights)
    channels = {
        "train": images / "train",
        "validation": images / "valid",
        "test": images / "test",
        "pretrained": weights.parent,
    }
    archive = training_job.build_code_archive(work / "build")
    job = training_job.lay_out_job(work / "opt-ml", channels, HYPERPARAMETERS, archive)
    process = training_job.start_job(job)
    try:
        log, _ = process.communicate(timeout=300)
    finally:
        training_job.stop_process(process)
    return SharedJob(job, log, process.returncode, images)
