"""Small generated image sets, train.py's runs that several test modules read, and the session's SageMaker job.

train.py runs in this process (``running.train_here``) wherever one process shows what is tested; under
torchrun or the SageMaker toolkit only where separate processes are the point (``running.train_under_torchrun``,
``sagemaker_job``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dogbreeds.local.serving import ModelWorker
from tests.imagesets import make_image_set
from tests.training import sagemaker_job as shared
from tests.training.inference_fixtures import deploy_stand_in, start_endpoint
from tests.training.running import TINY, Run, finished_run

# The whole run's options: it stops early (patience 1) within EPOCHS.
EPOCHS = 6
PATIENCE = 1


@pytest.fixture(scope="session")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes; 12 train, 4 valid and 4 test images each. Read only: copy it to change it."""
    return make_image_set(tmp_path_factory.mktemp("dogImages"))


@pytest.fixture
def image_set_copy(image_set: Path, tmp_path: Path) -> Path:
    """A copy of ``image_set`` that a test may break."""
    return Path(shutil.copytree(image_set, tmp_path / "dogImages"))


@pytest.fixture(scope="session")
def tiny() -> tuple[str, ...]:
    """Options for a fast run: resnet18 from random weights, 32-pixel crops, batches of 8, no workers."""
    return TINY


@pytest.fixture(scope="session")
def trained(image_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A whole run in one process, stopped early by --patience: its metric lines, outputs and artifact."""
    work = tmp_path_factory.mktemp("run")
    return finished_run(work, "--data-dir", image_set, *TINY, "--epochs", EPOCHS, "--patience", PATIENCE)


@pytest.fixture(scope="session")
def sagemaker_job(tmp_path_factory: pytest.TempPathFactory) -> shared.SharedJob:
    """The session's one SageMaker training job: the toolkit, torchrun, two processes (tests/training/sagemaker_job)."""
    return shared.sagemaker_job(tmp_path_factory)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt/ml/model of an endpoint instance serving the stand-in model (one per test module). Read only."""
    return deploy_stand_in(tmp_path_factory.mktemp("stand-in"))


@pytest.fixture(scope="module")
def endpoint(deployed: Path) -> ModelWorker:
    """A worker with the model's default environment; it keeps no state between requests, as TorchServe's."""
    return start_endpoint(deployed)
