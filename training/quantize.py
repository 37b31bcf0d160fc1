"""The int8 model for CPU endpoints, written at the end of training when train.py is given ``--quantize int8``.

The trained fp32 network is statically quantized with torch.ao's FX graph mode (``prepare_fx``, calibration on
validation images, ``convert_fx``) for the x86 backend (``get_default_qconfig_mapping("x86")``), traced with
TorchScript, and frozen where that measures faster than the unfrozen trace. It is written into the model folder
beside the fp32 weights (``model.INT8_MODEL_FILE``) with a report (``model.INT8_REPORT_FILE``): how it was made and
its top-1 accuracy on the test split against fp32's, from which inference.py decides whether to serve it
(``model.INT8_MAX_TOP1_LOSS_POINTS``). docs/training.md describes both files and metrics.json's ``int8`` entry.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import statistics
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.utils.data import DataLoader, Subset

from model import INT8_MAX_TOP1_LOSS_POINTS, INT8_MODEL_FILE, INT8_REPORT_FILE

BACKEND = "x86"  # PyTorch's x86 int8 backend (fbgemm and oneDNN kernels): CPUs only
CALIBRATION_IMAGES = 512  # validation images the observers see, drawn at random (seeded)
WARMUP_RUNS = 3  # forward passes before timing: TorchScript optimizes the graph in its first runs
TIMED_RUNS = 7  # forward passes of one image timed per graph; the median counts
# The graphs that are measured; the faster one is written.
UNFROZEN, FROZEN = "torchscript", "torchscript_frozen"

log = logging.getLogger("train.quantize")


def write_int8_model(
    model: nn.Module, model_dir: Path, valid: DataLoader, test: DataLoader, *, seed: int = 0
) -> dict[str, object]:
    """Quantize ``model`` (the trained fp32 network, unwrapped, on any device; left unchanged), calibrating on
    up to ``CALIBRATION_IMAGES`` images of ``valid``'s data set; write the faster TorchScript graph and the report
    into ``model_dir``; return the report. Top-1 accuracies are measured on the whole of ``test``'s data set:
    fp32 on the model's device without autocast, int8 on the CPU. ``valid`` and ``test`` lend their data sets,
    batch size and workers (this process's shards are not used: every image counts)."""
    started = time.perf_counter()
    calibration = _loader(valid, _sample(len(valid.dataset), CALIBRATION_IMAGES, seed))
    channels, height, width = valid.dataset[0][0].shape
    example = torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(seed))
    quantized = quantize(model, (images for images, _ in calibration), example)
    network, graph, forward_ms = fastest_graph(quantized, example)
    accuracy = compare(model, network, _loader(test))
    loss_points = (accuracy["fp32_correct"] - accuracy["int8_correct"]) * 100 / accuracy["test_images"]
    report = {
        "backend": BACKEND,
        "torch": torch.__version__,
        "graph": graph,
        "forward_ms": forward_ms,
        "calibration_images": len(calibration.dataset),
        **accuracy,
        "top1_loss_points": loss_points,
        "max_top1_loss_points": INT8_MAX_TOP1_LOSS_POINTS,
        "within_limit": loss_points <= INT8_MAX_TOP1_LOSS_POINTS,
        "seconds": time.perf_counter() - started,
    }
    with _quiet():
        torch.jit.save(network, str(model_dir / INT8_MODEL_FILE))
    (model_dir / INT8_REPORT_FILE).write_text(json.dumps(report, indent=2))
    log.info(
        "int8: test top-1 %.4f against fp32 %.4f (%d images, agreement %.4f): %.2f points lost, %s; %s written "
        "(one image: %s), calibrated on %d valid images, in %.1f s",
        report["int8_test_accuracy"],
        report["fp32_test_accuracy"],
        report["test_images"],
        report["top1_agreement"],
        loss_points,
        f"served (at most {INT8_MAX_TOP1_LOSS_POINTS:g} allowed)"
        if report["within_limit"]
        else f"not served: endpoints fall back to fp32 (more than {INT8_MAX_TOP1_LOSS_POINTS:g})",
        graph,
        ", ".join(f"{name} {ms:.2f} ms" for name, ms in forward_ms.items()),
        report["calibration_images"],
        report["seconds"],
    )
    return report


def quantize(model: nn.Module, calibration: Iterable[torch.Tensor], example: torch.Tensor) -> nn.Module:
    """A statically quantized copy of ``model`` (FX graph mode, x86 backend) on the CPU, its activation ranges
    observed on the ``calibration`` batches; ``example`` is an input of the right shape."""
    torch.backends.quantized.engine = BACKEND
    float_model = copy.deepcopy(model).to("cpu").eval()
    with _quiet():
        prepared = prepare_fx(float_model, get_default_qconfig_mapping(BACKEND), example_inputs=(example,))
        with torch.no_grad():
            for images in calibration:
                prepared(images.to("cpu", memory_format=torch.channels_last))
        return convert_fx(prepared)


def fastest_graph(quantized: nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, str, dict[str, float]]:
    """``quantized`` traced with TorchScript, frozen or not, whichever runs one image faster here; its name
    (``UNFROZEN`` or ``FROZEN``) and the milliseconds each took (median of ``TIMED_RUNS``)."""
    example = example.contiguous(memory_format=torch.channels_last)
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(quantized, example)
        graphs = {UNFROZEN: traced, FROZEN: torch.jit.freeze(traced.eval())}
    forward_ms = {name: forward_milliseconds(graph, example) for name, graph in graphs.items()}
    name = min(forward_ms, key=forward_ms.__getitem__)
    return graphs[name], name, forward_ms


def forward_milliseconds(network: nn.Module, example: torch.Tensor) -> float:
    """The median time of a forward pass of ``example``, after ``WARMUP_RUNS`` passes."""
    times = []
    with torch.inference_mode():
        for run in range(WARMUP_RUNS + TIMED_RUNS):
            started = time.perf_counter()
            network(example)
            if run >= WARMUP_RUNS:
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def compare(fp32: nn.Module, int8: nn.Module, loader: Iterable) -> dict[str, float | int]:
    """Top-1 accuracy of both networks on ``loader``'s images, and how often their top-1 agree: ``fp32`` on its
    own device in full precision, ``int8`` on the CPU."""
    device = next(fp32.parameters()).device
    fp32.eval()
    fp32_correct = int8_correct = agreeing = count = 0
    with torch.inference_mode():
        for images, targets in loader:
            inputs = images.contiguous(memory_format=torch.channels_last)
            fp32_top1 = fp32(inputs.to(device)).float().argmax(dim=1).cpu()
            int8_top1 = int8(inputs).argmax(dim=1)
            fp32_correct += int((fp32_top1 == targets).sum())
            int8_correct += int((int8_top1 == targets).sum())
            agreeing += int((fp32_top1 == int8_top1).sum())
            count += len(targets)
    if count == 0:
        raise ValueError("no test images to measure the int8 model on")
    return {
        "test_images": count,
        "fp32_correct": fp32_correct,
        "int8_correct": int8_correct,
        "fp32_test_accuracy": fp32_correct / count,
        "int8_test_accuracy": int8_correct / count,
        "top1_agreement": agreeing / count,
    }


def _sample(size: int, count: int, seed: int) -> list[int]:
    """``count`` indices of ``range(size)`` drawn at random (all of them if there are fewer), in order."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())


def _loader(like: DataLoader, indices: list[int] | None = None) -> DataLoader:
    """A loader of ``like``'s whole data set (or the ``indices`` of it), in order, with its batch size and workers."""
    dataset = like.dataset if indices is None else Subset(like.dataset, indices)
    return DataLoader(dataset, batch_size=like.batch_size or 1, shuffle=False, num_workers=like.num_workers)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao's quantization and TorchScript warn of their deprecation (and of observer arguments, and of
    constants in traces) on every call: none of it is news to the run's log."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message=r"(?s).*(quant_min and quant_max|quantized tensor creation)")
        yield
