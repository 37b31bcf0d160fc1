"""From training to serving: the artifact train.py writes, packaged and extracted as SageMaker does, answers.

The model folder of a whole train.py run (conftest's ``trained``), ``model.tar.gz`` made from it as a training
job makes it (the folder's content at the archive root), extracted as an endpoint instance does, and served
through the real inference toolkit (local mode's ModelWorker) with the code that travelled inside it.
"""

from __future__ import annotations

import ast
import random
import tarfile
from pathlib import Path

import pytest

from model import CODE_SOURCE, SERVING_FILES, readable_label
from tests.imagesets import DEFAULT_CLASSES, image_for_class
from tests.training.inference_fixtures import deploy_model, encoded, package_model, start_endpoint
from tests.training.running import Run


def test_a_model_trained_by_train_py_is_served_with_its_class_names(trained: Run, tmp_path: Path) -> None:
    archive = package_model(trained.model_dir, tmp_path / "model.tar.gz")
    with tarfile.open(archive) as tar:
        names = {member.name for member in tar.getmembers() if member.isfile()}
    # The serving code only: hyperparameters.py because model.py imports it, nothing of the training side.
    assert names == {"model.pth", "classes.json", "model_config.json"} | {f"code/{name}" for name in SERVING_FILES}
    assert "code/hyperparameters.py" in names

    endpoint = start_endpoint(deploy_model(archive, tmp_path / "opt" / "ml" / "model"))
    photo = encoded(image_for_class(1, (48, 40), random.Random(7)), "JPEG")
    response = endpoint.answer(photo, "image/jpeg")
    assert response.status == 200, response.text
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


def test_the_serving_code_imports_only_the_training_modules_that_ship_with_it() -> None:
    """An endpoint has code/ alone: a module of training/ that the serving code imports must be in SERVING_FILES."""
    modules = {path.stem for path in CODE_SOURCE.glob("*.py")}
    shipped = {Path(name).stem for name in SERVING_FILES}
    for name in SERVING_FILES:
        tree = ast.parse((CODE_SOURCE / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert {module.split(".")[0] for module in imported} & modules <= shipped, name
