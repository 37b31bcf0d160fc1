"""Training benchmark: train.py's loop against a naive loop in the same run, and the cost of a head-only trial.

    .venv/bin/python benchmarks/bench_training.py --quick     # about 30 seconds on 2 CPU cores
    .venv/bin/python benchmarks/bench_training.py             # docs/benchmarks.md: about 2.5 minutes

The data set is generated (``--data-dir`` takes a real one in the dogImages layout instead): photo-like
JPEGs of 500x375 pixels, every ``--large-every``-th one 1600x1200, in ``--classes`` class folders. The
network is trained from random weights (``--pretrained none``); the labels carry no signal, so the
figures are speeds, not accuracies.

- the naive loop, in this process, written as the course code trained: torchvision's ImageFolder with
  its default loader (the whole photo decoded), no DataLoader workers, no pinned memory, fp32, the default
  memory format, the same transforms, optimizer and batch size;
- train.py as a job runs it (a subprocess), with its defaults (DataLoader workers: one less than the CPUs,
  pinned memory on CUDA, channels-last, autocast on a GPU, JPEGs decoded at a reduced scale where the
  transform allows it); in the full run also with one of those switched off at a time;
- head-only tuning trials (``--trainable head``): features cached (``--cache-features auto``, the
  default) against computed every epoch with augmentation (``--cache-features false``).

Images per second are training images over the training pass; seconds per epoch include evaluation on
the valid split, as train.py's ``epoch_seconds`` does. Epoch 1 (warm-up) is left out of the medians
where there are later epochs. The device is a CUDA GPU if there is one (train.py chooses the same way).
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import benchkit
import torch
from benchkit import log, median, table
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets

TRAIN_PY = benchkit.TRAINING / "train.py"
SMALL_PHOTO, LARGE_PHOTO = (500, 375), (1600, 1200)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    parser.add_argument(
        "--quick", action="store_true", help="a smaller data set and fewer runs: about 30 seconds on 2 CPU cores"
    )
    parser.add_argument("--data-dir", default=None, help="a data set in the dogImages layout (default: generated)")
    parser.add_argument("--classes", type=int, default=10, help="classes of the generated set (default: %(default)s)")
    parser.add_argument(
        "--train-per-class", type=int, default=None, help="training images per class (default: 16 quick, 48 full)"
    )
    parser.add_argument(
        "--large-every",
        type=int,
        default=4,
        help="every n-th generated photo is 1600x1200, the others 500x375 (default: %(default)s)",
    )
    parser.add_argument("--backbone", default="resnet18", help="train.py --backbone (default: %(default)s)")
    parser.add_argument(
        "--image-size", type=int, default=128, help="train.py --image-size, the crop (default: %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="train.py --batch-size (default: %(default)s)")
    parser.add_argument(
        "--trainable", default="last_block", help="train.py --trainable of the loop runs (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the loop runs (default: 2 quick, 3 full)")
    parser.add_argument(
        "--trial-epochs", type=int, default=None, help="epochs of a head-only trial (default: 3 quick, 5 full)"
    )
    benchkit.add_report_options(parser)
    return parser


def make_data_set(root: Path, classes: int, per_split: dict[str, int], large_every: int) -> Path:
    """Photo-like JPEGs (quality 90) in the dogImages layout; every ``large_every``-th one 1600x1200."""
    index = 0
    for split, count in per_split.items():
        for label in range(classes):
            folder = root / split / f"{label + 1:03d}.Breed_{label + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                size = LARGE_PHOTO if large_every and index % large_every == large_every - 1 else SMALL_PHOTO
                benchkit.photo_like(*size, seed=index).save(folder / f"Breed_{n:05d}.jpg", quality=90)
                index += 1
    return root


def naive_run(data_dir: Path, args: argparse.Namespace, epochs: int, on: torch.device) -> list[dict]:
    """The course code's loop; per epoch the seconds spent waiting for batches and computing."""
    from model import ModelConfig, build_model, eval_transform, set_trainable, train_transform

    classes = sorted(path.name for path in (data_dir / "train").iterdir() if path.is_dir())
    config = ModelConfig(args.backbone, len(classes), image_size=args.image_size, resize_size=args.image_size * 8 // 7)
    train_set = datasets.ImageFolder(data_dir / "train", transform=train_transform(config))
    valid_set = datasets.ImageFolder(data_dir / "valid", transform=eval_transform(config))
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    valid_loader = DataLoader(valid_set, batch_size=args.batch_size)
    torch.manual_seed(0)
    model = build_model(config)
    parameters = set_trainable(model, args.trainable)
    model.to(on)
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    rows = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        waiting = computing = 0.0
        images = 0
        model.train()
        batches = iter(train_loader)
        while True:
            tick = time.perf_counter()
            try:
                inputs, targets = next(batches)
            except StopIteration:
                break
            tock = time.perf_counter()
            inputs, targets = inputs.to(on), targets.to(on)
            loss = criterion(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the course code logged the loss of every batch: a device sync
            benchkit.synchronize(on)
            waiting, computing = waiting + tock - tick, computing + time.perf_counter() - tock
            images += len(targets)
        train_seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            for inputs, targets in valid_loader:
                criterion(model(inputs.to(on)), targets.to(on)).item()
        rows.append(
            {
                "epoch": epoch,
                "images_per_second": images / train_seconds,
                "epoch_seconds": time.perf_counter() - started,
                "loading_seconds": waiting,
                "compute_seconds": computing,
            }
        )
        log(f"naive loop: epoch {epoch}: {images / train_seconds:.1f} images/s")
    return rows


def train_py(data_dir: Path, work: Path, args: argparse.Namespace, *options: str) -> dict:
    """One train.py run as a job runs it; its metric lines and the process's wall time."""
    from metrics import parse_metrics

    command = [
        sys.executable,
        str(TRAIN_PY),
        "--data-dir", str(data_dir),
        "--backbone", args.backbone,
        "--pretrained", "none",
        "--image-size", str(args.image_size),
        "--batch-size", str(args.batch_size),
        "--patience", "0",
        "--model-dir", str(work / "model"),
        "--output-dir", str(work / "output"),
        "--checkpoint-dir", str(work / "checkpoints"),
        *options,
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 (our own script)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(options)} failed:\n{result.stdout}\n{result.stderr}")
    metrics = parse_metrics(result.stdout)
    epochs = len(metrics["epoch"])
    rows = [
        {
            "epoch": epoch,
            "images_per_second": metrics["images_per_second"][epoch - 1],
            "epoch_seconds": metrics["epoch_seconds"][epoch - 1],
        }
        for epoch in range(1, epochs + 1)
    ]
    setup = next((line for line in result.stdout.splitlines() if line.startswith("host ")), "")
    log(f"train.py {' '.join(options)}: {wall:.1f} s")
    return {"options": " ".join(options), "epochs": rows, "wall_seconds": wall, "setup": setup}


def steady(rows: list[dict], key: str) -> float:
    """The median of ``key`` over the epochs after the first (the only epoch where there is one)."""
    return median(row[key] for row in (rows[1:] or rows))


def loading_pieces(folder: Path, args: argparse.Namespace, count: int) -> list[dict]:
    """Per image: decode and transform as the naive loop and as train.py's loader do (median seconds)."""
    import data

    from model import ModelConfig, decode_size, eval_transform, train_transform

    config = ModelConfig(args.backbone, 2, image_size=args.image_size, resize_size=args.image_size * 8 // 7)
    rows = []
    for size in (SMALL_PHOTO, LARGE_PHOTO):
        path = str(folder / f"photo-{size[0]}x{size[1]}.jpg")
        benchkit.photo_like(*size, seed=1).save(path, quality=90)
        variants = {}
        for name, transform in (("train", train_transform(config)), ("eval", eval_transform(config))):
            draft = decode_size(config, augment=name == "train")
            whole = functools.partial(datasets.folder.default_loader, path)
            reduced = functools.partial(data.load_rgb, path, draft)
            variants[(name, "whole photo")] = functools.partial(apply, transform, whole)
            variants[(name, f"reduced, short side >= {draft}")] = functools.partial(apply, transform, reduced)
        times = benchkit.interleaved(variants, count)
        for (transform_name, decode), values in times.items():
            photo = f"{size[0]}x{size[1]}"
            rows.append({"photo": photo, "transform": transform_name, "decode": decode, "seconds": median(values)})
    return rows


def apply(transform: Callable, load: Callable) -> object:
    return transform(load())


def report(facts: dict, setup: dict, loops: dict, trials: dict, pieces: list[dict]) -> str:
    naive = loops["naive loop"]
    naive_ips = steady(naive["epochs"], "images_per_second")
    naive_epoch = steady(naive["epochs"], "epoch_seconds")
    loop_rows = []
    for name, run in loops.items():
        ips, epoch = steady(run["epochs"], "images_per_second"), steady(run["epochs"], "epoch_seconds")
        loop_rows.append(
            (
                name,
                len(run["epochs"]),
                f"{ips:.1f}",
                f"{epoch:.2f}",
                f"{ips / naive_ips:.2f}x",
                f"{naive_epoch / epoch:.2f}x",
                f"{run['wall_seconds']:.1f}" if "wall_seconds" in run else "-",
            )
        )
    reference = trials["uncached, augmented (--cache-features false)"]
    trial_rows = []
    for name, run in trials.items():
        seconds = [row["epoch_seconds"] for row in run["epochs"]]
        later = median(seconds[1:]) if len(seconds) > 1 else float("nan")
        reference_later = median(row["epoch_seconds"] for row in reference["epochs"][1:])
        trial_rows.append(
            (
                name,
                len(seconds),
                f"{seconds[0]:.2f}",
                f"{later:.3f}",
                f"{reference_later / later:.0f}x" if later > 0 else "-",
                f"{sum(seconds):.2f}",
                f"{run['wall_seconds']:.1f}",
                f"{reference['wall_seconds'] / run['wall_seconds']:.2f}x",
            )
        )
    split = [
        (row["epoch"], f"{row['loading_seconds']:.2f}", f"{row['compute_seconds']:.2f}") for row in naive["epochs"]
    ]
    lines = [
        *benchkit.report_header("### Training: train.py's loop against a naive loop", facts, setup),
        f"Set-up: {setup['description']}. train.py reported: `{setup['train_py']}`.",
        "",
        "The loop (images/s: training images over the training pass; epoch: training and evaluation; "
        "medians over the epochs after the first; wall: the whole train.py process, start-up and outputs included):",
        "",
        table(["run", "epochs", "images/s", "s/epoch", "images/s vs naive", "epoch vs naive", "wall s"], loop_rows),
        "",
        "The naive loop's training pass, seconds waiting for batches (decoding and augmenting in this process) "
        "and computing:",
        "",
        table(["epoch", "waiting for data", "computing"], split),
        "",
        f"A head-only tuning trial (`--trainable head`, {setup['trial_epochs']} epochs; epoch seconds include "
        "evaluation; the first epoch of the cached trial computes the features):",
        "",
        table(
            [
                "trial",
                "epochs",
                "epoch 1 s",
                "later epochs s (median)",
                "later epochs vs uncached",
                "sum of epochs s",
                "wall s",
                "wall vs uncached",
            ],
            trial_rows,
        ),
        "",
        "Data loading per image, median ms (decode and transform, one process):",
        "",
        table(
            ["photo", "transform", "decode", "ms"],
            [(row["photo"], row["transform"], row["decode"], benchkit.ms(row["seconds"])) for row in pieces],
        ),
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    epochs = args.epochs or (2 if args.quick else 3)
    trial_epochs = args.trial_epochs or (3 if args.quick else 5)
    per_class = args.train_per_class or (16 if args.quick else 48)
    on = benchkit.device()
    facts = benchkit.machine()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.data_dir:
            data_dir = Path(args.data_dir)
            description = f"data set {data_dir}"
        else:
            per_split = {"train": per_class, "valid": max(2, per_class // 4), "test": max(1, per_class // 8)}
            log(f"generating {args.classes} classes x {per_split} photos")
            data_dir = make_data_set(work / "data", args.classes, per_split, args.large_every)
            description = (
                f"generated set of {args.classes} classes, {per_split['train']} training and {per_split['valid']} "
                f"validation photos per class, JPEG quality 90, {SMALL_PHOTO[0]}x{SMALL_PHOTO[1]} with every "
                f"{args.large_every}th {LARGE_PHOTO[0]}x{LARGE_PHOTO[1]}"
            )
        description += (
            f"; {args.backbone} from random weights, {args.image_size}-pixel crops, batch {args.batch_size}, "
            f"--trainable {args.trainable} for the loop runs, SGD, on {on}"
        )
        idle = benchkit.wait_until_idle(args.wait_idle)
        log(idle)
        other_load = benchkit.OtherLoad()
        load_before = benchkit.load_average()

        loops: dict[str, dict] = {"naive loop": {"epochs": naive_run(data_dir, args, epochs, on)}}
        loop_options = {"train.py, defaults": ()}
        if not args.quick:
            loop_options["train.py --workers 0"] = ("--workers", "0")
            loop_options["train.py --channels-last false"] = ("--channels-last", "false")
            loop_options["train.py --amp off" if on.type == "cuda" else "train.py --amp bf16"] = (
                ("--amp", "off") if on.type == "cuda" else ("--amp", "bf16")
            )
        for index, (name, options) in enumerate(loop_options.items()):
            loops[name] = train_py(
                data_dir, work / f"loop{index}", args, "--trainable", args.trainable, "--epochs", str(epochs), *options
            )
        trial_options = {
            "uncached, augmented (--cache-features false)": ("--cache-features", "false"),
            "cached (--cache-features auto)": (),
        }
        trials = {
            name: train_py(
                data_dir, work / f"trial{index}", args, "--trainable", "head", "--epochs", str(trial_epochs), *options
            )
            for index, (name, options) in enumerate(trial_options.items())
        }
        pieces = loading_pieces(work, args, 10 if args.quick else 30)
        setup = {
            "description": description,
            "train_py": loops["train.py, defaults"]["setup"],
            "trial_epochs": trial_epochs,
            "idle": idle,
            "other_load": other_load.stop(),
            "load_before": load_before,
            "load_after": benchkit.load_average(),
        }
    markdown = report(facts, setup, loops, trials, pieces)
    raw = {"machine": facts, "setup": setup, "loops": loops, "trials": trials, "loading": pieces}
    benchkit.write_outputs(markdown, raw, args.output, args.json)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
