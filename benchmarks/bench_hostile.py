"""Hostile requests: the peak memory and CPU time one request costs the endpoint's worker, for the worst cases known.

    .venv/bin/python benchmarks/bench_hostile.py --quick        # about 2.5 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_hostile.py                # docs/benchmarks.md: about 4 minutes

A model folder is written as train.py writes it (a randomly initialized resnet50, 133 classes) and served by
local mode's ``ModelWorker``: the real toolkit's ``HandlerService`` imports ``inference.py`` from its ``code/``
and calls ``transform_fn``, as on an endpoint, with the model's default environment (the budgets'
defaults). Each case runs in a fresh process: the worker starts, answers four ordinary photos (so that the
allocator, oneDNN and the thread pools are warm: the baseline), then the case's request, once. Reported per case:
the status, the peak resident memory above the baseline (the kernel's high-water mark, reset before the
request), the process's CPU time (all threads) and the wall time of the request, and the decoding
estimate the budget was checked against (``inference.decoding_bytes``, all images together).

The cases are one per class of hostile request: images that decode to more than their pixel count suggests
(16-bit, float, alpha), the largest of each that the budget admits, batches, progressive JPEGs of many empty
scans, the most markers or chunks PIL's Python parsers walk through in 6 MB, a run-length BMP that PIL decodes
in Python, malformed bodies (nested JSON, not UTF-8, bad EXIF, a decompression bomb's header); and, through
the invoker Lambda and the loopback runtime, a model slower than the read timeout (how many calls it gets).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import benchkit
import numpy as np
from benchkit import REPO, log, table
from PIL import Image

sys.path[:0] = [str(REPO), str(REPO / "lambda_src")]

MiB = 1024 * 1024
TARGET_MEMORY_MIB = 512
TARGET_CPU_SECONDS = 10.0
WARM_UP_REQUESTS = 4


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="the cases at a third of their size")
    parser.add_argument("--case", default=None, help="run one case in this process (used by the parent run)")
    parser.add_argument("--model-dir", default=None, help="the model folder (used by the parent run)")
    benchkit.add_report_options(parser)
    return parser


# --- the hostile bodies ------------------------------------------------------------------------------------


def encoded(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def side(pixels: float, scale: float) -> int:
    """The side of a square of ``pixels * scale`` pixels."""
    return int((pixels * scale) ** 0.5)


def sixteen_bit(n: int) -> bytes:
    return encoded(Image.fromarray(np.zeros((n, n), np.uint16)), "PNG")


def images_json(images: list[bytes]) -> bytes:
    return json.dumps({"images_base64": [base64.b64encode(data).decode() for data in images]}).encode()


def with_empty_scans(jpeg: bytes, count: int) -> bytes:
    start = jpeg.index(b"\xff\xda")
    header = jpeg[start : start + 2 + struct.unpack(">H", jpeg[start + 2 : start + 4])[0]]
    return jpeg[:start] + header * count + jpeg[start:]


def png_chunks(count: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    photo = encoded(benchkit.photo_like(64, 48), "PNG")
    return photo[:33] + chunk(b"tEXt", b"k\x00") * count + photo[33:]


def png_header(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes that declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bmp_rle8_runs_of_one(width: int, height: int, size: int) -> bytes:
    body = b"\x01\x07" * (size // 2)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(body), 2835, 2835, 256, 0)
    offset = 14 + 40 + 1024
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + dib + bytes(1024) + body


def bad_exif_jpeg() -> bytes:
    entries = [(0x0100, 5, 3, 26), (0x0112, 3, 1, 6), (0x9286, 2, 0, 0)]
    body = b"II*\x00" + struct.pack("<IH", 8, len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    exif = b"Exif\x00\x00" + body + struct.pack("<I", 0) + bytes.fromhex("9483dbdf6cf1b0f557")
    return encoded(benchkit.photo_like(640, 480), "JPEG", exif=exif)


def cases(scale: float) -> dict[str, tuple[str, Callable[[], tuple[bytes, str]]]]:
    """name -> (what it is, a function making (body, content type)). Sizes scale with ``scale`` (--quick)."""
    photo = benchkit.photo_like
    budget_pixels = {"RGB": 384 * MiB / 14, "I;16": 384 * MiB / 15, "F": 384 * MiB / 19, "RGBA": 384 * MiB / 30}
    n16, nf, nrgba, nrgb = (side(budget_pixels[mode] * 0.97, scale) for mode in ("I;16", "F", "RGBA", "RGB"))
    batch_side = side(budget_pixels["RGB"] / 16 * 0.97, scale)
    prog = encoded(photo(side(36e6, scale), side(36e6, scale)), "JPEG", progressive=True, quality=50)
    return {
        "photo": ("an ordinary 1600x1200 JPEG (reference)", lambda: (benchkit.jpeg(photo(1600, 1200)), "image/jpeg")),
        "16-bit, refused": ("16-bit PNG 6000x6000 (77 kB), past the budget", lambda: (sixteen_bit(6000), "image/png")),
        "16-bit, largest served": (f"16-bit PNG {n16}x{n16}", lambda: (sixteen_bit(n16), "image/png")),
        "float, largest served": (
            f"32-bit float TIFF {nf}x{nf}",
            lambda: (encoded(Image.new("F", (nf, nf)), "TIFF", compression="tiff_adobe_deflate"), "image/png"),
        ),
        "alpha, largest served": (
            f"RGBA PNG {nrgba}x{nrgba}",
            lambda: (encoded(Image.new("RGBA", (nrgba, nrgba), (9, 9, 9, 99)), "PNG"), "image/png"),
        ),
        "RGB PNG, largest served": (
            f"RGB PNG {nrgb}x{nrgb}",
            lambda: (encoded(Image.new("RGB", (nrgb, nrgb), (9, 99, 9)), "PNG"), "image/png"),
        ),
        "batch, largest served": (
            f"16 RGB PNGs of {batch_side}x{batch_side}",
            lambda: (
                images_json([encoded(Image.new("RGB", (batch_side, batch_side)), "PNG")] * 16),
                "application/json",
            ),
        ),
        "batch, refused": (
            "16 RGB PNGs of 2000x2000 (each within the pixel cap)",
            lambda: (images_json([encoded(Image.new("RGB", (2000, 2000)), "PNG")] * 16), "application/json"),
        ),
        "100 scans, served": (
            f"progressive JPEG {side(36e6, scale)}x{side(36e6, scale)}, 90 empty scans added",
            lambda: (with_empty_scans(prog, 90), "image/jpeg"),
        ),
        "20,000 scans, refused": (
            "the same with 20,000 empty scans (300 kB more)",
            lambda: (with_empty_scans(prog, 20_000), "image/jpeg"),
        ),
        "JPEG markers": (
            "a small JPEG behind 1.4 million empty COM segments (5.6 MB)",
            lambda: (
                b"\xff\xd8" + b"\xff\xfe\x00\x02" * int(1.4e6 * scale) + benchkit.jpeg(photo(64, 48))[2:],
                "image/jpeg",
            ),
        ),
        "PNG chunks": (
            "a small PNG behind 400,000 tEXt chunks (5.6 MB)",
            lambda: (png_chunks(int(4e5 * scale)), "image/png"),
        ),
        "BMP RLE": (
            "RLE8 BMP of runs of one pixel (6 MB), PIL's Python decoder",
            lambda: (bmp_rle8_runs_of_one(2000, 1500, int(6e6 * scale)), "application/x-image"),
        ),
        "bomb header": (
            "a PNG header of 20000x20000",
            lambda: (png_header(20000, 20000), "image/png"),
        ),
        "nested JSON": ("[ 1,000,000 deep", lambda: (b"[" * 1_000_000 + b"]" * 1_000_000, "application/json")),
        "not UTF-8": (
            "application/json of bytes that are not UTF-8",
            lambda: (b'{"image_base64": "\xff"}', "application/json"),
        ),
        "bad EXIF": (
            "a JPEG whose EXIF makes exif_transpose raise struct.error",
            lambda: (bad_exif_jpeg(), "image/jpeg"),
        ),
    }


# --- one case, in this process -----------------------------------------------------------------------------


def high_water_mark() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def resident() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_high_water_mark() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_case(name: str, model_dir: Path, scale: float) -> dict:
    """The request of case ``name`` to a fresh worker on ``model_dir``, measured."""
    from dogbreeds.local.serving import ModelWorker

    description, make = cases(scale)[name]
    body, content_type = make()
    worker = ModelWorker(model_dir)
    warm = benchkit.jpeg(benchkit.photo_like(1600, 1200, seed=1))
    for _ in range(WARM_UP_REQUESTS):  # the first few forward passes still set up oneDNN: seconds each
        worker.answer(warm, "image/jpeg")
    estimate = _estimate(worker, body, content_type)
    baseline = resident()
    reset_high_water_mark()
    cpu, wall = cpu_seconds(), time.perf_counter()
    answer = worker.answer(body, content_type)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    return {
        "case": name,
        "what": description,
        "body_bytes": len(body),
        "status": answer.status,
        "message": answer.text[:160] if answer.status != 200 else "",
        "peak_mib": max(0, high_water_mark() - baseline) / MiB,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "estimate_mib": estimate / MiB if estimate is not None else None,
    }


def _estimate(worker: object, body: bytes, content_type: str) -> int | None:
    """The decoding estimate the budget checks, from the worker's own inference.py; None if it refuses first."""
    globals_ = worker.service._service._transform_fn.__globals__
    try:
        request = globals_["parse_request"](body, content_type, worker.model)
    except Exception:
        return None
    return sum(item.cost for item in request.images)


def slow_model_through_the_lambda() -> dict:
    """A model slower than the Lambda's read timeout: how many calls the handler makes, and what it answers."""
    import handler
    from dogbreeds.local.runtime import ModelResponse, RuntimeServer

    calls: list[float] = []

    def slow(invocation: object) -> ModelResponse:
        calls.append(time.perf_counter())
        time.sleep(1.5)
        return ModelResponse(200, "application/json", b"{}")

    settings = handler.Settings(endpoint_name="bench", endpoint_timeout=1.0, endpoint_attempts=3)
    credentials = {"region_name": "us-east-1", "aws_access_key_id": "local", "aws_secret_access_key": "local"}
    with RuntimeServer({"bench": slow}) as runtime:
        client = handler.make_client(settings, endpoint_url=runtime.url, **credentials)
        image = base64.b64encode(benchkit.jpeg(benchkit.photo_like(64, 48))).decode()
        started = time.perf_counter()
        response = handler.handle({"image_base64": image}, None, settings=settings, client=client)
        wall = time.perf_counter() - started
    return {"status": response["statusCode"], "calls": len(calls), "wall_seconds": wall, "body": response["body"]}


# --- the parent: every case in its own process -------------------------------------------------------------


def write_model_dir(folder: Path) -> Path:
    import torch

    from model import ModelConfig, build_model, save_artifact, save_serving_code

    torch.manual_seed(0)
    config = ModelConfig("resnet50", 133)
    save_artifact(folder, build_model(config), config, [f"{index:03d}.Breed_{index}" for index in range(1, 134)])
    save_serving_code(folder)
    return folder


def report(facts: dict[str, str], setup: dict, rows: list[dict], lambda_row: dict) -> str:
    lines = [
        *benchkit.report_header("## Hostile requests: memory and CPU per request", facts, setup),
        f"Worker: {setup['worker']}. Budgets: the defaults (MAX_DECODE_BYTES 384 MiB per request, MAX_JPEG_SCANS "
        f"100, MAX_PIXELS 40,000,000 per image). Targets: peak under {TARGET_MEMORY_MIB} MiB above the worker's "
        f"baseline, CPU under {TARGET_CPU_SECONDS:g} s per request.",
        "",
        table(
            ["case", "request", "status", "estimate MiB", "peak MiB", "CPU s", "wall s"],
            [
                (
                    row["case"],
                    row["what"],
                    row["status"],
                    "-" if row["estimate_mib"] is None else f"{row['estimate_mib']:.0f}",
                    f"{row['peak_mib']:.0f}",
                    f"{row['cpu_seconds']:.2f}",
                    f"{row['wall_seconds']:.2f}",
                )
                for row in rows
            ],
        ),
        "",
        f"Largest peak: {max(row['peak_mib'] for row in rows):.0f} MiB; most CPU: "
        f"{max(row['cpu_seconds'] for row in rows):.2f} s.",
        "",
        f"A model slower than the Lambda's read timeout (1 s, 3 attempts allowed): {lambda_row['calls']} call, "
        f"answered {lambda_row['status']} after {lambda_row['wall_seconds']:.1f} s.",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    scale = 1 / 3 if args.quick else 1.0
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.model_dir), scale)))
        return
    facts = benchkit.machine()
    conditions = benchkit.RunConditions(args.wait_idle, benchkit.load_policy(args))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model_dir = write_model_dir(Path(folder) / "model")
        for name in cases(scale):
            log(f"case {name}")
            command = [sys.executable, __file__, "--case", name, "--model-dir", str(model_dir)]
            command += ["--quick"] if args.quick else []
            done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    lambda_row = slow_model_through_the_lambda()
    setup = {
        "worker": "resnet50 (random weights, 133 classes) on the CPU, through the toolkit's HandlerService",
        **conditions.setup(),
    }
    raw = {"machine": facts, "setup": setup, "cases": rows, "lambda_slow_model": lambda_row}
    benchkit.write_outputs(report(facts, setup, rows, lambda_row), raw, args.output, args.json)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
