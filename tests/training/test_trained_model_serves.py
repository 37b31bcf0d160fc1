"""From training to serving: the artifact train.py writes, packaged and extracted as SageMaker does, answers.

One epoch of the real training script on a generated image set, ``model.tar.gz`` made from its model
folder as a training job makes it (the folder's content at the archive root), extracted as an endpoint
instance does, and served through the real inference toolkit with the code that travelled inside it.
"""

from __future__ import annotations

import random
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from model import readable_label
from tests.imagesets import DEFAULT_CLASSES, image_for_class
from tests.training.inference_fixtures import deploy_model, encoded, package_model, start_endpoint


def test_a_model_trained_by_train_py_is_served_with_its_class_names(
    image_set: Path,
    run_train: Callable[..., subprocess.CompletedProcess[str]],
    tiny: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = run_train(
        "--data-dir", image_set, *tiny, "--epochs", 1,
        "--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output", cwd=tmp_path,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr

    archive = package_model(tmp_path / "model", tmp_path / "model.tar.gz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"model.pth", "classes.json", "model_config.json", "code/inference.py", "code/model.py"} <= names
    assert not any(name.startswith(("code/train.py", "code/data.py")) for name in names)  # serving code only

    endpoint = start_endpoint(deploy_model(archive, tmp_path / "opt" / "ml" / "model"), monkeypatch)
    photo = encoded(image_for_class(1, (48, 40), random.Random(7)), "JPEG")
    response = endpoint.invoke(photo, "image/jpeg")
    assert response.status == 200, response.body
    answer = response.json()
    predictions = answer["predictions"]
    assert sorted(p["label"] for p in predictions) == sorted(readable_label(c) for c in DEFAULT_CLASSES)
    assert {p["label"]: p["index"] for p in predictions} == {
        readable_label(name): index for index, name in enumerate(DEFAULT_CLASSES)
    }
    probabilities = [p["probability"] for p in predictions]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert answer["model"]["backbone"] == "resnet18"
    assert answer["model"]["num_classes"] == len(DEFAULT_CLASSES)
