"""Inference benchmark: the endpoint's handler functions, in-process, against a naive handler in the same run.

    .venv/bin/python benchmarks/bench_inference.py --quick          # about 30 seconds on 2 CPU cores
    .venv/bin/python benchmarks/bench_inference.py                  # docs/benchmarks.md: about 1.5 minutes

A model folder is written as train.py writes it (``model.save_artifact`` of a randomly initialized resnet50
with 133 classes, and ``model.save_serving_code``); ``inference.model_fn`` loads it, and every request runs
``parse_request`` -> ``predict`` -> ``serialize``, the steps of its ``transform_fn``. The naive handler is
written the way the original course code served the model: the whole photo decoded, resized to 224x224
without a crop, no inference mode (``torch.no_grad``), fp32, the default memory format, raw logits as JSON.

Two photos (generated, with detail and noise): a camera-size 1600x1200 JPEG and a small 320x240 one,
each at batch 1 (an ``image/jpeg`` body) and in batched requests (``{"images_base64": [...]}``). Requests
of the two handlers alternate, so that whatever else the machine runs slows both alike. Reported: latency
per request (p50, p95), images per second, the time per stage (parse, decode, preprocess, forward,
serialize), the pieces that differ (decode and preprocessing variants, also of a 12-megapixel
4032x3024 photo) and a forward-pass matrix of memory format and autocast at batch 1 and at --gpu-batch
(on a GPU: fp32, fp16 and, where the GPU has it, bf16). The device is a CUDA GPU if there is one
(--device to choose).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import dataclasses
import functools
import io
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import benchkit
import numpy as np
import torch
from benchkit import log, median, ms, percentile, ratio, table
from PIL import Image
from torchvision import transforms

STAGES = ("parse", "decode", "preprocess", "forward", "serialize")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="fewer requests: about half a minute on 2 CPU cores")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda (default: auto)")
    parser.add_argument("--batch", type=int, default=16, help="images per batched request (default: %(default)s)")
    parser.add_argument(
        "--gpu-batch", type=int, default=32, help="batch of the forward matrix on a GPU (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="requests per case (default: 10 quick, 60 full)")
    benchkit.add_report_options(parser)
    return parser


class Stages:
    """Seconds per stage of the request in progress."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def time(self, name: str, on: torch.device | None = None) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if on is not None:
                benchkit.synchronize(on)
            self.current[name] += time.perf_counter() - started

    def take(self) -> dict[str, float]:
        taken, self.current = dict(self.current), defaultdict(float)
        return taken


class Handler:
    """inference.py's four functions, each stage timed (the wrappers cost microseconds)."""

    name = "inference.py"

    def __init__(self, inference: object, model_dir: Path, stages: Stages) -> None:
        self.inference, self.stages = inference, stages
        started = time.perf_counter()
        self.served = inference.model_fn(str(model_dir))
        self.load_seconds = time.perf_counter() - started
        device = self.served.device
        decode, probabilities, transform = inference.decode, inference._probabilities, self.served.transform

        def timed_decode(*args: object) -> Image.Image:
            with stages.time("decode"):
                return decode(*args)

        def timed_probabilities(*args: object) -> torch.Tensor:
            with stages.time("forward", device):
                return probabilities(*args)

        def timed_transform(image: Image.Image) -> torch.Tensor:
            with stages.time("preprocess"):
                return transform(image)

        # predict looks these up in the module when called; the originals stay here for the other measurements.
        self.decode, self.probabilities = decode, probabilities
        inference.decode, inference._probabilities = timed_decode, timed_probabilities
        self.served = dataclasses.replace(self.served, transform=timed_transform)

    def __call__(self, body: bytes, content_type: str) -> str:
        with self.stages.time("parse"):
            request = self.inference.parse_request(body, content_type, self.served)
        with self.stages.time("predict"):
            prediction = self.inference.predict(request, self.served)
        with self.stages.time("serialize"):
            answer, _ = self.inference.serialize(prediction, "application/json")
        return answer

    def take(self) -> dict[str, float]:
        stages = self.stages.take()
        # What predict does beside decode, preprocess and forward: stacking, top k, the answer's dicts.
        inner = sum(stages.get(name, 0.0) for name in ("decode", "preprocess", "forward"))
        stages["serialize"] = stages.get("serialize", 0.0) + stages.pop("predict") - inner
        return stages


class NaiveHandler:
    """The handler as the original course code wrote it, stage by stage."""

    name = "naive"

    def __init__(self, model_dir: Path, device: torch.device, stages: Stages) -> None:
        from model import load_artifact

        self.device, self.stages = device, stages
        started = time.perf_counter()
        self.network, config, _ = load_artifact(model_dir, device)  # fp32, default memory format, no warm-up
        self.load_seconds = time.perf_counter() - started
        self.transform = transforms.Compose(
            [
                transforms.Resize((config.image_size, config.image_size)),  # no crop: the photo squeezed
                transforms.ToTensor(),
                transforms.Normalize(config.mean, config.std),
            ]
        )

    def __call__(self, body: bytes, content_type: str) -> str:
        with self.stages.time("parse"):
            if content_type == "application/json":
                encoded = [base64.b64decode(item) for item in json.loads(body)["images_base64"]]
            else:
                encoded = [body]
        with self.stages.time("decode"):
            images = [Image.open(io.BytesIO(data)).convert("RGB") for data in encoded]  # the whole photo
        with self.stages.time("preprocess"):
            inputs = torch.stack([self.transform(image) for image in images])
        with self.stages.time("forward", self.device), torch.no_grad():
            logits = self.network(inputs.to(self.device))
        with self.stages.time("serialize"):
            return json.dumps(logits.cpu().tolist())

    def take(self) -> dict[str, float]:
        return self.stages.take()


def write_model_dir(folder: Path) -> Path:
    """A model folder as train.py leaves it, with a randomly initialized resnet50 (133 classes)."""
    from model import ModelConfig, build_model, save_artifact, save_serving_code

    torch.manual_seed(0)
    config = ModelConfig("resnet50", 133)
    save_artifact(folder, build_model(config), config, [f"{index:03d}.Breed_{index}" for index in range(1, 134)])
    save_serving_code(folder)
    return folder


def requests(photos: dict[str, bytes], batch: int) -> list[tuple[str, int, bytes, str]]:
    """(photo, batch, body, content type) for each case."""
    cases = []
    for name, data in photos.items():
        cases.append((name, 1, data, "image/jpeg"))
    for name, data in photos.items():
        body = json.dumps({"images_base64": [base64.b64encode(data).decode()] * batch}).encode()
        cases.append((name, batch, body, "application/json"))
    return cases


def end_to_end(
    handlers: list[Handler | NaiveHandler], cases: list[tuple[str, int, bytes, str]], rounds: int
) -> list[dict]:
    """Both handlers on every case, their requests alternating; latencies and stage times per request."""
    results = []
    for photo, batch, body, content_type in cases:
        count = rounds if batch == 1 else max(3, rounds // 5)
        log(f"end to end: {photo}, batch {batch}, {count} requests per handler")
        latencies: dict[str, list[float]] = {handler.name: [] for handler in handlers}
        stages: dict[str, list[dict[str, float]]] = {handler.name: [] for handler in handlers}
        for handler in handlers:  # warm-up: first use of this batch size
            handler(body, content_type)
            handler.take()
        for _ in range(count):
            for handler in handlers:
                latencies[handler.name].append(benchkit.timed(functools.partial(handler, body, content_type)))
                stages[handler.name].append(handler.take())
        for handler in handlers:
            values = latencies[handler.name]
            results.append(
                {
                    "photo": photo,
                    "batch": batch,
                    "handler": handler.name,
                    "requests": len(values),
                    "p50": percentile(values, 50),
                    "p95": percentile(values, 95),
                    "images_per_second": batch * len(values) / sum(values),
                    "stages": {name: median(row.get(name, 0.0) for row in stages[handler.name]) for name in STAGES},
                }
            )
    return results


def pieces(photos: dict[str, bytes], inference: object, optimized: Handler, naive: NaiveHandler, count: int) -> list:
    """The steps that differ between the handlers, one at a time, alternating (median seconds per image)."""
    rows = []
    for name, data in photos.items():
        log(f"pieces: {name}, {count} rounds")
        rows += photo_pieces(name, data, inference, optimized, naive, count)
    return rows


def photo_pieces(
    name: str, data: bytes, inference: object, optimized: Handler, naive: NaiveHandler, count: int
) -> list[dict]:
    from model import eval_transform

    config, decode = optimized.served.config, optimized.decode

    def whole() -> Image.Image:
        return Image.open(io.BytesIO(data)).convert("RGB")

    def reduced() -> Image.Image:
        return decode(inference.RequestImage(name, Image.open(io.BytesIO(data))), config.resize_size)

    full_size, decoded, reference = whole(), reduced(), eval_transform(config)
    variants = {
        ("decode", "the whole photo (naive)"): whole,
        ("decode", f"reduced scale, to {decoded.width}x{decoded.height} (inference.decode)"): reduced,
        ("preprocess", "Resize((224, 224)) of the whole photo, no crop (naive)"): lambda: naive.transform(full_size),
        ("preprocess", "eval_transform on PIL (training's evaluation)"): lambda: reference(decoded),
        ("preprocess", "one PIL resize of the crop's box, then to a tensor (not kept)"): lambda: box_resize(
            decoded, config
        ),
        ("preprocess", "tensor ops (inference.preprocess)"): lambda: inference.preprocess(decoded, config),
    }
    times = benchkit.interleaved(variants, count)
    return [
        {"photo": name, "step": step, "variant": variant, "seconds": median(times[(step, variant)])}
        for step, variant in variants
    ]


def box_resize(image: Image.Image, config: object) -> torch.Tensor:
    """The evaluation transform fused into one PIL pass: resize only the box that the center crop keeps.

    The same sizes and rounding as torchvision's Resize and CenterCrop; measured against the tensor path.
    """
    width, height = image.size
    short, long = sorted((width, height))
    resized_long = int(config.resize_size * long / short)
    resized = (config.resize_size, resized_long) if width <= height else (resized_long, config.resize_size)
    crop = config.image_size
    left, top = round((resized[0] - crop) / 2), round((resized[1] - crop) / 2)
    scale_x, scale_y = width / resized[0], height / resized[1]
    box = (left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y)
    pixels = torch.from_numpy(np.array(image.resize((crop, crop), Image.Resampling.BILINEAR, box=box)))
    mean = torch.tensor(config.mean).view(3, 1, 1) * 255
    std = torch.tensor(config.std).view(3, 1, 1) * 255
    return pixels.permute(2, 0, 1).float().sub_(mean).div_(std)


def forward_matrix(
    inference: object, optimized: Handler, photo: bytes, batches: tuple[int, ...], count: int
) -> list[dict]:
    """The network alone (host tensor in, probabilities out), per memory format, precision and batch.

    The first variant is the naive handler's forward pass: torch.no_grad, the default memory format, fp32.
    The others run inference._probabilities (inference mode, autocast where a dtype is given). The input is
    ``photo`` preprocessed, repeated: random numbers would not give the activations of a photo (on a CPU,
    slow denormal numbers appear in a randomly initialized network).
    """
    served, decode, probabilities = optimized.served, optimized.decode, optimized.probabilities
    image = inference.preprocess(
        decode(inference.RequestImage("photo", Image.open(io.BytesIO(photo))), served.config.resize_size),
        served.config,
    )
    on = served.device
    dtypes: list[torch.dtype | None] = [None]
    if on.type == "cuda":
        dtypes.append(torch.float16)
        if torch.cuda.get_device_capability(on) >= (8, 0):
            dtypes.append(torch.bfloat16)
    networks = {
        torch.contiguous_format: copy.deepcopy(served.network).to(memory_format=torch.contiguous_format),
        torch.channels_last: served.network,
    }
    rows = []
    for batch in batches:
        inputs = image.unsqueeze(0).repeat(batch, 1, 1, 1)

        def naive_forward(x: torch.Tensor = inputs) -> torch.Tensor:
            with torch.no_grad():
                return torch.softmax(networks[torch.contiguous_format](x.to(on)).float(), dim=1).cpu()

        variants: dict[tuple[str, str], Callable[[], object]] = {
            ("contiguous, torch.no_grad", "float32"): naive_forward
        }
        for memory_format, network in networks.items():
            for dtype in dtypes:
                variant = dataclasses.replace(served, network=network, memory_format=memory_format, amp_dtype=dtype)
                key = (
                    "channels_last" if memory_format == torch.channels_last else "contiguous",
                    str(dtype or torch.float32).removeprefix("torch."),
                )
                variants[key] = functools.partial(probabilities, variant, inputs)
        n = count if batch == 1 else max(3, count // 5)
        log(f"forward: batch {batch}, {len(variants)} variants, {n} rounds")
        times = benchkit.interleaved(variants, n, on, warmup=2)
        for (memory_format, dtype), values in times.items():
            rows.append(
                {
                    "memory_format": memory_format,
                    "dtype": dtype,
                    "batch": batch,
                    "p50": percentile(values, 50),
                    "p95": percentile(values, 95),
                    "images_per_second": batch * len(values) / sum(values),
                }
            )
    return rows


def report(facts: dict, setup: dict, results: list[dict], piece_rows: list[dict], matrix: list[dict]) -> str:
    by_case: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for row in results:
        by_case[(row["photo"], row["batch"])][row["handler"]] = row
    lines = [
        *benchkit.report_header("### Inference: handler functions in-process", facts, setup),
        f"Model: resnet50, random initialization, 133 classes, 224-pixel input, on {setup['device']}; "
        f"model_fn {ms(setup['model_fn_seconds'])} ms (with its warm-up pass), the naive load "
        f"{ms(setup['naive_load_seconds'])} ms. Photos: {setup['photos']}.",
        "",
        "End to end (parse_request -> predict -> serialize), latency per request in ms:",
        "",
        table(
            ["photo", "batch", "handler", "requests", "p50", "p95", "images/s", "speed-up"],
            [
                (
                    photo,
                    batch,
                    name,
                    row["requests"],
                    ms(row["p50"]),
                    ms(row["p95"]),
                    f"{row['images_per_second']:.1f}",
                    ratio(row["images_per_second"], handlers["naive"]["images_per_second"])
                    if name != "naive"
                    else "1.00x",
                )
                for (photo, batch), handlers in by_case.items()
                for name, row in handlers.items()
            ],
        ),
        "",
        "Where the time goes, median ms per request (serialize: top k, the answer's dicts and JSON):",
        "",
        table(
            ["photo", "batch", "handler", *STAGES],
            [
                (photo, batch, name, *(ms(row["stages"][stage]) for stage in STAGES))
                for (photo, batch), handlers in by_case.items()
                for name, row in handlers.items()
            ],
        ),
        "",
        "The pieces that differ, median ms per image:",
        "",
        table(
            ["photo", "step", "variant", "ms"],
            [(row["photo"], row["step"], row["variant"], ms(row["seconds"])) for row in piece_rows],
        ),
        "",
        "The forward pass alone (host tensor in, probabilities out), per memory format and precision:",
        "",
        table(
            ["memory format", "precision", "batch", "p50 ms", "p95 ms", "images/s"],
            [
                (
                    row["memory_format"],
                    row["dtype"],
                    row["batch"],
                    ms(row["p50"]),
                    ms(row["p95"]),
                    f"{row['images_per_second']:.1f}",
                )
                for row in matrix
            ],
        ),
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    rounds = args.rounds or (10 if args.quick else 60)
    on = benchkit.device(args.device)
    # inference.py reads MAX_BATCH when imported; the batched requests must fit.
    os.environ["MAX_BATCH"] = str(max(args.batch, args.gpu_batch, int(os.environ.get("MAX_BATCH", "16"))))
    import inference

    inference._device = lambda context: on  # model_fn takes the GPU when there is one; --device decides here

    facts = benchkit.machine()
    idle = benchkit.wait_until_idle(args.wait_idle)
    log(idle)
    other_load = benchkit.OtherLoad()
    load_before = benchkit.load_average()
    sizes = {"1600x1200": (1600, 1200), "320x240": (320, 240)}
    photos = {
        name: benchkit.jpeg(benchkit.photo_like(*size, seed=index)) for index, (name, size) in enumerate(sizes.items())
    }
    with tempfile.TemporaryDirectory() as folder:
        model_dir = write_model_dir(Path(folder) / "model")
        stages = Stages()
        optimized = Handler(inference, model_dir, stages)
        naive = NaiveHandler(model_dir, optimized.served.device, stages)
    results = end_to_end([optimized, naive], requests(photos, args.batch), rounds)
    # A 12-megapixel phone photo, for the pieces only (decode and preprocessing).
    large = {"4032x3024": benchkit.jpeg(benchkit.photo_like(4032, 3024, seed=2))}
    piece_rows = pieces(photos | large, inference, optimized, naive, max(10, rounds // 2))
    gpu = optimized.served.device.type == "cuda"
    batches = (1, args.gpu_batch if gpu else args.batch)
    matrix = forward_matrix(inference, optimized, photos["320x240"], batches, rounds)
    setup = {
        "device": str(optimized.served.device),
        "model_fn_seconds": optimized.load_seconds,
        "naive_load_seconds": naive.load_seconds,
        "photos": ", ".join(f"{name} JPEG of {len(data) / 1000:.0f} kB (quality 90)" for name, data in photos.items()),
        "idle": idle,
        "load_before": load_before,
        "load_after": benchkit.load_average(),
        "other_load": other_load.stop(),
    }
    markdown = report(facts, setup, results, piece_rows, matrix)
    raw = {"machine": facts, "setup": setup, "end_to_end": results, "pieces": piece_rows, "forward": matrix}
    benchkit.write_outputs(markdown, raw, args.output, args.json)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
