"""Inference benchmark: the endpoint's handler functions in-process, at each serving precision, against a naive
handler in the same run, and the int8 model's accuracy against fp32's on real photos.

    .venv/bin/python benchmarks/bench_inference.py --quick          # about 2 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_inference.py --accuracy-images DIR   # docs/benchmarks.md: about 6 minutes

A model folder is written as train.py writes it (``model.save_artifact`` of a resnet50 with 133 classes and
``model.save_serving_code``; with ``--quantize int8``, ``quantize.write_int8_model``'s int8 model and report).
The backbone has random weights; its head is fitted to real photos (below), so that top-1 has something to
agree on. ``inference.model_fn`` loads it once per precision (``INFERENCE_PRECISION``: fp32, bf16 and int8 on
a CPU; fp32, fp16 and bf16 on a GPU), and every request runs ``parse_request`` -> ``predict`` -> ``serialize``,
the steps of its ``transform_fn``. The naive handler is written the way the original course code served the
model: the whole photo decoded, resized to 224x224 without a crop, ``torch.no_grad`` (no inference mode),
fp32, the default memory format, raw logits as JSON.

Two photos (generated, with detail and noise): a camera-size 1600x1200 JPEG and a small 320x240 one, each at
batch 1 (an ``image/jpeg`` body) and in batched requests (``{"images_base64": [...]}``). The handlers'
requests alternate (one of each per round, benchkit.alternate: each block of rounds waits for idle CPUs and is
measured again when other processes took more than --max-other-load of the CPU time). Reported: latency per
request (p50, p95) and the speed-up against the naive handler (the ratio of p50s), the time per stage, the
pieces that differ (decode and preprocessing variants, also of a 12-megapixel photo) and the forward pass
alone per precision.

Accuracy: the real photos in --accuracy-images (every image file under it, at least 224 pixels on the short
side), each cut into random crops (views): ``--train-views`` per photo fit the head (a linear layer on the
random backbone's features: which photo does a crop come from) and calibrate the int8 model, ``--test-views``
others measure top-1 accuracy and agreement with fp32 for each precision. Without --accuracy-images, generated
photos stand in, and the report says so.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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
from benchkit import log, ms, table
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms

STAGES = ("parse", "decode", "preprocess", "forward", "serialize")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NAIVE = "naive"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="fewer requests and views: about 2 minutes")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda (default: auto)")
    parser.add_argument("--batch", type=int, default=16, help="images per batched request (default: %(default)s)")
    parser.add_argument(
        "--gpu-batch", type=int, default=32, help="batch of the forward matrix on a GPU (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="requests per case (default: 10 quick, 60 full)")
    parser.add_argument(
        "--precisions",
        default=None,
        help="INFERENCE_PRECISION values to serve, comma-separated (default: fp32,bf16,int8 on a CPU with native "
        "BF16, fp32,int8 on other CPUs, fp32,fp16,bf16 on a GPU)",
    )
    parser.add_argument(
        "--accuracy-images", default=None, help="a folder of real photos for the accuracy (default: generated ones)"
    )
    parser.add_argument("--train-views", type=int, default=None, help="crops per photo fitting the head (16; quick 4)")
    parser.add_argument("--test-views", type=int, default=None, help="crops per photo measured (8; quick 2)")
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


class Instrumented:
    """inference.py's decode and forward pass, timed per stage (once for every handler; microseconds each).

    ``predict`` looks these up in the module when called; the originals stay here for the other measurements."""

    def __init__(self, inference: object, stages: Stages) -> None:
        self.inference, self.stages = inference, stages
        self.decode, self.probabilities = inference.decode, inference._probabilities
        decode, probabilities = self.decode, self.probabilities

        def timed_decode(*args: object) -> Image.Image:
            with stages.time("decode"):
                return decode(*args)

        def timed_probabilities(model: object, inputs: torch.Tensor) -> torch.Tensor:
            with stages.time("forward", model.device):
                return probabilities(model, inputs)

        inference.decode, inference._probabilities = timed_decode, timed_probabilities


class Handler:
    """inference.py's request steps, served at one precision, each stage timed."""

    def __init__(self, hooks: Instrumented, model_dir: Path, precision: str) -> None:
        self.inference, self.stages = hooks.inference, hooks.stages
        self.name = f"inference.py {precision}"
        previous = os.environ.get("INFERENCE_PRECISION")
        os.environ["INFERENCE_PRECISION"] = precision
        try:
            started = time.perf_counter()
            served = self.inference.model_fn(str(model_dir))
            self.load_seconds = time.perf_counter() - started
        finally:
            os.environ.pop("INFERENCE_PRECISION")
            if previous is not None:
                os.environ["INFERENCE_PRECISION"] = previous
        self.untimed = served
        transform, stages = served.transform, self.stages

        def timed_transform(image: Image.Image) -> torch.Tensor:
            with stages.time("preprocess"):
                return transform(image)

        self.served = dataclasses.replace(served, transform=timed_transform)

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

    name = NAIVE

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


# --- the model folder: a head fitted to real photos, and the int8 model -------------------------------------------


@dataclasses.dataclass
class Views:
    """Random crops of photos, preprocessed as training's evaluation does; the label is the photo's index."""

    source: str  # what the photos are, for the report
    photos: int
    train: TensorDataset
    test: TensorDataset


def accuracy_photos(folder: str | None, quick: bool) -> tuple[list[Image.Image], str]:
    """The real photos of ``folder`` (at least 224 pixels on the short side), or generated ones."""
    if folder is None:
        count = 6 if quick else 20
        photos = [benchkit.photo_like(640, 480, seed=100 + index) for index in range(count)]
        return photos, f"{count} generated photos (no --accuracy-images: the figures say little about real photos)"
    paths = sorted(path for path in Path(folder).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
    photos = [image for image in (Image.open(path).convert("RGB") for path in paths) if min(image.size) >= 224]
    if len(photos) < 2:
        raise SystemExit(f"--accuracy-images {folder}: fewer than 2 images of at least 224 pixels")
    return photos, f"{len(photos)} real photos from {folder}"


def make_views(photos: list[Image.Image], config: object, counts: tuple[int, int], source: str) -> Views:
    """``counts`` (train, test) random crops of each photo: a quarter to all of its area, aspect 3:4 to 4:3,
    flipped half the time; then model.eval_transform (resize, center crop, normalize)."""
    from model import eval_transform

    crop = transforms.RandomResizedCrop(config.resize_size, scale=(0.25, 1.0))
    flip, evaluate = transforms.RandomHorizontalFlip(), eval_transform(config)
    torch.manual_seed(1)
    splits = []
    for count in counts:
        images, labels = [], []
        for label, photo in enumerate(photos):
            for _ in range(count):
                images.append(evaluate(flip(crop(photo))))
                labels.append(label)
        splits.append(TensorDataset(torch.stack(images), torch.tensor(labels)))
    return Views(source, len(photos), *splits)


def fit_head(network: nn.Module, views: Views, steps: int = 300) -> float:
    """Fit ``network.fc`` to tell the photos apart from the random backbone's features of the train views
    (full-batch Adam); return the train views' top-1 accuracy."""
    fc, network.fc = network.fc, nn.Identity()
    network.eval()
    with torch.inference_mode():
        loader = DataLoader(views.train, batch_size=32)
        features = torch.cat([network(images.contiguous(memory_format=torch.channels_last)) for images, _ in loader])
    network.fc = fc
    features, targets = features.clone(), views.train.tensors[1]
    scale = features.std().item() or 1.0
    optimizer = torch.optim.Adam(fc.parameters(), lr=1e-2 / scale, weight_decay=1e-4)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(fc(features), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((fc(features).argmax(dim=1) == targets).float().mean())


def write_model_dir(folder: Path, views: Views, int8: bool) -> dict:
    """A model folder as train.py leaves it (resnet50, 133 classes, random backbone, head fitted to ``views``),
    with the int8 model calibrated on the train views and its report on the test views where ``int8``."""
    from model import ModelConfig, build_model, save_artifact, save_serving_code

    torch.manual_seed(0)
    config = ModelConfig("resnet50", 133)
    network = build_model(config).to(memory_format=torch.channels_last)
    started = time.perf_counter()
    fitted = fit_head(network, views)
    log(f"head fitted to {views.photos} photos in {time.perf_counter() - started:.1f} s: train top-1 {fitted:.3f}")
    save_artifact(folder, network, config, [f"{index:03d}.Breed_{index}" for index in range(1, 134)])
    save_serving_code(folder)
    report = {"head_train_top1": fitted}
    if int8:
        from quantize import write_int8_model

        started = time.perf_counter()
        valid, test = DataLoader(views.train, batch_size=16), DataLoader(views.test, batch_size=16)
        report["int8"] = write_int8_model(network, folder, valid, test)
        log(f"int8 model written in {time.perf_counter() - started:.1f} s")
    return report


def accuracy(handlers: list[Handler], probabilities: Callable, views: Views) -> list[dict]:
    """Top-1 accuracy of each precision on the test views (which photo a crop is of), top-1 and top-5
    agreement with fp32, the largest change of a probability."""
    images, labels = views.test.tensors
    outputs = {}
    for handler in handlers:
        served = handler.untimed
        outputs[handler.name] = torch.cat([probabilities(served, batch) for batch in images.split(16)])
    reference = outputs.get("inference.py fp32")
    rows = []
    for name, output in outputs.items():
        row = {"handler": name, "views": len(labels), "top1": float((output.argmax(1) == labels).float().mean())}
        if reference is not None:
            top5, reference_top5 = output.topk(5, dim=1).indices, reference.topk(5, dim=1).indices
            row["top1_agreement"] = float((output.argmax(1) == reference.argmax(1)).float().mean())
            row["top5_overlap"] = float(
                np.mean([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(top5, reference_top5, strict=True)])
            )
            row["max_probability_change"] = float((output - reference).abs().max())
            # log p(top-1) - log p(top-2) is the logits' margin; how far a precision moves it, against its size.
            top1 = reference.argmax(1, keepdim=True)
            change = (output.clamp_min(1e-30).log() - reference.clamp_min(1e-30).log()).gather(1, top1)
            row["mean_abs_log_probability_change"] = float(change.abs().mean())
            ordered = reference.clamp_min(1e-30).log().sort(dim=1, descending=True).values
            row["fp32_median_margin"] = float((ordered[:, 0] - ordered[:, 1]).median())
        rows.append(row)
    return rows


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
    handlers: list[Handler | NaiveHandler], cases: list[tuple[str, int, bytes, str]], rounds: int, policy: object
) -> list[dict]:
    """Every handler on every case, one request of each per round; latencies and stage times per request."""
    results = []
    for photo, batch, body, content_type in cases:
        count = rounds if batch == 1 else max(3, rounds // 5)
        log(f"end to end: {photo}, batch {batch}, {count} requests per handler")
        sides = {handler.name: functools.partial(request_stages, handler, body, content_type) for handler in handlers}
        comparison = benchkit.alternate(sides, count, policy=policy)  # warm-up: the first use of this batch size
        naive_p50 = comparison.p50(NAIVE)
        for handler in handlers:
            stages = comparison.results[handler.name]
            results.append(
                {
                    "photo": photo,
                    "batch": batch,
                    "handler": handler.name,
                    "requests": len(stages),
                    "p50": comparison.p50(handler.name),
                    "p95": comparison.p95(handler.name),
                    "speedup": benchkit.speedup(naive_p50, comparison.p50(handler.name)),
                    "stages": {name: benchkit.median(row.get(name, 0.0) for row in stages) for name in STAGES},
                    "load": comparison.load_note(),
                    "under_load": comparison.under_load,
                }
            )
    return results


def request_stages(handler: Handler | NaiveHandler, body: bytes, content_type: str) -> dict[str, float]:
    handler(body, content_type)
    return handler.take()


def pieces(
    photos: dict[str, bytes], inference: object, hooks: Instrumented, naive: NaiveHandler, count: int, policy: object
) -> list:
    """The steps that differ between the handlers, one at a time, alternating (p50 seconds per image)."""
    rows = []
    for name, data in photos.items():
        log(f"pieces: {name}, {count} rounds")
        rows += photo_pieces(name, data, inference, hooks, naive, count, policy)
    return rows


def photo_pieces(
    name: str, data: bytes, inference: object, hooks: Instrumented, naive: NaiveHandler, count: int, policy: object
) -> list[dict]:
    from model import ModelConfig, eval_transform

    config, decode = ModelConfig("resnet50", 133), hooks.decode

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
    comparison = benchkit.alternate(
        {f"{step}|{variant}": f for (step, variant), f in variants.items()}, count, policy=policy
    )
    return [
        {"photo": name, "step": step, "variant": variant, "seconds": comparison.p50(f"{step}|{variant}")}
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
    inference: object,
    hooks: Instrumented,
    handlers: list[Handler],
    naive: NaiveHandler,
    photo: bytes,
    batches: tuple[int, ...],
    count: int,
    policy: object,
) -> list[dict]:
    """The network alone (host tensor in, probabilities out) at each served precision, against the naive
    handler's forward pass (torch.no_grad, the default memory format, fp32), alternating.

    The input is ``photo`` preprocessed, repeated: random numbers would not give the activations of a photo
    (on a CPU, slow denormal numbers appear in a randomly initialized network)."""
    from model import ModelConfig

    config = ModelConfig("resnet50", 133)
    image = inference.preprocess(
        hooks.decode(inference.RequestImage("photo", Image.open(io.BytesIO(photo))), config.resize_size), config
    )
    on = naive.device
    rows = []
    for batch in batches:
        inputs = image.unsqueeze(0).repeat(batch, 1, 1, 1)

        def naive_forward(x: torch.Tensor = inputs) -> torch.Tensor:
            with torch.no_grad():
                return torch.softmax(naive.network(x.to(on)).float(), dim=1).cpu()

        sides: dict[str, Callable[[], object]] = {NAIVE: naive_forward}
        for handler in handlers:
            sides[handler.name] = functools.partial(hooks.probabilities, handler.untimed, inputs)
        n = count if batch == 1 else max(3, count // 5)
        log(f"forward: batch {batch}, {len(sides)} variants, {n} rounds")
        comparison = benchkit.alternate(sides, n, on=on, warmup=2, policy=policy)
        for name in sides:
            p50 = comparison.p50(name)
            rows.append(
                {
                    "network": name,
                    "batch": batch,
                    "p50": p50,
                    "p95": comparison.p95(name),
                    "speedup": comparison.speedup(name, NAIVE),
                    "gflops": benchkit.RESNET50_GFLOP * batch / p50,
                    "load": comparison.load_note(),
                }
            )
    return rows


def report(facts: dict, setup: dict, results: list[dict], accuracy_rows: list[dict], pieces: list, matrix: list) -> str:
    loads = {f"{row['photo']}, batch {row['batch']}": row["load"] for row in results}
    lines = [
        *benchkit.report_header("### Inference: handler functions in-process, per precision", facts, setup),
        f"Model: resnet50, 133 classes, 224-pixel input, random backbone with a head fitted to the accuracy photos, "
        f"on {setup['device']}. Precisions served: {setup['precisions']}. model_fn (with its warm-up passes): "
        f"{setup['load_ms']}; the naive load {ms(setup['naive_load_seconds'])} ms. Photos: {setup['photos']}.",
        "",
        "End to end (parse_request -> predict -> serialize), latency per request in ms; speed-up: the naive "
        "handler's p50 over the handler's:",
        "",
        table(
            ["photo", "batch", "handler", "requests", "p50", "p95", "images/s at p50", "speed-up (p50)"],
            [
                (
                    r["photo"],
                    r["batch"],
                    r["handler"],
                    r["requests"],
                    ms(r["p50"]),
                    ms(r["p95"]),
                    f"{r['batch'] / r['p50']:.1f}",
                    f"{r['speedup']:.2f}x",
                )
                for r in results
            ],
        ),
        "",
        "Blocks of rounds (each waits for idle CPUs first): " + "; ".join(f"{k}: {v}" for k, v in loads.items()) + ".",
        "",
        "Where the time goes, median ms per request (serialize: top k, the answer's dicts and JSON):",
        "",
        table(
            ["photo", "batch", "handler", *STAGES],
            [(r["photo"], r["batch"], r["handler"], *(ms(r["stages"][stage]) for stage in STAGES)) for r in results],
        ),
        "",
        *accuracy_lines(setup, accuracy_rows),
        "The pieces that differ, p50 ms per image (the variants alternating):",
        "",
        table(
            ["photo", "step", "variant", "ms"],
            [(row["photo"], row["step"], row["variant"], ms(row["seconds"])) for row in pieces],
        ),
        "",
        "The forward pass alone (host tensor in, probabilities out), alternating; GFLOP/s: resnet50's "
        f"{benchkit.RESNET50_GFLOP} GFLOP per image over the p50:",
        "",
        table(
            ["network", "batch", "p50 ms", "p95 ms", "speed-up (p50)", "GFLOP/s"],
            [
                (r["network"], r["batch"], ms(r["p50"]), ms(r["p95"]), f"{r['speedup']:.2f}x", f"{r['gflops']:.0f}")
                for r in matrix
            ],
        ),
    ]
    return "\n".join(lines)


def accuracy_lines(setup: dict, rows: list[dict]) -> list[str]:
    """The accuracy table, with the int8 report's own figures and what the figures can and cannot say."""
    views = setup["views"]
    lines = [
        f"Accuracy on {views['source']}: {views['train']} random crops per photo fit the head (train top-1 "
        f"{setup['model']['head_train_top1']:.3f}) and calibrate int8; {views['test']} other crops per photo "
        f"({views['test_total']} images) are measured. Top-1: which photo a crop comes from.",
        "",
        table(
            [
                "precision",
                "images",
                "top-1",
                "top-1 agreement with fp32",
                "top-5 overlap with fp32",
                "largest probability change",
                "mean change of fp32's top-1 log-probability",
            ],
            [
                (
                    r["handler"],
                    r["views"],
                    f"{r['top1']:.3f}",
                    f"{r.get('top1_agreement', float('nan')):.3f}",
                    f"{r.get('top5_overlap', float('nan')):.3f}",
                    f"{r.get('max_probability_change', float('nan')):.3f}",
                    f"{r.get('mean_abs_log_probability_change', float('nan')):.3f}",
                )
                for r in rows
            ],
        ),
        "",
    ]
    if rows and "fp32_median_margin" in rows[0]:
        lines += [
            f"fp32's median margin (log-probability of its top-1 over its top-2, the logits' difference): "
            f"{rows[0]['fp32_median_margin']:.2f}.",
            "",
        ]
    int8 = setup["model"].get("int8")
    if int8:
        lines += [
            "quantize.write_int8_model's own report on the same test crops: fp32 top-1 "
            f"{int8['fp32_test_accuracy']:.3f}, "
            f"int8 {int8['int8_test_accuracy']:.3f} ({int8['top1_loss_points']:.2f} points lost, "
            f"{'within' if int8['within_limit'] else 'beyond'} the {int8['max_top1_loss_points']:g} allowed), "
            f"agreement {int8['top1_agreement']:.3f}; graph {int8['graph']}, calibrated on "
            f"{int8['calibration_images']} crops, made in {int8['seconds']:.0f} s; {setup['int8_gate']}.",
            "",
        ]
    return lines


def main(args: argparse.Namespace) -> None:
    rounds = args.rounds or (10 if args.quick else 60)
    on = benchkit.device(args.device)
    policy = benchkit.load_policy(args)
    # inference.py reads MAX_BATCH when imported; the batched requests must fit.
    os.environ["MAX_BATCH"] = str(max(args.batch, args.gpu_batch, int(os.environ.get("MAX_BATCH", "16"))))
    import inference
    from model import ModelConfig

    inference._device = lambda context: on  # model_fn takes the GPU when there is one; --device decides here
    precisions = (args.precisions or default_precisions(on)).split(",")

    facts = benchkit.machine()
    conditions = benchkit.RunConditions(args.wait_idle, policy)
    photos_for_accuracy, source = accuracy_photos(args.accuracy_images, args.quick)
    counts = (args.train_views or (4 if args.quick else 16), args.test_views or (2 if args.quick else 8))
    views = make_views(photos_for_accuracy, ModelConfig("resnet50", 133), counts, source)
    sizes = {"1600x1200": (1600, 1200), "320x240": (320, 240)}
    photos = {
        name: benchkit.jpeg(benchkit.photo_like(*size, seed=index)) for index, (name, size) in enumerate(sizes.items())
    }
    stages = Stages()
    hooks = Instrumented(inference, stages)
    with tempfile.TemporaryDirectory() as folder:
        model_dir = Path(folder) / "model"
        model_report = write_model_dir(model_dir, views, int8="int8" in precisions)
        int8_gate = lift_int8_gate(inference, model_report)
        handlers = [Handler(hooks, model_dir, precision) for precision in precisions]
        naive = NaiveHandler(model_dir, on, stages)
    accuracy_rows = accuracy(handlers, hooks.probabilities, views)
    results = end_to_end([naive, *handlers], requests(photos, args.batch), rounds, policy)
    # A 12-megapixel phone photo, for the pieces only (decode and preprocessing).
    large = {"4032x3024": benchkit.jpeg(benchkit.photo_like(4032, 3024, seed=2))}
    piece_rows = pieces(photos | large, inference, hooks, naive, max(10, rounds // 2), policy)
    batches = (1, args.gpu_batch if on.type == "cuda" else args.batch)
    matrix = forward_matrix(inference, hooks, handlers, naive, photos["320x240"], batches, rounds, policy)
    setup = {
        "device": str(on),
        "precisions": ", ".join(f"{h.name.split()[-1]} (served: {h.untimed.precision})" for h in handlers)
        + f"; auto serves {inference.serving_precision('auto', on)} here",
        "load_ms": ", ".join(f"{h.name.split()[-1]} {ms(h.load_seconds)} ms" for h in handlers),
        "naive_load_seconds": naive.load_seconds,
        "photos": ", ".join(f"{name} JPEG of {len(data) / 1000:.0f} kB (quality 90)" for name, data in photos.items()),
        "views": {"source": source, "train": counts[0], "test": counts[1], "test_total": len(views.test)},
        "model": model_report,
        "int8_gate": int8_gate,
        **conditions.setup(),
    }
    markdown = report(facts, setup, results, accuracy_rows, piece_rows, matrix)
    raw = {"machine": facts, "setup": setup, "end_to_end": results, "accuracy": accuracy_rows}
    benchkit.write_outputs(markdown, raw | {"pieces": piece_rows, "forward": matrix}, args.output, args.json)


def lift_int8_gate(inference: object, model_report: dict) -> str:
    """Serve the int8 model for the timings even where its accuracy report would have model_fn fall back to fp32
    (``model.INT8_MAX_TOP1_LOSS_POINTS``); say so. Its accuracy is reported beside the timings either way."""
    int8 = model_report.get("int8")
    if not int8 or int8["within_limit"]:
        return "" if not int8 else "within the limit: model_fn serves it as it is"
    inference.INT8_MAX_TOP1_LOSS_POINTS = float("inf")
    return (
        f"beyond the limit ({int8['top1_loss_points']:.2f} points lost): model_fn would serve fp32; the benchmark "
        "lifted the limit to time the int8 model"
    )


def default_precisions(on: torch.device) -> str:
    if on.type == "cuda":
        return "fp32,fp16,bf16"
    return "fp32,bf16,int8" if benchkit.native_bf16() else "fp32,int8"


if __name__ == "__main__":
    main(get_args_parser().parse_args())
