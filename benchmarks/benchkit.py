"""What the benchmark scripts share: the machine's description, generated photos, timing, Markdown tables.

The scripts import the training code by bare name (``model``, ``inference``, ``train``), as the
containers do: importing this module puts ``training/`` first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
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

    The CPU time of this process and its children is subtracted from the CPUs' busy time between
    ``start`` and ``stop``.
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

    def stop(self) -> str:
        if self.ticks is None:
            return "unknown"
        busy, total = _cpu_ticks()
        tick = os.sysconf("SC_CLK_TCK")
        cpu_seconds = (total - self.ticks[1]) / tick
        others = (busy - self.ticks[0]) / tick - (self._own_seconds() - self.own)
        return f"{max(0.0, others) / max(cpu_seconds, 1e-9):.0%} of the CPU time"


def busy_fraction(seconds: float = 1.0) -> float | None:
    """The share of all CPUs' time spent busy over the next ``seconds`` (from /proc/stat), None elsewhere."""

    try:
        busy_before, total_before = _cpu_ticks()
        time.sleep(seconds)
        busy_after, total_after = _cpu_ticks()
    except (OSError, ValueError, IndexError):
        return None
    return (busy_after - busy_before) / max(1, total_after - total_before)


def wait_until_idle(timeout: float, threshold: float = 0.1) -> str:
    """Wait up to ``timeout`` seconds for the other processes to leave the CPUs idle; say how it went.

    Figures taken while something else computes are slower and noisier; the scripts also alternate the
    variants they compare, so that a load that comes and goes slows them alike.
    """
    waited = 0.0
    while True:
        busy = busy_fraction()
        waited += 1.0
        if busy is None:
            return "CPU load unknown"
        if busy <= threshold or waited >= timeout:
            state = "idle" if busy <= threshold else "still busy"
            return f"CPUs {busy:.0%} busy before measuring ({state} after waiting {waited:.0f} s)"


def machine() -> dict[str, str]:
    """The facts a figure needs beside it: processor, cores, memory, library versions, GPU."""
    import PIL
    import torchvision

    memory = memory_gib()
    facts = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model()}, {cpu_count()} cores available ({os.cpu_count()} online)",
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


def interleaved(
    functions: dict[str, Callable[[], object]], count: int, on: torch.device | None = None, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``count`` rounds of one call each in turn (after ``warmup`` rounds)."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(warmup + count):
        for name, function in functions.items():
            seconds = timed(function, on)
            if round_ >= warmup:
                times[name].append(seconds)
    return times


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


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.2f}x" if fast > 0 else "-"


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
    """--wait-idle, --output and --json, which every benchmark takes (see ``wait_until_idle``, ``write_outputs``)."""
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=120,
        help="seconds to wait at most for the other processes to leave the CPUs idle first (default: %(default)s)",
    )
    parser.add_argument("--output", default=None, help="also write the Markdown report to this file")
    parser.add_argument("--json", default=None, help="also write the raw figures to this JSON file")


def report_header(title: str, facts: dict[str, str], setup: dict) -> list[str]:
    """The opening lines of a report: its title, the command, the machine, and how busy other processes were."""
    return [
        title,
        "",
        f"Command: `{command_line()}`",
        "",
        machine_block(facts),
        f"- other processes: {setup['idle']}; they used {setup['other_load']} during the run; "
        f"load average before / after: {setup['load_before']} / {setup['load_after']}",
        "",
    ]


def write_outputs(markdown: str, results: dict, markdown_path: str | None, json_path: str | None) -> None:
    """Print the Markdown report; also write it and the raw figures where asked."""
    print(markdown, flush=True)
    if markdown_path:
        Path(markdown_path).write_text(markdown + "\n")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2, default=str) + "\n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
