"""Training benchmark: train.py's loop against the course-style loop, and what a head-only tuning job costs.

    .venv/bin/python benchmarks/bench_training.py --quick     # about 3 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_training.py             # docs/benchmarks.md: about 8 minutes

The data set is generated (``--data-dir`` takes a real one in the dogImages layout instead): photo-like
JPEGs of 500x375 pixels, every ``--large-every``-th one 1600x1200, in ``--classes`` class folders. The
network is trained from random weights (``--pretrained none``); the labels carry no signal, so the
figures are speeds, not accuracies. Every run is a process of its own, as a training job is:

- the naive loop, written as the course code trained (this script with ``--naive-loop-json``):
  torchvision's ImageFolder with its default loader (the whole photo decoded), no DataLoader workers, no
  pinned memory, fp32, the default memory format, the loss of every batch read, and the whole network's
  ``state_dict`` saved after every epoch; the same transforms, optimizer and batch size;
- train.py as a job runs it, with its defaults; in the full run also with one of them switched off at a time.

The loop runs alternate, one run of each per round; their per-epoch figure includes the checkpoint write
(for train.py, the time between its epochs' metric lines: training, evaluation, checkpoint). Medians over
the epochs after the first; speed-ups are ratios of those medians.

A tuning job: ``--trials`` trials (default 6) of ``--trial-epochs`` epochs (default 3), head-only, each
with its own learning rate, done three ways, the trials alternating: the naive loop (every epoch computes
the frozen backbone on augmented images), train.py with its per-process feature cache (each trial extracts
the features once), and train.py with a shared feature store (``--feature-store``: one extraction job,
``--extract-features true``, then every trial reads the features). The cost is in trial-seconds, two ways:
the trial processes' wall times added up (start-up, test evaluation and outputs included), and their epochs
alone (checkpoints included); the shared way's extraction job is added to both.

Each block of runs waits for idle CPUs first and is measured again when other processes took more than
--max-other-load of the CPU time during it (benchkit.alternate). The device is a CUDA GPU if there is one.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
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
TRIAL_LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)  # one per trial, in turn


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="a smaller data set, fewer runs and trials")
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
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the loop runs (default: 1 quick, 2 full)")
    parser.add_argument("--trials", type=int, default=None, help="trials of the tuning job (default: 2 quick, 6 full)")
    parser.add_argument("--trial-epochs", type=int, default=3, help="epochs of a tuning trial (default: %(default)s)")
    parser.add_argument(
        "--parts",
        default="loops,tuning,loading",
        help="what to measure, comma-separated: loops, tuning, loading (default: %(default)s)",
    )
    parser.add_argument("--naive-loop-json", default=None, help=argparse.SUPPRESS)  # one naive run, in this process
    parser.add_argument("--learning-rate", type=float, default=0.01, help=argparse.SUPPRESS)
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


# --- the naive loop: the course code's way, in a process of its own ------------------------------------------------


def naive_run(data_dir: Path, args: argparse.Namespace, work: Path, on: torch.device) -> list[dict]:
    """The course code's loop; per epoch the seconds spent waiting for batches, computing and checkpointing."""
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
    optimizer = torch.optim.SGD(parameters, lr=args.learning_rate, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    rows = []
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        waiting, computing, images = naive_train_pass(model, train_loader, criterion, optimizer, on)
        train_seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            for inputs, targets in valid_loader:
                criterion(model(inputs.to(on)), targets.to(on)).item()
        saving = time.perf_counter()
        torch.save(model.state_dict(), work / "model_transfer.pt")  # the course code saved the whole network
        ended = time.perf_counter()
        rows.append(
            {
                "epoch": epoch,
                "images_per_second": images / train_seconds,
                "epoch_seconds": ended - started,
                "loading_seconds": waiting,
                "compute_seconds": computing,
                "checkpoint_seconds": ended - saving,
            }
        )
    return rows


def naive_train_pass(
    model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer, on: torch.device
) -> tuple[float, float, int]:
    """One training pass: seconds waiting for batches, seconds computing, images."""
    waiting = computing = 0.0
    images = 0
    model.train()
    batches = iter(loader)
    while True:
        tick = time.perf_counter()
        try:
            inputs, targets = next(batches)
        except StopIteration:
            return waiting, computing, images
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


def naive_process(data_dir: Path, work: Path, args: argparse.Namespace, trainable: str, epochs: int, lr: float) -> dict:
    """The naive loop in a process of its own (this script, --naive-loop-json); its epochs and wall time."""
    work.mkdir(parents=True, exist_ok=True)
    output = work / "naive.json"
    command = [
        sys.executable, __file__, "--naive-loop-json", str(output), "--data-dir", str(data_dir),
        "--backbone", args.backbone, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
        "--trainable", trainable, "--epochs", str(epochs), "--learning-rate", str(lr),
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 (this script)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the naive loop failed:\n{result.stdout}\n{result.stderr}")
    return {"epochs": json.loads(output.read_text()), "wall_seconds": wall}


# --- train.py, as a job runs it --------------------------------------------------------------------------------------


def train_py(data_dir: Path, work: Path, args: argparse.Namespace, *options: str) -> dict:
    """One train.py run as a job runs it: its metric lines, each timed on arrival, and the process's wall time.

    An epoch's full time, checkpoint included, is the time between two epochs' metric lines (train.py prints
    one after writing the checkpoint); the first epoch's is its ``epoch_seconds`` plus the others' median
    checkpoint time (the time between the lines less ``epoch_seconds``)."""
    from metrics import parse_metrics

    command = [
        sys.executable, str(TRAIN_PY), "--data-dir", str(data_dir), "--backbone", args.backbone,
        "--pretrained", "none", "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
        "--patience", "0", "--model-dir", str(work / "model"), "--output-dir", str(work / "output"),
        "--checkpoint-dir", str(work / "checkpoints"), *options,
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 (our own script)
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines, arrivals = [], []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch=") and "epoch_seconds=" in line:
            arrivals.append(time.perf_counter())
    wall = time.perf_counter() - started
    output = "".join(lines)
    if process.wait() != 0:
        raise RuntimeError(f"train.py {' '.join(options)} failed:\n{output}")
    metrics = parse_metrics(output)
    rows = [
        {"epoch": int(epoch), "images_per_second": ips, "epoch_seconds": seconds}
        for epoch, ips, seconds in zip(
            metrics["epoch"], metrics["images_per_second"], metrics["epoch_seconds"], strict=True
        )
    ]
    add_full_epochs(rows, arrivals)
    setup = next((line.strip() for line in lines if line.startswith("host ")), "")
    extracted = re.search(r"extracted the features of .* in ([0-9.]+) s;", output)
    log(f"train.py {' '.join(options)}: {wall:.1f} s")
    return {
        "options": " ".join(options),
        "epochs": rows,
        "wall_seconds": wall,
        "setup": setup,
        "extraction_seconds": float(extracted.group(1)) if extracted else 0.0,
    }


def add_full_epochs(rows: list[dict], arrivals: list[float]) -> None:
    """Each row's ``full_seconds`` (checkpoint included) and ``checkpoint_seconds``, from the lines' arrivals."""
    for index in range(1, len(rows)):
        rows[index]["full_seconds"] = arrivals[index] - arrivals[index - 1]
        rows[index]["checkpoint_seconds"] = max(0.0, rows[index]["full_seconds"] - rows[index]["epoch_seconds"])
    later = [row["checkpoint_seconds"] for row in rows[1:]]
    if rows:
        rows[0]["checkpoint_seconds"] = median(later) if later else float("nan")
        rows[0]["full_seconds"] = rows[0]["epoch_seconds"] + (rows[0]["checkpoint_seconds"] if later else 0.0)


def steady(rows: list[dict], key: str) -> float:
    """The median of ``key`` over the epochs after the first (the only epoch where there is one)."""
    return median(row[key] for row in (rows[1:] or rows))


# --- the comparisons -------------------------------------------------------------------------------------------------


def loop_comparison(data_dir: Path, work: Path, args: argparse.Namespace, on: torch.device, rounds: int) -> dict:
    """The naive loop and train.py (and its variants), one run of each per round."""
    epochs = str(args.epochs)
    options = {"train.py, defaults": ()}
    if not args.quick:
        options["train.py --workers 0"] = ("--workers", "0")
        options["train.py --channels-last false"] = ("--channels-last", "false")
        amp = ("--amp", "off") if on.type == "cuda" else ("--amp", "bf16")
        options[f"train.py --amp {amp[1]}"] = amp
    counter = iter(range(1_000_000))
    sides: dict[str, Callable[[], dict]] = {
        "naive loop": lambda: naive_process(
            data_dir, work / f"naive{next(counter)}", args, args.trainable, args.epochs, 0.01
        )
    }
    for name, extra in options.items():
        sides[name] = lambda extra=extra: train_py(
            data_dir, work / f"loop{next(counter)}", args, "--trainable", args.trainable, "--epochs", epochs, *extra
        )
    log(f"loops: {rounds} rounds of {len(sides)} runs")
    comparison = benchkit.alternate(sides, rounds, warmup=0, policy=args.policy, block_rounds=1)
    return {"runs": comparison.results, "note": comparison.load_note(), "under_load": comparison.under_load}


def tuning_comparison(data_dir: Path, work: Path, args: argparse.Namespace, trials: int) -> dict:
    """A tuning job of ``trials`` head-only trials three ways, the trials alternating; the extraction job first."""
    epochs = str(args.trial_epochs)
    store = work / "feature-store"
    counter = iter(range(1_000_000))
    learning_rates = iter(TRIAL_LEARNING_RATES * (trials // len(TRIAL_LEARNING_RATES) + 1))
    current = {"lr": 0.01}

    def next_trial() -> str:
        current["lr"] = next(learning_rates)
        return str(current["lr"])

    def head(*options: str) -> dict:
        folder = work / f"trial{next(counter)}"
        return train_py(data_dir, folder, args, "--trainable", "head", "--epochs", epochs, *options)

    log("tuning: the shared extraction job")
    extraction = benchkit.alternate(
        {"extraction": lambda: head("--feature-store", str(store), "--extract-features", "true")},
        1,
        warmup=0,
        policy=args.policy,
        block_rounds=1,
    )
    sides = {
        "naive loop": lambda: naive_process(
            data_dir, work / f"trial{next(counter)}", args, "head", args.trial_epochs, float(next_trial())
        ),
        "train.py, per-trial cache": lambda: head("--learning-rate", str(current["lr"])),
        "train.py, shared store": lambda: head("--learning-rate", str(current["lr"]), "--feature-store", str(store)),
    }
    log(f"tuning: {trials} trials of {args.trial_epochs} epochs, three ways")
    comparison = benchkit.alternate(sides, trials, warmup=0, policy=args.policy, block_rounds=1)
    return {
        "extraction": extraction.results["extraction"][0],
        "trials": comparison.results,
        "note": f"extraction: {extraction.load_note()}; trials: {comparison.load_note()}",
        "under_load": extraction.under_load or comparison.under_load,
    }


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
            variants[f"{name}|whole photo"] = functools.partial(apply, transform, whole)
            variants[f"{name}|reduced, short side >= {draft}"] = functools.partial(apply, transform, reduced)
        comparison = benchkit.alternate(variants, count, policy=args.policy)
        for key in variants:
            transform_name, decode = key.split("|")
            photo = f"{size[0]}x{size[1]}"
            rows.append({"photo": photo, "transform": transform_name, "decode": decode, "seconds": comparison.p50(key)})
    return rows


def apply(transform: Callable, load: Callable) -> object:
    return transform(load())


# --- the report ------------------------------------------------------------------------------------------------------


def loop_rows(loops: dict) -> list[tuple]:
    """Per run: epochs after the first of every round, their p50s; speed-ups are ratios of p50s."""

    def epochs(name: str) -> list[dict]:
        return [row for run in loops["runs"][name] for row in (run["epochs"][1:] or run["epochs"])]

    naive = epochs("naive loop")
    naive_full = benchkit.percentile([row["epoch_seconds"] for row in naive], 50)
    naive_ips = benchkit.percentile([row["images_per_second"] for row in naive], 50)
    rows = []
    for name, runs in loops["runs"].items():
        kept = epochs(name)
        full = benchkit.percentile([row.get("full_seconds", row["epoch_seconds"]) for row in kept], 50)
        ips = benchkit.percentile([row["images_per_second"] for row in kept], 50)
        checkpoint = benchkit.percentile([row["checkpoint_seconds"] for row in kept], 50)
        walls = [run["wall_seconds"] for run in runs]
        rows.append(
            (
                name,
                f"{len(runs)} x {len(runs[0]['epochs'])}",
                f"{ips:.1f}",
                f"{full:.2f}",
                f"{checkpoint:.3f}",
                f"{ips / naive_ips:.2f}x",
                f"{benchkit.speedup(naive_full, full):.2f}x",
                f"{median(walls):.1f}",
            )
        )
    return rows


def job_costs(tuning: dict) -> dict[str, dict[str, float]]:
    """Per way, the job's trial-seconds: by wall time (the processes, start-up and outputs included) and by
    training time (the epochs, checkpoints included, and the extraction), the shared way's extraction job added."""
    extraction = tuning["extraction"]
    costs = {}
    for name, runs in tuning["trials"].items():
        shared = "shared" in name
        costs[name] = {
            "wall": sum(run["wall_seconds"] for run in runs) + (extraction["wall_seconds"] if shared else 0.0),
            "epochs": sum(full_seconds(run) for run in runs) + (extraction["extraction_seconds"] if shared else 0.0),
        }
    return costs


def full_seconds(run: dict) -> float:
    return sum(row.get("full_seconds", row["epoch_seconds"]) for row in run["epochs"])


def tuning_rows(tuning: dict) -> list[tuple]:
    """Per way: trials, p50 trial seconds and fixed cost, the job's trial-seconds two ways, against the naive job's."""
    costs = job_costs(tuning)
    naive = costs["naive loop"]
    rows = []
    for name, runs in tuning["trials"].items():
        walls = [run["wall_seconds"] for run in runs]
        fixed = [run["wall_seconds"] - full_seconds(run) for run in runs]
        first = [run["epochs"][0].get("full_seconds", run["epochs"][0]["epoch_seconds"]) for run in runs]
        rows.append(
            (
                name,
                len(runs),
                f"{benchkit.percentile(walls, 50):.1f}",
                f"{benchkit.percentile(fixed, 50):.1f}",
                f"{benchkit.percentile(first, 50):.2f}",
                f"{tuning['extraction']['wall_seconds']:.1f}" if "shared" in name else "-",
                f"{costs[name]['wall']:.0f}",
                f"{naive['wall'] / costs[name]['wall']:.2f}x",
                f"{costs[name]['epochs']:.0f}",
                f"{naive['epochs'] / costs[name]['epochs']:.2f}x",
            )
        )
    return rows


TUNING_HEADER = (
    *("way", "trials", "trial p50 s", "outside epochs s (p50)", "epoch 1 s (p50)", "extraction job s"),
    *("job trial-seconds, wall", "vs naive", "job trial-seconds, epochs", "vs naive"),
)


def break_even(tuning: dict, images: int, target: float) -> str:
    """Where the shared way's wall-time advantage reaches ``target``: a linear model of each job's trial-seconds,
    fixed cost per process plus seconds per image, fitted to this run (the naive loop's epochs and the extraction
    grow with the images; train.py's trials on stored features barely do)."""
    naive, shared = tuning["trials"]["naive loop"], tuning["trials"]["train.py, shared store"]
    extraction = tuning["extraction"]
    epochs = len(naive[0]["epochs"])
    per_image = median(full_seconds(run) for run in naive) / (epochs * images)  # naive: one epoch's seconds per image
    naive_fixed = median(run["wall_seconds"] - full_seconds(run) for run in naive)
    trial = median(run["wall_seconds"] for run in shared)  # nearly all fixed cost
    extract_per_image = extraction["extraction_seconds"] / images
    extract_fixed = extraction["wall_seconds"] - extraction["extraction_seconds"]
    trials = len(naive)
    # n images: trials * (naive_fixed + epochs * n * per_image)
    #     >= target * (extract_fixed + n * extract_per_image + trials * trial)
    slope = trials * epochs * per_image - target * extract_per_image
    needed = target * (extract_fixed + trials * trial) - trials * naive_fixed
    where = (
        f"about {needed / slope:,.0f} images per epoch"
        if slope > 0
        else "no data set size (the naive epochs are too cheap)"
    )
    return (
        f"Where the shared way reaches {target:g}x by wall time: its job costs {extract_fixed:.1f} s fixed and "
        f"{extract_per_image * 1000:.1f} ms per image (extraction) plus {trial:.1f} s per trial; the naive job "
        f"{naive_fixed:.1f} s fixed per trial and {per_image * 1000:.1f} ms per image per epoch. On data like this "
        f"({images} images per epoch here) that is {where}, with these {trials} trials of {epochs} epochs."
    )


LOOP_HEADER = (
    *("run", "runs x epochs", "images/s", "s/epoch", "checkpoint s"),
    *("images/s vs naive", "epoch vs naive", "wall s"),
)


def report(facts: dict, setup: dict, loops: dict | None, tuning: dict | None, pieces: list[dict] | None) -> str:
    lines = [
        *benchkit.report_header("### Training: train.py's loop against the naive loop, and a tuning job", facts, setup),
        f"Set-up: {setup['description']}." + (f" train.py reported: `{setup['train_py']}`." if loops else ""),
        "",
    ]
    if loops:
        lines += loop_lines(loops)
    if tuning:
        lines += tuning_lines(setup, tuning)
    if pieces:
        lines += [
            "Data loading per image, p50 ms (decode and transform, one process, the variants alternating):",
            "",
            table(
                ["photo", "transform", "decode", "ms"],
                [(row["photo"], row["transform"], row["decode"], benchkit.ms(row["seconds"])) for row in pieces],
            ),
        ]
    return "\n".join(lines).rstrip()


def loop_lines(loops: dict) -> list[str]:
    split = [
        (row["epoch"], *(f"{row[key]:.2f}" for key in ("loading_seconds", "compute_seconds", "checkpoint_seconds")))
        for row in loops["runs"]["naive loop"][0]["epochs"]
    ]
    return [
        f"The loop, runs alternating ({loops['note']}). Per epoch: training, evaluation and the checkpoint "
        "write; images/s: training images over the training pass; p50s over the epochs after the first of every "
        "run; speed-ups are ratios of p50s; wall: the whole process, start-up and outputs included (median):",
        "",
        table(LOOP_HEADER, loop_rows(loops)),
        "",
        "The naive loop's first run, seconds waiting for batches (decoding and augmenting in the process), "
        "computing, and writing the checkpoint:",
        "",
        table(["epoch", "waiting for data", "computing", "checkpoint"], split),
        "",
    ]


def tuning_lines(setup: dict, tuning: dict) -> list[str]:
    return [
        f"A tuning job: {setup['trials']} head-only trials (`--trainable head`) of {setup['trial_epochs']} epochs, "
        f"learning rates {', '.join(map(str, TRIAL_LEARNING_RATES[: setup['trials']]))}, the three ways alternating "
        f"trial by trial ({tuning['note']}). Job trial-seconds, wall: the trial processes' wall times added up "
        "(start-up, test evaluation and outputs included), the shared way's extraction job too; epochs: the "
        "trials' epochs (checkpoints included) and the extraction alone; outside epochs: a trial's wall time "
        "less its epochs. vs naive: the naive job's trial-seconds over each way's:",
        "",
        table(TUNING_HEADER, tuning_rows(tuning)),
        "",
        break_even(tuning, setup["images_per_epoch"], 8.0),
        "",
    ]


def images_per_epoch(data_dir: Path) -> int:
    """The training and validation images an epoch reads."""
    return sum(1 for split in ("train", "valid") for path in (data_dir / split).rglob("*") if path.is_file())


def describe(args: argparse.Namespace, per_split: dict[str, int] | None, on: torch.device) -> str:
    if per_split is None:
        text = f"data set {args.data_dir}"
    else:
        images = sum(per_split.values()) * args.classes
        text = (
            f"generated set of {args.classes} classes, {per_split['train']} training, {per_split['valid']} validation "
            f"and {per_split['test']} test photos per class ({images} photos), JPEG quality 90, "
            f"{SMALL_PHOTO[0]}x{SMALL_PHOTO[1]} with every {args.large_every}th {LARGE_PHOTO[0]}x{LARGE_PHOTO[1]}"
        )
    return (
        f"{text}; {args.backbone} from random weights, {args.image_size}-pixel crops, batch {args.batch_size}, "
        f"--trainable {args.trainable} for the loop runs, SGD, on {on}"
    )


def main(args: argparse.Namespace) -> None:
    on = benchkit.device()
    if args.naive_loop_json:  # one naive run, in this process (naive_process starts it)
        rows = naive_run(Path(args.data_dir), args, Path(args.naive_loop_json).parent, on)
        Path(args.naive_loop_json).write_text(json.dumps(rows))
        return
    args.epochs = args.epochs or (2 if args.quick else 3)
    rounds = args.rounds or (1 if args.quick else 2)
    trials = args.trials or (2 if args.quick else 6)
    per_class = args.train_per_class or (16 if args.quick else 48)
    args.policy = benchkit.load_policy(args)
    facts = benchkit.machine()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        per_split = None
        data_dir = Path(args.data_dir) if args.data_dir else work / "data"
        if not args.data_dir:
            per_split = {"train": per_class, "valid": max(2, per_class // 4), "test": max(1, per_class // 8)}
            log(f"generating {args.classes} classes x {per_split} photos")
            make_data_set(data_dir, args.classes, per_split, args.large_every)
        conditions = benchkit.RunConditions(args.wait_idle, args.policy)
        parts = set(args.parts.split(","))
        loops = loop_comparison(data_dir, work, args, on, rounds) if "loops" in parts else None
        tuning = tuning_comparison(data_dir, work, args, trials) if "tuning" in parts else None
        pieces = loading_pieces(work, args, 10 if args.quick else 30) if "loading" in parts else None
        setup = {
            "description": describe(args, per_split, on),
            "train_py": loops["runs"]["train.py, defaults"][0]["setup"] if loops else "",
            "trials": trials,
            "trial_epochs": args.trial_epochs,
            "images_per_epoch": images_per_epoch(data_dir),
            **conditions.setup(),
        }
    markdown = report(facts, setup, loops, tuning, pieces)
    raw = {"machine": facts, "setup": setup, "loops": loops, "tuning": tuning, "loading": pieces}
    benchkit.write_outputs(markdown, raw, args.output, args.json)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
