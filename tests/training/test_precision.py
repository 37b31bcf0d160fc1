"""Serving precision: what ``INFERENCE_PRECISION`` means on a CPU and on a GPU, and what it refuses.

- ``auto``: fp16 on a GPU; on a CPU bf16 where /proc/cpuinfo shows native BF16 (AVX512-BF16 or AMX), else fp32;
- fp16 needs a GPU, int8 a CPU; a bad value stops the worker with a message naming the accepted values;
- every path serves in channels-last. The int8 model itself: test_quantize.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

import inference
from tests.training.inference_fixtures import fit_stand_in_model, pattern

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
# The flags line of /proc/cpuinfo of CPUs with and without native BF16 (shortened).
FLAGS = {
    "amx": "fpu vme sse sse2 avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8",
    "avx512_bf16": "fpu vme sse sse2 avx2 avx512f avx512_bf16 avx512_vnni",
    "avx512": "fpu vme sse sse2 avx2 avx512f avx512bw avx512_vnni",
    "avx2": "fpu vme sse sse2 avx avx2 fma",
}


def fake_cpuinfo(folder: Path, flags: str) -> Path:
    """A /proc/cpuinfo of two processors with ``flags``."""
    block = f"processor\t: {{n}}\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n"
    path = folder / "cpuinfo"
    path.write_text(block.format(n=0) + block.format(n=1))
    return path


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The model folder of the stand-in model (inference_fixtures), as train.py writes it. Read only."""
    return str(fit_stand_in_model(tmp_path_factory.mktemp("stand-in") / "model"))


@pytest.fixture
def cpu_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Make inference.py read a fake /proc/cpuinfo with the flags of one of ``FLAGS``."""

    def use(kind: str) -> None:
        monkeypatch.setattr(inference, "CPUINFO", fake_cpuinfo(tmp_path, FLAGS[kind]))

    return use


def jpeg_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    pattern(name).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def served_dtypes(served: inference.ServedModel) -> list[tuple[torch.dtype, torch.dtype, bool]]:
    """Answer one request; the input and output dtypes of the network's head, and whether its input to the
    network was channels-last."""
    seen: list[tuple[torch.dtype, torch.dtype, bool]] = []

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        seen.append((inputs[0].dtype, output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    handle = served.network.register_forward_hook(record)
    try:
        request = inference.parse_request(jpeg_bytes("Red_top"), "image/jpeg", served)
        assert inference.predict(request, served)["predictions"][0]["label"] == "Red top"
    finally:
        handle.remove()
    return seen


# --- native BF16 on the CPU, from /proc/cpuinfo --------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "native"), [("amx", True), ("avx512_bf16", True), ("avx512", False), ("avx2", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, kind: str, native: bool) -> None:
    assert inference.native_cpu_bf16(fake_cpuinfo(tmp_path, FLAGS[kind])) is native


def test_a_flag_that_only_contains_the_name_does_not_count(tmp_path: Path) -> None:
    assert inference.native_cpu_bf16(fake_cpuinfo(tmp_path, "avx512f xamx_bf16x avx512_bf16_like")) is False


def test_no_cpuinfo_means_no_native_bf16(tmp_path: Path) -> None:
    assert inference.native_cpu_bf16(tmp_path / "missing") is False
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert inference.native_cpu_bf16(tmp_path / "empty") is False


# --- what a CPU worker serves --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "kind", "precision", "amp_dtype"),
    [
        ("auto", "amx", "bf16", torch.bfloat16),
        ("auto", "avx512_bf16", "bf16", torch.bfloat16),
        ("auto", "avx512", "fp32", None),
        ("auto", "avx2", "fp32", None),
        ("fp32", "amx", "fp32", None),
        ("bf16", "avx2", "bf16", torch.bfloat16),  # asked for: emulated, slowly, but it computes
        (" BF16 ", "amx", "bf16", torch.bfloat16),
    ],
)
def test_a_cpu_serves_the_precision_asked_for_in_channels_last(
    stand_in: str,
    monkeypatch: pytest.MonkeyPatch,
    cpu_flags,
    requested: str,
    kind: str,
    precision: str,
    amp_dtype: torch.dtype | None,
) -> None:
    cpu_flags(kind)
    monkeypatch.setenv("INFERENCE_PRECISION", requested)
    served = inference.model_fn(stand_in)
    assert (served.device, served.precision, served.amp_dtype) == (CPU, precision, amp_dtype)
    assert served.memory_format == torch.channels_last
    assert served.network.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # The network gets fp32 channels-last images; under bf16 autocast its logits come out in bf16.
    assert served_dtypes(served) == [(torch.float32, amp_dtype or torch.float32, True)]


def test_without_the_variable_a_cpu_serves_auto(stand_in: str, monkeypatch: pytest.MonkeyPatch, cpu_flags) -> None:
    monkeypatch.delenv("INFERENCE_PRECISION", raising=False)
    cpu_flags("avx512")
    assert inference.model_fn(stand_in).precision == "fp32"
    cpu_flags("amx")
    assert inference.model_fn(stand_in).precision == "bf16"


@pytest.mark.parametrize("value", ["fp8", "", "int4", "off", "float32", "auto,int8"])
def test_an_unknown_precision_stops_the_worker_naming_the_accepted_ones(
    stand_in: str, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("INFERENCE_PRECISION", value)
    message = f"INFERENCE_PRECISION must be one of auto, fp32, bf16, fp16, int8, got {value!r}"
    with pytest.raises(ValueError, match=rf"^{message}$"):
        inference.model_fn(stand_in)


def test_fp16_on_a_cpu_is_refused(stand_in: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_PRECISION", "fp16")
    with pytest.raises(
        ValueError,
        match=r"^INFERENCE_PRECISION fp16 needs a GPU, and this worker has none; "
        r"on a CPU use auto, bf16, int8 or fp32$",
    ):
        inference.model_fn(stand_in)


# --- what a GPU worker serves (the GPU faked: its compute capability and name) -------------------------------------


@pytest.mark.parametrize(
    ("capability", "requested", "precision", "amp_dtype"),
    [
        ((7, 5), "auto", "fp16", torch.float16),  # T4 (ml.g4dn)
        ((8, 6), "auto", "fp16", torch.float16),  # A10G (ml.g5): fp16 too
        ((7, 0), "fp16", "fp16", torch.float16),  # V100 (ml.p3)
        ((8, 6), "bf16", "bf16", torch.bfloat16),
        ((9, 0), "bf16", "bf16", torch.bfloat16),  # H100
        ((7, 5), "fp32", "fp32", None),
    ],
)
def test_a_gpu_serves_fp16_by_default_and_what_it_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
    capability: tuple[int, int],
    requested: str,
    precision: str,
    amp_dtype: torch.dtype | None,
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert inference.serving_precision(requested, CUDA) == precision
    assert inference.autocast_dtype(precision, CUDA) == amp_dtype


def test_bf16_on_a_gpu_without_native_bf16_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(
        ValueError,
        match=r"^INFERENCE_PRECISION bf16 needs a GPU of compute capability 8.0 or newer, not a Tesla T4; "
        r"use fp16 or auto$",
    ):
        inference.autocast_dtype(inference.serving_precision("bf16", CUDA), CUDA)


def test_int8_on_a_gpu_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^INFERENCE_PRECISION int8 runs on CPUs only \(PyTorch's x86 int8 backend\), and this worker has a "
        r"GPU; on a GPU use auto, fp16, bf16 or fp32$",
    ):
        inference.serving_precision("int8", CUDA)


def test_the_cpu_flags_do_not_decide_on_a_gpu(cpu_flags) -> None:
    cpu_flags("amx")
    assert inference.serving_precision("auto", CUDA) == "fp16"
