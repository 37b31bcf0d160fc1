"""model.tar.gz as SageMaker makes it from a training job's model folder, and unpacks it on an endpoint instance."""

from __future__ import annotations

import tarfile
from pathlib import Path


def package_model(model_dir: Path, archive: Path) -> Path:
    """``model.tar.gz`` as a SageMaker training job writes it: the model folder's content at the archive root."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(Path(model_dir).rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


def deploy_model(archive: Path, model_dir: Path) -> Path:
    """``model_dir`` laid out as ``/opt/ml/model`` on an endpoint: the archive extracted, ``code/`` included."""
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir
