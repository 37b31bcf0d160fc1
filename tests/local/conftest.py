"""Local mode's steps, built once per session at small sizes: an image set, a training job, the served model.

``trained_job`` is the session's one SageMaker training job (tests/training/sagemaker_job.py, shared with
tests/training): the real training toolkit runs train.py with two processes under torchrun, as local mode
runs it; ``runtime`` serves its model through the real inference toolkit behind a ``RuntimeServer``;
``runtime_client`` is a plain boto3 client for it.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from dogbreeds.local import training_job
from dogbreeds.local.imagesets import DEFAULT_SIZE, image_for_class, make_image_set
from dogbreeds.local.packaging import deploy_model, package_model
from tests.training import sagemaker_job

CLASSES = ("001.Affenpinscher", "042.Carolina_dog", "103.Mastiff")
ENDPOINT = "dog-breed-classifier"
# main() with these options takes seconds: 3 classes of 16 training images, 1 epoch, 2 processes.
TINY_DEMO = ("--classes", "3", "--images-per-class", "16", "--epochs", "1")


class Trained(NamedTuple):
    job: training_job.TrainingJob
    log: str
    status: int


class Served(NamedTuple):
    url: str
    worker: Any  # dogbreeds.local.serving.ModelWorker


@pytest.fixture(scope="session")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes; 16 train, 4 valid and 4 test images each. Read only."""
    return make_image_set(
        tmp_path_factory.mktemp("local") / "dogImages",
        classes=CLASSES,
        per_split={"train": 16, "valid": 4, "test": 4},
    )


@pytest.fixture(scope="session")
def photo() -> bytes:
    """A JPEG of the Carolina dog class, drawn as the image set's are but not part of it."""
    buffer = io.BytesIO()
    image_for_class(CLASSES.index("042.Carolina_dog"), DEFAULT_SIZE, random.Random(7)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def trained_job(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The training step: the toolkit runs train.py under torchrun (2 processes) in a stand-in /opt/ml."""
    shared = sagemaker_job.sagemaker_job(tmp_path_factory)
    assert sagemaker_job.CLASSES == CLASSES
    return Trained(shared.job, shared.log, shared.status)


@pytest.fixture(scope="session")
def model_archive(trained_job: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert trained_job.status == 0, trained_job.log[-5000:]
    return package_model(trained_job.job.model_dir, tmp_path_factory.mktemp("s3") / "model.tar.gz")


@pytest.fixture(scope="session")
def deployed_model(model_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return deploy_model(model_archive, tmp_path_factory.mktemp("endpoint") / "opt" / "ml" / "model")


@pytest.fixture(scope="session")
def runtime(deployed_model: Path) -> Iterator[Served]:
    from dogbreeds.local.runtime import RuntimeServer
    from dogbreeds.local.serving import ModelWorker

    worker = ModelWorker(deployed_model, environment={"TOP_K": "5"})
    with RuntimeServer({ENDPOINT: worker}) as server:
        yield Served(server.url, worker)


@pytest.fixture(scope="session")
def runtime_client(runtime: Served) -> Any:
    from dogbreeds.local.demo import runtime_client

    return runtime_client(runtime.url)
