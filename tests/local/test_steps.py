"""Local mode's steps one by one: image set, training job, model.tar.gz, endpoint, Lambda."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dogbreeds.local import demo, training_job
from dogbreeds.local.fileserver import FileServer
from dogbreeds.local.lambda_host import LambdaFunction
from tests.local.conftest import CLASSES, ENDPOINT, Served, Trained

# The session's one SageMaker job (torchrun): its readers run on the worker that ran it (pytest -n).
pytestmark = pytest.mark.xdist_group("sagemaker-job")


ARTIFACT = {
    "model.pth",
    "classes.json",
    "model_config.json",
    "code/inference.py",
    "code/model.py",
    "code/images.py",
    "code/hyperparameters.py",
}
LABELS = {name.split(".", 1)[1].replace("_", " ") for name in CLASSES}  # "Carolina dog", ...


# Image set --------------------------------------------------------------------------------------------


def test_the_generated_image_set_has_the_dogimages_layout(image_set: Path) -> None:
    for split, count in {"train": 16, "valid": 4, "test": 4}.items():
        assert sorted(p.name for p in (image_set / split).iterdir()) == list(CLASSES)
        for name in CLASSES:
            files = sorted((image_set / split / name).iterdir())
            assert len(files) == count
            assert files[0].name == f"{name.split('.', 1)[1]}_00000.jpg"
    found = demo.read_image_set(image_set)
    assert found.classes == list(CLASSES)
    assert found.counts == {"train": 48, "valid": 12, "test": 12}


def test_an_image_set_without_a_split_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "train" / "001.A").mkdir(parents=True)
    with pytest.raises(demo.StepFailed) as failure:
        demo.read_image_set(tmp_path)
    assert str(failure.value) == f"{tmp_path} is not in the dogImages layout: no valid/, test/ folder"


# Training job -----------------------------------------------------------------------------------------


def test_the_toolkit_trains_under_torchrun_and_leaves_the_artifact_where_sagemaker_collects_it(
    trained_job: Trained,
) -> None:
    job, log = trained_job.job, trained_job.log
    assert trained_job.status == 0, log[-5000:]
    assert re.search(r"torchrun --nnodes 1 --nproc_per_node 2 train\.py --backbone resnet18 ", log), log[-5000:]
    assert sorted(re.findall(r"^\[rank (\d)\] this process's shard: train 24, ", log, re.M)) == ["0", "1"]
    assert job.success_file.exists() and job.failure_reason() is None
    files = {p.relative_to(job.model_dir).as_posix() for p in job.model_dir.rglob("*") if p.is_file()}
    assert files >= ARTIFACT
    assert json.loads((job.model_dir / "classes.json").read_text()) == list(CLASSES)
    metrics = json.loads((job.output_data_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert (job.output_data_dir / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_the_hyperparameters_reach_the_toolkit_json_encoded_as_the_sagemaker_api_carries_them(
    trained_job: Trained,
) -> None:
    config = trained_job.job.base / "input" / "config"
    hyperparameters = json.loads((config / "hyperparameters.json").read_text())
    assert hyperparameters["sagemaker_program"] == '"train.py"'
    assert hyperparameters["sagemaker_torch_distributed_enabled"] == "true"
    assert hyperparameters["epochs"] == "2"
    assert Path(json.loads(hyperparameters["sagemaker_submit_directory"])).name.startswith("training-code-")
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"


def test_the_job_environment_drops_this_process_s_sagemaker_and_torchrun_variables(tmp_path: Path) -> None:
    job = training_job.TrainingJob(tmp_path)
    environment = training_job.job_environment(
        job, {"PATH": "/usr/bin", "SM_MODEL_DIR": "/elsewhere", "SAGEMAKER_PROGRAM": "x.py", "RANK": "3", "HOME": "/h"}
    )
    assert environment == {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin",
        "HOME": "/h",
        "PYTHONUNBUFFERED": "1",
        "SAGEMAKER_BASE_DIR": str(tmp_path),
        "SAGEMAKER_TRAINING_MODULE": "sagemaker_pytorch_container.training:main",
        "SM_STUDIO_LOCAL_MODE": "true",
    }


# model.tar.gz -----------------------------------------------------------------------------------------


def test_model_tar_gz_has_the_model_folder_s_content_at_its_root(model_archive: Path, trained_job: Trained) -> None:
    with tarfile.open(model_archive) as tar:
        members = {member.name: member for member in tar.getmembers()}
    files = {name for name, member in members.items() if member.isfile()}
    assert files >= ARTIFACT
    assert not any(name.startswith(("/", "./", "opt/", "model/")) for name in members)
    assert not any(name.startswith(("code/train.py", "code/data.py")) for name in members)  # serving code only
    assert files == {
        p.relative_to(trained_job.job.model_dir).as_posix() for p in trained_job.job.model_dir.rglob("*") if p.is_file()
    }


def test_the_endpoint_s_model_folder_is_the_archive_extracted(deployed_model: Path, trained_job: Trained) -> None:
    for name in ARTIFACT:
        assert (deployed_model / name).read_bytes() == (trained_job.job.model_dir / name).read_bytes()


# Endpoint ---------------------------------------------------------------------------------------------


def test_the_served_model_answers_a_plain_boto3_client_with_the_trained_classes(
    runtime_client: Any, photo: bytes
) -> None:
    response = runtime_client.invoke_endpoint(
        EndpointName=ENDPOINT, Body=photo, ContentType="image/jpeg", Accept="application/json"
    )
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    answer = json.loads(response["Body"].read())
    predictions = answer["predictions"]
    assert {p["label"] for p in predictions} == LABELS  # TOP_K 5 is capped at the 3 classes
    assert {p["label"]: p["index"] for p in predictions}["Carolina dog"] == 1
    assert sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-4)
    assert answer["model"]["backbone"] == "resnet18"
    assert answer["model"]["num_classes"] == 3


def test_custom_attributes_reach_the_serving_code(runtime_client: Any, photo: bytes) -> None:
    response = runtime_client.invoke_endpoint(
        EndpointName=ENDPOINT, Body=photo, ContentType="application/x-image", CustomAttributes="top_k=2"
    )
    assert len(json.loads(response["Body"].read())["predictions"]) == 2


def test_a_body_that_is_no_image_is_a_model_error_with_the_toolkit_s_status_and_message(runtime_client: Any) -> None:
    with pytest.raises(runtime_client.exceptions.ModelError) as raised:
        runtime_client.invoke_endpoint(EndpointName=ENDPOINT, Body=b"not an image", ContentType="image/jpeg")
    error = raised.value.response
    assert error["OriginalStatusCode"] == 400
    # The serving code answers errors itself: the message alone, no traceback (the worker's log has it).
    assert error["OriginalMessage"] == (
        "the request body is not an image in a supported format (JPEG, PNG, WEBP, GIF, BMP, TIFF)"
    )


def test_an_unknown_endpoint_is_a_validation_error(runtime_client: Any, photo: bytes) -> None:
    with pytest.raises(ClientError) as raised:
        runtime_client.invoke_endpoint(EndpointName="no-such-endpoint", Body=photo, ContentType="image/jpeg")
    assert raised.value.response["Error"]["Code"] == "ValidationError"


def test_the_worker_imported_the_serving_code_from_the_model_and_left_this_process_as_it_was(runtime: Served) -> None:
    model_fn = runtime.worker.service._service._model_fn
    assert Path(model_fn.__globals__["__file__"]) == runtime.worker.model_dir / "code" / "inference.py"
    assert getattr(sys.modules.get("inference"), "model_fn", None) is not model_fn  # not importable by name
    assert str(runtime.worker.model_dir / "code") not in sys.path
    assert "SAGEMAKER_PROGRAM" not in os.environ


# Lambda -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(photo: bytes, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("web")
    (folder / demo.PHOTO_NAME).write_bytes(photo)
    with FileServer(folder) as server:
        yield server


@pytest.fixture(scope="module")
def function(runtime: Served, tmp_path_factory: pytest.TempPathFactory) -> Any:
    task_dir = tmp_path_factory.mktemp("lambda") / "task"
    demo.shutil.copytree(demo.LAMBDA_SOURCE, task_dir, ignore=demo.shutil.ignore_patterns("__pycache__"))
    environment = {
        "ENDPOINT_NAME": ENDPOINT,
        "ALLOW_HTTP_URLS": "true",
        "LOCAL_MODE_ALLOW_LOOPBACK": "true",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime.url,
    }
    with LambdaFunction(task_dir, environment=environment, function_name="dogbreeds-predict") as started:
        yield started


def answer_of(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    assert set(response) >= {"statusCode", "headers", "body"}
    return response["statusCode"], json.loads(response["body"])


def test_the_lambda_handler_answers_the_original_test_event_s_shape_with_the_trained_labels(
    function: LambdaFunction, web: FileServer
) -> None:
    url = web.url_of(demo.PHOTO_NAME)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/Carolina-Dog-standing-outdoors\.jpg", url)
    status, body = answer_of(function.invoke({"url": url}))
    assert status == 200, (body, function.log_text())
    # No top_k in the event: the endpoint's default, TOP_K=5 capped at the model's 3 classes (the function
    # sends none of its own, which a model with fewer classes would refuse).
    assert len(body["predictions"]) == 3
    assert {p["label"] for p in body["predictions"]} <= LABELS
    assert body["endpoint"] == ENDPOINT
    assert body["latency_ms"]["fetch"] > 0
    assert ("GET", f"/{demo.PHOTO_NAME}", 200) in web.requests


def test_the_lambda_handler_answers_image_bytes(function: LambdaFunction, photo: bytes) -> None:
    status, body = answer_of(function.invoke({"image_base64": base64.b64encode(photo).decode(), "top_k": 3}))
    assert status == 200, (body, function.log_text())
    assert {p["label"] for p in body["predictions"]} == LABELS
    assert body["latency_ms"]["fetch"] is None


def test_the_lambda_handler_s_errors_carry_the_request_id_lambda_gave_it(function: LambdaFunction) -> None:
    status, body = answer_of(function.invoke({"neither": "url nor image"}, request_id="req-42"))
    assert status == 400
    assert body["request_id"] == "req-42"
    assert "url" in body["error"]
