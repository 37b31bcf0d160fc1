"""The int8 model (quantize.py, train.py --quantize int8) and when inference.py serves it.

- a randomly initialized network quantizes (torch.ao FX, x86 backend) into a TorchScript file and a report whose
  figures add up, and the fp32 network is left as it was;
- on the stand-in model's patterns (inference_fixtures), int8 predicts the top-1 class fp32 predicts, image by image;
- train.py --quantize int8 writes both files into the artifact and the report into metrics.json, and the real
  inference toolkit serves the result in int8;
- a model that loses more than 1 point of top-1 accuracy, or has no int8 files, is served in fp32, with one log line.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import shutil
from pathlib import Path

import pytest
import quantize
import torch
from data import load_split
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import inference
from model import (
    INT8_FILES,
    INT8_MODEL_FILE,
    INT8_REPORT_FILE,
    MODEL_DIR_ENTRIES,
    ModelConfig,
    build_model,
    decode_size,
    eval_transform,
    load_artifact,
)
from tests.training.inference_fixtures import PATTERNS, STAND_IN_CONFIG, fit_stand_in_model, pattern, start_endpoint
from tests.training.running import TINY, finished_run

SMALL = ModelConfig("resnet18", 3, image_size=32, resize_size=36)
REPORT_KEYS = {
    "backend",
    "torch",
    "graph",
    "forward_ms",
    "calibration_images",
    "test_images",
    "fp32_correct",
    "int8_correct",
    "fp32_test_accuracy",
    "int8_test_accuracy",
    "top1_agreement",
    "top1_loss_points",
    "max_top1_loss_points",
    "within_limit",
    "seconds",
}


def pattern_loader(seed: int, copies: int = 3) -> DataLoader:
    """The stand-in model's patterns, speckled with noise (seeded), ``copies`` of each at a few sizes."""
    rng, transform = random.Random(seed), eval_transform(STAND_IN_CONFIG)
    images, targets = [], []
    for index, name in enumerate(PATTERNS):
        for size in ((48, 40), (40, 48), (64, 64))[:copies]:
            images.append(transform(pattern(name, size, rng)))
            targets.append(index)
    return DataLoader(TensorDataset(torch.stack(images), torch.tensor(targets)), batch_size=8)


def split_loader(image_set: Path, split: str) -> DataLoader:
    dataset = load_split(split, image_set / split, eval_transform(SMALL), decode_size(SMALL, augment=False))
    return DataLoader(dataset, batch_size=8)


@pytest.fixture(scope="module")
def int8_stand_in(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The stand-in model's folder with its int8 model, calibrated and measured on noisy patterns; and the report.
    Read only: copy it to change it."""
    model_dir = fit_stand_in_model(tmp_path_factory.mktemp("int8-stand-in") / "model")
    network, _, _ = load_artifact(model_dir)
    report = quantize.write_int8_model(network, model_dir, pattern_loader(seed=1), pattern_loader(seed=2))
    return model_dir, report


@pytest.fixture
def int8_copy(int8_stand_in: tuple[Path, dict], tmp_path: Path) -> Path:
    return Path(shutil.copytree(int8_stand_in[0], tmp_path / "model"))


def with_loss(model_dir: Path, points: float) -> Path:
    """Rewrite the int8 report of ``model_dir`` as if int8 lost ``points`` of top-1 accuracy."""
    path = model_dir / INT8_REPORT_FILE
    report = json.loads(path.read_text())
    report.update(top1_loss_points=points, int8_test_accuracy=report["fp32_test_accuracy"] - points / 100)
    path.write_text(json.dumps(report))
    return model_dir


# --- quantize.py -----------------------------------------------------------------------------------------------------


def test_a_random_network_quantizes_into_torchscript_and_a_report_that_adds_up(image_set: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_model(SMALL).eval()
    before = {name: value.clone() for name, value in network.state_dict().items()}
    valid, test = split_loader(image_set, "valid"), split_loader(image_set, "test")
    report = quantize.write_int8_model(network, tmp_path, valid, test)
    assert set(report) == REPORT_KEYS
    assert json.loads((tmp_path / INT8_REPORT_FILE).read_text()) == report
    # The whole valid split calibrates (fewer than CALIBRATION_IMAGES), the whole test split measures.
    assert (report["calibration_images"], report["test_images"]) == (12, 12)
    assert (report["backend"], report["max_top1_loss_points"]) == ("x86", 1.0)
    assert report["fp32_test_accuracy"] == report["fp32_correct"] / 12
    assert report["int8_test_accuracy"] == report["int8_correct"] / 12
    assert report["top1_loss_points"] == (report["fp32_correct"] - report["int8_correct"]) * 100 / 12
    assert report["within_limit"] is (report["top1_loss_points"] <= 1.0)
    assert set(report["forward_ms"]) == {quantize.UNFROZEN, quantize.FROZEN}
    assert report["graph"] == min(report["forward_ms"], key=report["forward_ms"].get)
    # The file is a TorchScript graph of quantized operators, which takes a batch of any size.
    loaded = torch.jit.load(str(tmp_path / INT8_MODEL_FILE))
    operators = set(re.findall(r"quantized::\w+", str(loaded.inlined_graph)))
    assert {"quantized::conv2d", "quantized::conv2d_relu", "quantized::add_relu", "quantized::linear"} <= operators
    with torch.inference_mode():
        logits = loaded(torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert logits.shape == (3, 3) and logits.dtype == torch.float32
    # The fp32 network is untouched: the same weights, in fp32, not quantized.
    after = network.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert network.conv1.weight.dtype == torch.float32


def test_the_quantized_graph_holds_int8_convolutions() -> None:
    torch.manual_seed(0)
    network = build_model(SMALL).eval()
    example = torch.randn(1, 3, 32, 32)
    quantized = quantize.quantize(network, [torch.randn(4, 3, 32, 32) for _ in range(2)], example)
    kinds = {type(module).__name__ for module in quantized.modules()}
    assert {"ConvReLU2d", "Conv2d", "Linear"} <= kinds
    assert any(module.__module__.startswith("torch.ao.nn.quantized") for module in quantized.modules())
    traced, graph, forward_ms = quantize.fastest_graph(quantized, example)
    assert graph in forward_ms and all(ms > 0 for ms in forward_ms.values())
    assert isinstance(traced, torch.jit.ScriptModule)


def test_int8_predicts_the_top1_class_fp32_predicts_on_the_sample(int8_stand_in: tuple[Path, dict]) -> None:
    _, report = int8_stand_in
    assert report["test_images"] == len(PATTERNS) * 3
    assert report["top1_agreement"] == 1.0
    assert report["int8_correct"] == report["fp32_correct"]
    assert report["fp32_test_accuracy"] >= 0.9  # the stand-in tells the patterns apart
    assert (report["top1_loss_points"], report["within_limit"]) == (0.0, True)


# --- train.py --quantize int8 -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized_run(image_set: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("quantized-run")
    return finished_run(work, "--data-dir", image_set, *TINY, "--epochs", 2, "--quantize", "int8")


def test_train_py_writes_the_int8_model_beside_the_fp32_weights(quantized_run) -> None:
    entries = sorted(path.name for path in quantized_run.model_dir.iterdir())
    assert entries == sorted([*MODEL_DIR_ENTRIES, *INT8_FILES])
    report = json.loads((quantized_run.model_dir / INT8_REPORT_FILE).read_text())
    assert quantized_run.summary["int8"] == report
    assert set(report) == REPORT_KEYS and report["test_images"] == 12
    assert f"int8: test top-1 {report['int8_test_accuracy']:.4f} against fp32 {report['fp32_test_accuracy']:.4f}" in (
        quantized_run.stdout
    )


def test_train_py_s_int8_model_is_served_by_the_inference_toolkit(quantized_run, image_set: Path) -> None:
    report = json.loads((quantized_run.model_dir / INT8_REPORT_FILE).read_text())
    worker = start_endpoint(quantized_run.model_dir, INFERENCE_PRECISION="int8")
    assert worker.model.precision == ("int8" if report["within_limit"] else "fp32")
    photo = sorted((image_set / "test").rglob("*.jpg"))[0]
    answer = worker.answer(photo.read_bytes(), "image/jpeg")
    assert answer.status == 200 and len(answer.json()["predictions"]) == 3


def test_without_quantize_train_py_writes_no_int8_model(trained) -> None:
    assert not any((trained.model_dir / name).exists() for name in INT8_FILES)
    assert "int8" not in trained.summary


# --- serving: int8, or fp32 and why --------------------------------------------------------------------------------


def test_int8_is_served_when_it_loses_at_most_one_point(
    int8_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INFERENCE_PRECISION", "int8")
    with caplog.at_level(logging.INFO, logger="inference"):
        served = inference.model_fn(str(with_loss(int8_copy, 1.0)))
    assert (served.precision, served.amp_dtype) == ("int8", None)
    assert isinstance(served.network, torch.jit.ScriptModule)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert "on cpu in int8" in caplog.text
    for name in PATTERNS:
        request = inference.parse_request(_jpeg(pattern(name)), "image/jpeg", served)
        assert inference.predict(request, served)["predictions"][0]["label"] == name.replace("_", " ")


def test_int8_that_loses_more_than_one_point_falls_back_to_fp32_with_one_log_line(
    int8_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("INFERENCE_PRECISION", "int8")
    with caplog.at_level(logging.INFO, logger="inference"):
        served = inference.model_fn(str(with_loss(int8_copy, 1.5)))
    assert (served.precision, served.amp_dtype) == ("fp32", None)
    assert not isinstance(served.network, torch.jit.ScriptModule)
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    accuracy = json.loads((int8_copy / INT8_REPORT_FILE).read_text())["fp32_test_accuracy"]
    assert warnings == [
        "INFERENCE_PRECISION=int8: serving fp32 instead, because int8 loses 1.50 points of top-1 accuracy against "
        f"fp32 on the 18 test images ({accuracy - 0.015:.2%} against {accuracy:.2%}), more than the 1 allowed"
    ]
    assert "on cpu in fp32" in caplog.text


def test_a_model_without_int8_files_is_served_in_fp32_and_says_why(
    int8_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (int8_copy / INT8_MODEL_FILE).unlink()
    monkeypatch.setenv("INFERENCE_PRECISION", "int8")
    with caplog.at_level(logging.WARNING, logger="inference"):
        assert inference.model_fn(str(int8_copy)).precision == "fp32"
    assert [record.getMessage() for record in caplog.records] == [
        "INFERENCE_PRECISION=int8: serving fp32 instead, because the model has no model_int8.pt and "
        "model_int8.json (train it with quantize=int8)"
    ]


def test_the_inference_toolkit_serves_int8_and_falls_back_through_the_same_worker_path(int8_copy: Path) -> None:
    worker = start_endpoint(int8_copy, INFERENCE_PRECISION="int8")
    assert worker.model.precision == "int8"
    answer = worker.answer(_jpeg(pattern("Red_left")), "image/jpeg")
    assert answer.status == 200 and answer.json()["predictions"][0]["label"] == "Red left"
    fallback = start_endpoint(with_loss(int8_copy, 2.0), INFERENCE_PRECISION="int8")
    assert fallback.model.precision == "fp32"
    assert fallback.answer(_jpeg(pattern("Red_left")), "image/jpeg").json()["predictions"][0]["label"] == "Red left"


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("file", "content", "reason"),
    [
        (INT8_REPORT_FILE, "not json", r"its model_int8\.json cannot be read \(JSONDecodeError: Expecting value: "),
        (INT8_REPORT_FILE, "{}", r"its model_int8\.json cannot be read \(KeyError: 'top1_loss_points'\)$"),
        (INT8_MODEL_FILE, "not a TorchScript archive", r"its model_int8\.pt cannot be loaded by torch \S+ \(.+\)$"),
    ],
)
def test_an_unreadable_int8_model_is_served_in_fp32_and_says_why(
    int8_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    file: str,
    content: str,
    reason: str,
) -> None:
    (int8_copy / file).write_text(content)
    monkeypatch.setenv("INFERENCE_PRECISION", "int8")
    with caplog.at_level(logging.WARNING, logger="inference"):
        assert inference.model_fn(str(int8_copy)).precision == "fp32"
    [message] = [record.getMessage() for record in caplog.records]
    assert re.match(rf"INFERENCE_PRECISION=int8: serving fp32 instead, because {reason}", message), message
