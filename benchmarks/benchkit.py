"""What the benchmark scripts share: the machine's description and calibration, generated photos, timing that
survives a noisy machine, Markdown tables.

Comparisons (``alternate``) run their sides in turn, one call of each per round (ABAB..., never all A then all
B), in blocks of about a second; before each block they wait for the other processes to leave the CPUs idle,
and a block during which other processes took more than ``LoadPolicy.max_other_share`` of the CPU time is
discarded and measured again (a bounded number of times; past that it is kept and the comparison is flagged
as taken under load). Speed-ups are ratios of p50s (``speedup``). Absolute figures come with ``calibrate``'s
GEMM throughput of the machine, printed in every report header.

The scripts import the training code by bare name (``model``, ``inference``, ``train``), as the
containers do: importing this module puts ``training/`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
TRAINING = REPO / "training"
if str(TRAINING) not in sys.path:
    sys.path.insert(0, str(TRAINING))

import torch  # noqa: E402  (after sys.path: the training modules import it too)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "-"


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


class OtherLoad:
    """How much of the CPUs other processes used while this one measured: the figures' noise, stated.

    The CPU time of this process and its children (once waited for) is subtracted from the CPUs' busy time
    between ``start`` and ``share`` (or ``stop``).
    """

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.ticks = _cpu_ticks() if Path("/proc/stat").exists() else None
        self.own = self._own_seconds()

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def share(self) -> float | None:
        """The share (0..1) of all CPUs' time that other processes used since ``start``; None where unknown."""
        if self.ticks is None:
            return None
        busy, total = _cpu_ticks()
        tick = os.sysconf("SC_CLK_TCK")
        cpu_seconds = (total - self.ticks[1]) / tick
        others = (busy - self.ticks[0]) / tick - (self._own_seconds() - self.own)
        return max(0.0, others) / max(cpu_seconds, 1e-9)

    def stop(self) -> str:
        share = self.share()
        return "unknown" if share is None else f"{share:.0%} of the CPU time"


def busy_fraction(seconds: float = 1.0) -> float | None:
    """The share of all CPUs' time that other processes keep busy over the next ``seconds``; None elsewhere."""
    try:
        meter = OtherLoad()
        time.sleep(seconds)
        return meter.share()
    except (OSError, ValueError, IndexError):
        return None


def wait_until_idle(timeout: float, threshold: float = 0.1, sample: float = 1.0) -> str:
    """Wait up to ``timeout`` seconds for the other processes to leave the CPUs idle; say how it went.

    Idle: other processes busy at most ``threshold`` of the CPU time over ``sample`` seconds. Figures taken
    while something else computes are slower and noisier; ``alternate`` also waits before each block.
    """
    waited = 0.0
    while True:
        busy = busy_fraction(sample)
        waited += sample
        if busy is None:
            return "CPU load unknown"
        if busy <= threshold or waited >= timeout:
            state = "idle" if busy <= threshold else "still busy"
            return f"CPUs {busy:.0%} busy before measuring ({state} after waiting {waited:.0f} s)"


class RunConditions:
    """What a benchmark states about the machine it measured on: it waits for idle CPUs (``wait_idle`` seconds at
    most), notes the load average, calibrates (``calibrate``), and from then on meters the other processes' load;
    ``setup()`` at the end gives the fields ``report_header`` prints."""

    def __init__(self, wait_idle: float, policy: LoadPolicy | None = None) -> None:
        self.idle = wait_until_idle(wait_idle)
        log(self.idle)
        self.other_load, self.load_before = OtherLoad(), load_average()
        self.calibration = calibrate(policy=policy)

    def setup(self) -> dict[str, object]:
        return {
            "calibration": self.calibration,
            "idle": self.idle,
            "other_load": self.other_load.stop(),
            "load_before": self.load_before,
            "load_after": load_average(),
        }


# --- comparisons that survive a noisy machine ------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPolicy:
    """When a block of a comparison counts as taken under load, and what is done about it."""

    max_other_share: float = 0.10  # other processes' share of the CPU time during a block, above which it is discarded
    idle_threshold: float = 0.10  # other processes' share of the CPU time that counts as idle before a block
    idle_timeout: float = 20.0  # seconds to wait at most for idle CPUs before each block
    idle_sample: float = 0.25  # seconds over which that share is measured
    block_seconds: float = 1.0  # a block runs whole rounds for at least this long: /proc/stat counts 10 ms ticks
    retries: float = 1.0  # discarded blocks allowed, as a multiple of the blocks needed (at least 2)


@dataclass
class Block:
    rounds: int
    other_share: float | None  # of the CPU time, during the block
    kept: bool
    loaded: bool  # other processes took more than the policy allows


@dataclass
class Comparison:
    """Kept samples (seconds) and results per side, the blocks measured, and the order of the calls."""

    samples: dict[str, list[float]]
    results: dict[str, list[object]]
    blocks: list[Block] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # every measured call, discarded blocks included
    policy: LoadPolicy = field(default_factory=LoadPolicy)

    def p50(self, name: str) -> float:
        return percentile(self.samples[name], 50)

    def p95(self, name: str) -> float:
        return percentile(self.samples[name], 95)

    def speedup(self, name: str, baseline: str) -> float:
        """How many times faster ``name`` is than ``baseline``: the ratio of their p50s."""
        return speedup(self.p50(baseline), self.p50(name))

    @property
    def under_load(self) -> bool:
        """Whether a kept block was taken under load (the discard budget ran out)."""
        return any(block.loaded and block.kept for block in self.blocks)

    def load_note(self) -> str:
        """The blocks kept and discarded, and the most CPU time other processes took in a kept one."""
        kept = [block for block in self.blocks if block.kept]
        shares = [block.other_share for block in kept if block.other_share is not None]
        note = (
            f"{len(kept)} blocks kept, {len(self.blocks) - len(kept)} discarded for load "
            f"(others above {self.policy.max_other_share:.0%} of the CPU time)"
        )
        if shares:
            note += f", others at most {max(shares):.0%} in a kept block"
        return note + (" - UNDER LOAD: the discard budget ran out" if self.under_load else "")


def speedup(baseline_p50: float, p50: float) -> float:
    """The speed-up of a side whose p50 is ``p50`` over one whose p50 is ``baseline_p50`` (not of mean rates)."""
    return baseline_p50 / p50 if p50 > 0 else float("nan")


def alternate(
    sides: dict[str, Callable[[], object]],
    rounds: int,
    *,
    on: torch.device | None = None,
    warmup: int = 1,
    policy: LoadPolicy | None = None,
    block_rounds: int | None = None,
    meter: Callable[[], OtherLoad] = OtherLoad,
    wait: Callable[[LoadPolicy], object] | None = None,
) -> Comparison:
    """``rounds`` rounds of one call of each side in turn (ABAB...), in blocks guarded against other load.

    ``warmup`` rounds first (not kept). A block is ``block_rounds`` rounds (default: as many as fill
    ``policy.block_seconds``, from the warm-up's time). Before each block ``wait`` (default: wait for idle
    CPUs); a block during which ``meter`` reports more than ``policy.max_other_share`` is discarded and run
    again, up to the policy's budget, past which it is kept and the comparison is flagged (``under_load``).
    Each side's return value is kept beside its time (``results``).
    """
    policy = policy or LoadPolicy()
    wait = wait or _wait_for_idle
    comparison = Comparison({name: [] for name in sides}, {name: [] for name in sides}, policy=policy)
    started = time.perf_counter()
    for _ in range(warmup):
        for function in sides.values():
            timed(function, on)
    if block_rounds is None:
        round_seconds = (time.perf_counter() - started) / warmup if warmup else policy.block_seconds
        block_rounds = max(1, math.ceil(policy.block_seconds / max(round_seconds, 1e-6)))
    needed = math.ceil(rounds / block_rounds)
    budget = max(2, math.ceil(needed * policy.retries))
    done = 0
    while done < rounds:
        count = min(block_rounds, rounds - done)
        wait(policy)
        load = meter()
        samples, results = _run_rounds(sides, count, on, comparison.order)
        share = load.share()
        loaded = share is not None and share > policy.max_other_share
        discarded = sum(not block.kept for block in comparison.blocks)
        keep = not loaded or discarded >= budget
        comparison.blocks.append(Block(count, share, keep, loaded))
        if keep:
            done += count
            for name in sides:
                comparison.samples[name] += samples[name]
                comparison.results[name] += results[name]
    return comparison


def _run_rounds(
    sides: dict[str, Callable[[], object]], count: int, on: torch.device | None, order: list[str]
) -> tuple[dict[str, list[float]], dict[str, list[object]]]:
    samples: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, list[object]] = {name: [] for name in sides}
    for _ in range(count):
        for name, function in sides.items():
            started = time.perf_counter()
            result = function()
            if on is not None:
                synchronize(on)
            samples[name].append(time.perf_counter() - started)
            results[name].append(result)
            order.append(name)
    return samples, results


def _wait_for_idle(policy: LoadPolicy) -> str:
    return wait_until_idle(policy.idle_timeout, policy.idle_threshold, policy.idle_sample)


# --- calibration: what this machine computes at most ----------------------------------------------------------


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as inference's ``auto`` precision asks."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


RESNET50_GFLOP = 8.18  # one 224-pixel image's forward pass: 4.09 G multiply-adds


def calibrate(size: int = 2048, repeats: int = 10, policy: LoadPolicy | None = None) -> dict[str, object]:
    """GFLOP/s of square ``size`` GEMMs (torch.mm) with torch's threads: fp32, and bf16 where the CPU has it.

    Each precision on its own (switching between AVX-512 and AMX every call halves the bf16 figure), after
    three warm-up calls, the median of ``repeats`` in guarded blocks. Beside absolute times it says what the
    machine computes: at the fp32 figure a resnet50 forward pass (8.2 GFLOP) takes 8.2 / GFLOP/s seconds.
    On a CUDA GPU, its fp32 and fp16 GEMMs (4096x4096) are added.
    """
    cases = [("fp32", torch.float32, torch.device("cpu"), size)]
    if native_bf16():
        cases.append(("bf16", torch.bfloat16, torch.device("cpu"), size))
    if torch.cuda.is_available():
        cases += [(f"gpu_{name}", dtype, torch.device("cuda"), 4096) for name, dtype in _GPU_GEMMS]
    generator = torch.Generator().manual_seed(0)
    figures: dict[str, object] = {"size": size}
    notes = []
    for name, dtype, on, n in cases:
        a, b = (torch.randn(n, n, generator=generator).to(on, dtype) for _ in "ab")
        comparison = alternate({name: functools.partial(torch.mm, a, b)}, repeats, on=on, warmup=3, policy=policy)
        figures[f"{name}_gflops"] = 2 * n**3 / comparison.p50(name) / 1e9
        shares = [block.other_share or 0.0 for block in comparison.blocks if block.kept]
        notes.append(f"{name} others at most {max(shares):.0%}" + (" (UNDER LOAD)" if comparison.under_load else ""))
    figures["note"] = f"{repeats} calls each; CPU time taken by other processes: {', '.join(notes)}"
    return figures


_GPU_GEMMS = (("fp32", torch.float32), ("fp16", torch.float16))


def calibration_line(figures: dict[str, object]) -> str:
    """The calibration as one line of a report header."""
    fp32 = figures["fp32_gflops"]
    parts = [f"fp32 GEMM ({figures['size']}x{figures['size']}, torch.mm) {fp32:.0f} GFLOP/s"]
    if "bf16_gflops" in figures:
        parts.append(f"bf16 {figures['bf16_gflops']:.0f} GFLOP/s")
    parts += [
        f"GPU {name} (4096x4096) {figures[f'gpu_{name}_gflops']:.0f} GFLOP/s"
        for name, _ in _GPU_GEMMS
        if f"gpu_{name}_gflops" in figures
    ]
    floor = RESNET50_GFLOP / fp32 * 1000
    return (
        f"- calibration: {', '.join(parts)}, medians of {figures['note']}; at the CPU's fp32 GEMM rate a "
        f"resnet50 forward pass ({RESNET50_GFLOP} GFLOP) would take {floor:.1f} ms"
    )


def isa() -> str:
    """The CPU's vector and matrix extensions that decide the precisions' speed."""
    names = {
        "avx2": "AVX2",
        "avx512f": "AVX-512",
        "avx512_vnni": "AVX512-VNNI",
        "avx512_bf16": "AVX512-BF16",
        "avx512_fp16": "AVX512-FP16",
        "amx_bf16": "AMX-BF16",
        "amx_int8": "AMX-INT8",
    }
    flags = cpu_flags()
    return ", ".join(label for flag, label in names.items() if flag in flags) or "-"


def machine() -> dict[str, str]:
    """The facts a figure needs beside it: processor, cores, memory, library versions, GPU."""
    import PIL
    import torchvision

    memory = memory_gib()
    facts = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model()}, {cpu_count()} cores available ({os.cpu_count()} online)",
        "cpu extensions": isa(),
        "memory": f"{memory:.1f} GiB" if memory else "-",
        "python": platform.python_version(),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} intra-op threads)",
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "gpu": "none (CUDA not available)",
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        facts["gpu"] = (
            f"{properties.name}, compute capability {properties.major}.{properties.minor}, "
            f"{properties.total_memory / 1024**3:.0f} GiB, CUDA {torch.version.cuda}"
        )
    return facts


def device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def synchronize(on: torch.device) -> None:
    if on.type == "cuda":
        torch.cuda.synchronize(on)


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth colour fields, outlines and sensor-like noise.

    Not a flat colour: JPEG decoding and resizing cost depends on detail, and this has about as much
    as a camera photo (a 1600x1200 one encodes to some 600 kB at quality 90).
    """
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(5, max(6, width // 8)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + r, y + r), outline=colour, width=int(rng.integers(1, 6)))
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def timed(function: Callable[[], object], on: torch.device | None = None) -> float:
    """Seconds one call of ``function`` takes (the GPU's queued work included)."""
    started = time.perf_counter()
    function()
    if on is not None:
        synchronize(on)
    return time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile (0..100), linear between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds < 10 else f"{seconds * 1000:.0f}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_block(facts: dict[str, str]) -> str:
    return "\n".join(f"- {name}: {value}" for name, value in facts.items())


def command_line() -> str:
    """How this script was run, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return " ".join([".venv/bin/python", str(shown), *sys.argv[1:]])


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """--wait-idle, --max-other-load, --output and --json, which every benchmark takes (see ``alternate``)."""
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=120,
        help="seconds to wait at most for the other processes to leave the CPUs idle first (default: %(default)s)",
    )
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=0.10,
        help="share of the CPU time other processes may take during a measured block before it is discarded and "
        "measured again (default: %(default)s)",
    )
    parser.add_argument("--output", default=None, help="also write the Markdown report to this file")
    parser.add_argument("--json", default=None, help="also write the raw figures to this JSON file")


def load_policy(args: argparse.Namespace) -> LoadPolicy:
    """The comparisons' load policy from --wait-idle and --max-other-load (a block waits a twentieth as long,
    1 to 15 seconds)."""
    return LoadPolicy(
        max_other_share=args.max_other_load,
        idle_threshold=args.max_other_load,
        idle_timeout=max(1.0, min(args.wait_idle / 20, 15.0)),
    )


def report_header(title: str, facts: dict[str, str], setup: dict) -> list[str]:
    """The opening lines of a report: title, command, machine, its calibration, how busy other processes were."""
    lines = [title, "", f"Command: `{command_line()}`", "", machine_block(facts)]
    if "calibration" in setup:
        lines.append(calibration_line(setup["calibration"]))
    lines += [
        f"- other processes: {setup['idle']}; they used {setup['other_load']} during the run; "
        f"load average before / after: {setup['load_before']} / {setup['load_after']}",
        "",
    ]
    return lines


def write_outputs(markdown: str, results: dict, markdown_path: str | None, json_path: str | None) -> None:
    """Print the Markdown report; also write it and the raw figures where asked."""
    print(markdown, flush=True)
    if markdown_path:
        Path(markdown_path).write_text(markdown + "\n")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2, default=str) + "\n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
