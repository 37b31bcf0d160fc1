"""Running train.py the way jobs run it (a subprocess, torchrun), on small generated image sets.

The helpers are fixtures (``run_train``, ``tiny``) so that test modules need not import this file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.imagesets import make_image_set

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "training" / "train.py"
VENV_BIN = Path(sys.executable).parent
# resnet18 from random weights on 32-pixel crops of 48x40 images: an epoch takes well under a second.
TINY = ("--backbone", "resnet18", "--pretrained", "none", "--image-size", "32", "--batch-size", "8", "--workers", "0")
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _job_env(**extra: str) -> dict[str, str]:
    """This environment without SageMaker or torchrun variables, with the venv's scripts first on PATH."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SM_", "SAGEMAKER_")) and name not in _LAUNCH_VARIABLES
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def _run_train(*args: str | Path, cwd: Path, processes: int = 1) -> subprocess.CompletedProcess[str]:
    """``python train.py ARGS``, or under ``torchrun`` with ``processes`` processes, in ``cwd``."""
    launcher = (
        [sys.executable] if processes == 1 else [VENV_BIN / "torchrun", "--standalone", f"--nproc-per-node={processes}"]
    )
    return subprocess.run(
        [*map(str, launcher), str(TRAIN_PY), *map(str, args)],
        cwd=cwd,
        env=_job_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="session")
def image_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes; 12 train, 4 valid and 4 test images each. Read only: copy it to change it."""
    return make_image_set(tmp_path_factory.mktemp("dogImages"))


@pytest.fixture
def image_set_copy(image_set: Path, tmp_path: Path) -> Path:
    """A copy of ``image_set`` that a test may break."""
    return Path(shutil.copytree(image_set, tmp_path / "dogImages"))


@pytest.fixture(scope="session")
def run_train() -> Callable[..., subprocess.CompletedProcess[str]]:
    return _run_train


@pytest.fixture(scope="session")
def tiny() -> tuple[str, ...]:
    """Options for a fast run: resnet18 from random weights, 32-pixel crops, batches of 8, no workers."""
    return TINY
