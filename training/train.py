"""Train the dog-breed classifier: one script for SageMaker (one or many instances), EC2 and a laptop.

    python train.py --data-dir dogImages --epochs 10                       # one process
    torchrun --nproc-per-node 4 train.py --data-dir dogImages              # data parallel (DDP)

On SageMaker the training toolkit runs it (under torchrun on every host when the hyperparameter
``sagemaker_torch_distributed_enabled`` is true). ``python train.py --help`` lists the options; the
hyperparameters' values and defaults come from hyperparameters.py. What it reads and writes (outputs,
checkpoint, metric lines, exit status) and how head-only fine-tuning caches features: docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
import torch.distributed as dist
from data import SPLITS, DataSetError, ShardSampler, check_layout, load_split
from feature_store import FeatureStore, FeatureStoreError, KeyInputs, SplitFeatures, image_listing, open_store
from hyperparameters import HYPERPARAMETERS, Hyperparameter, TrueFalse, TrueFalseAuto
from quantize import write_int8_model
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from metrics import metric_line
from model import (
    ModelConfig,
    PretrainedWeightsError,
    backbone_and_head,
    build_model,
    decode_size,
    eval_transform,
    gpu_autocast_dtype,
    load_pretrained_backbone,
    save_artifact,
    save_serving_code,
    set_trainable,
    train_transform,
)

MAX_AUTO_WORKERS = 16
CHECKPOINT_FILE = "checkpoint.pth"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
# --stop-after-epoch ends a run with this status (EX_TEMPFAIL: try again, and it resumes).
EXIT_STOPPED = 75
# A checkpoint resumes only a run with the same values of these arguments.
RUN_DEFINING_ARGS = (
    "backbone",
    "trainable",
    "pretrained",
    "epochs",
    "batch_size",
    "learning_rate",
    "momentum",
    "weight_decay",
    "patience",
    "seed",
    "image_size",
    "resize_size",
    "augment",
    "cache_features",
)
# The --help group of the hyperparameters (hyperparameters.py) that are not in "training".
HYPERPARAMETER_GROUPS = {
    "backbone": "model",
    "trainable": "model",
    "image_size": "model",
    "quantize": "model",
    "amp": "speed",
    "channels_last": "speed",
}

log = logging.getLogger("train")
# Lines every rank writes (its shard, its final weights); `log` writes on rank 0 only.
rank_log = logging.getLogger("train.rank")


class TrainingError(Exception):
    """The run cannot go on; the message (one line) says why and what to do."""


class RunStopped(TrainingError):
    """The run ended after the epoch --stop-after-epoch names, as an interrupted job would."""


# --- options ----------------------------------------------------------------------------------------------------------


def workers_count(text: str) -> int:
    """A number of workers, or -1 for ``auto`` / ``-1``."""
    value = -1 if text.strip().lower() == "auto" else int(text)
    if value < -1:
        raise argparse.ArgumentTypeError(f"expected auto, -1 or a number of workers, got {text!r}")
    return value


def add_hyperparameter(group: argparse._ArgumentGroup, hyperparameter: Hyperparameter) -> None:
    """``--name-with-dashes`` and ``--name_with_underscores`` (as the SageMaker toolkit passes it), with the
    type, default and help of ``hyperparameter``: what it accepts is defined once, in hyperparameters.py."""
    spellings = dict.fromkeys([hyperparameter.flag, f"--{hyperparameter.name}"])
    default = hyperparameter.default
    shown = str(default).lower() if isinstance(default, bool) else default
    description = f"{hyperparameter.help} ({hyperparameter.kind.accepted}; default: {shown})"
    group.add_argument(
        *spellings,
        dest=hyperparameter.name,
        type=hyperparameter.kind.parse,
        default=default,
        help=description.replace("%", "%%"),
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train the dog-breed classifier (one process, or one per GPU under torchrun).",
        allow_abbrev=False,
    )
    groups = {name: parser.add_argument_group(name) for name in ("data and outputs", "model", "training", "speed")}
    add_path_arguments(groups["data and outputs"])
    for hyperparameter in HYPERPARAMETERS.values():
        add_hyperparameter(groups[HYPERPARAMETER_GROUPS.get(hyperparameter.name, "training")], hyperparameter)

    network = groups["model"]
    network.add_argument(
        "--pretrained",
        type=str,
        default="auto",
        help="ImageNet weights for the backbone: auto (the 'pretrained' channel $SM_CHANNEL_PRETRAINED if "
        "present, else download), download, none (random initialization), or a .pth file or a folder "
        "holding one (default: auto)",
    )
    network.add_argument(
        "--resize-size",
        "--resize_size",
        type=int,
        default=None,
        help="short side before the evaluation center crop (default: 8/7 of the image size, so 256 for 224)",
    )
    training = groups["training"]
    training.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    training.add_argument(
        "--weight-decay", "--weight_decay", type=float, default=1e-4, help="SGD weight decay (default: %(default)s)"
    )
    speed = groups["speed"]
    speed.add_argument(
        "--cache-features",
        "--cache_features",
        type=TrueFalseAuto().parse,
        default="auto",
        help="with --trainable head, compute the frozen backbone's features of each training and validation image "
        "once (in the first epoch) and train the head on them, so that later epochs cost a fraction; the training "
        "images are then not augmented. true, false, or auto: true for --trainable head unless --augment true "
        "(default: auto)",
    )
    speed.add_argument(
        "--feature-store",
        "--feature_store",
        type=str,
        default="none",
        help="where runs that cache features share them (tuning trials: one extraction for all): s3://bucket/prefix, "
        "file://DIR or a folder. A run that caches features reads them from there when a run of the same images, "
        "backbone weights, image size and feature code stored them, else computes them (logged) and, in one "
        "process, stores them; none: no sharing (default: none)",
    )
    speed.add_argument(
        "--extract-features",
        "--extract_features",
        type=TrueFalse().parse,
        default=False,
        help="only store the train and valid features in --feature-store (nothing to do when they are there) and "
        "exit without training: the pipeline's step before head-only tuning; needs --trainable head "
        "(default: false)",
    )
    speed.add_argument(
        "--workers",
        type=workers_count,
        default="auto",
        help="DataLoader worker processes per training process; auto or -1: one less than this process's "
        f"share of the CPUs, at most {MAX_AUTO_WORKERS}; pinned memory is used with CUDA (default: auto)",
    )
    parser.add_argument_group("testing").add_argument(
        "--stop-after-epoch",
        "--stop_after_epoch",
        type=int,
        default=0,
        help="end the run after this epoch as an interrupted job would: checkpoint written, no artifact, "
        f"exit status {EXIT_STOPPED}; running again resumes; for tests of resumption (default: 0, off)",
    )
    return parser


def add_path_arguments(paths: argparse._ArgumentGroup) -> None:
    """Where the data and the outputs are: SageMaker's folders by default (``SM_*`` variables)."""
    env = os.environ
    paths.add_argument(
        "--data-dir",
        "--data_dir",
        type=str,
        default=env.get("SM_CHANNEL_TRAINING"),
        help="folder holding train/, valid/ and test/ (default: $SM_CHANNEL_TRAINING)",
    )
    paths.add_argument(
        "--train-dir",
        "--train_dir",
        type=str,
        default=env.get("SM_CHANNEL_TRAIN"),
        help="the train split, instead of <data-dir>/train (default: $SM_CHANNEL_TRAIN)",
    )
    paths.add_argument(
        "--valid-dir",
        "--valid_dir",
        type=str,
        default=env.get("SM_CHANNEL_VALID", env.get("SM_CHANNEL_VALIDATION")),
        help="the valid split, instead of <data-dir>/valid (default: $SM_CHANNEL_VALID, else $SM_CHANNEL_VALIDATION)",
    )
    paths.add_argument(
        "--test-dir",
        "--test_dir",
        type=str,
        default=env.get("SM_CHANNEL_TEST"),
        help="the test split, instead of <data-dir>/test (default: $SM_CHANNEL_TEST)",
    )
    paths.add_argument(
        "--model-dir",
        "--model_dir",
        type=str,
        default=env.get("SM_MODEL_DIR", "model"),
        help="where the model artifact is written (default: $SM_MODEL_DIR, else ./model)",
    )
    paths.add_argument(
        "--output-dir",
        "--output_dir",
        type=str,
        default=env.get("SM_OUTPUT_DATA_DIR", "output"),
        help=f"where {METRICS_FILE} and {CURVES_FILE} are written (default: $SM_OUTPUT_DATA_DIR, else ./output)",
    )
    paths.add_argument(
        "--checkpoint-dir",
        "--checkpoint_dir",
        type=str,
        default=None,
        help=f"where {CHECKPOINT_FILE} is kept and resumed from (default: on SageMaker the checkpoints folder "
        "beside $SM_MODEL_DIR, i.e. /opt/ml/checkpoints; else <output-dir>/checkpoints)",
    )


# --- processes, device, data ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def augmentation_and_caching(args: argparse.Namespace) -> tuple[bool, bool]:
    """Whether the training images are augmented and whether the backbone's features are cached.

    Raises ``TrainingError`` for ``--cache-features true`` with a trainable backbone (its features change
    every step) or with ``--augment true`` (cached features are of un-augmented images).
    """
    if args.cache_features == "true" and args.trainable != "head":
        raise TrainingError(
            f"--cache-features true needs --trainable head (now {args.trainable}): only a frozen backbone's "
            "features stay the same from epoch to epoch; use --cache-features auto or false"
        )
    if args.cache_features == "true" and args.augment == "true":
        raise TrainingError(
            "--cache-features true and --augment true contradict each other: cached features are of "
            "un-augmented images; give one of them as false or auto"
        )
    cache = args.cache_features == "true" or (
        args.cache_features == "auto" and args.trainable == "head" and args.augment != "true"
    )
    augment = args.augment == "true" or (args.augment == "auto" and not cache)
    return augment, cache


def init_distributed() -> tuple[Processes, torch.device]:
    """Join the process group when torchrun started this process (RANK, WORLD_SIZE, LOCAL_RANK set)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Processes(), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    processes = Processes(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return processes, device


def setup_logging(processes: Processes) -> None:
    prefix = f"[rank {processes.rank}] " if processes.world_size > 1 else ""
    logging.basicConfig(
        level=logging.INFO if processes.is_main else logging.WARNING,
        format=prefix + "%(message)s",
        stream=sys.stdout,
        force=True,
    )
    rank_log.setLevel(logging.INFO)


@dataclass(frozen=True)
class Runtime:
    """Where and how batches run: device, memory format, autocast dtype (None: full precision)."""

    device: torch.device
    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None

    def to_device(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            images.to(self.device, non_blocking=True, memory_format=self.memory_format),
            targets.to(self.device, non_blocking=True),
        )

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --amp on ``device``; None runs in full precision."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        if mode == "fp16":
            raise TrainingError("--amp fp16 needs a CUDA GPU; on CPU use --amp bf16 or off")
        return torch.bfloat16
    try:
        return gpu_autocast_dtype(mode, device)
    except ValueError as err:
        raise TrainingError(f"--amp {err}; use --amp fp16") from None


def worker_count(requested: int, processes: Processes) -> int:
    """--workers, or for auto one less than this process's share of the CPUs (at most MAX_AUTO_WORKERS)."""
    if requested >= 0:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_AUTO_WORKERS, max(0, cpus // processes.local_world_size - 1))


def split_roots(args: argparse.Namespace) -> dict[str, Path]:
    given = {"train": args.train_dir, "valid": args.valid_dir, "test": args.test_dir}
    missing = [split for split, folder in given.items() if folder is None]
    if missing and args.data_dir is None:
        raise DataSetError(
            f"no folder for the {', '.join(missing)} split(s): give --data-dir (holding train/, valid/ and test/) "
            "or --train-dir, --valid-dir and --test-dir, or on SageMaker a 'training' channel"
        )
    return {split: Path(folder) if folder else Path(args.data_dir) / split for split, folder in given.items()}


def checkpoint_dir(args: argparse.Namespace) -> Path:
    """--checkpoint-dir, else SageMaker's checkpoint folder (beside the model folder), else <output-dir>/checkpoints."""
    if args.checkpoint_dir:
        return Path(args.checkpoint_dir)
    if "SM_MODEL_DIR" in os.environ:
        sagemaker_dir = Path(os.environ["SM_MODEL_DIR"]).parent / "checkpoints"  # /opt/ml/checkpoints
        with contextlib.suppress(OSError):
            sagemaker_dir.mkdir(parents=True, exist_ok=True)
            return sagemaker_dir
    return Path(args.output_dir) / "checkpoints"


def pretrained_source(value: str) -> str | None:
    """Where load_pretrained_backbone gets the weights from; None for random initialization."""
    if value == "none":
        return None
    if value == "auto":
        return os.environ.get("SM_CHANNEL_PRETRAINED", "download")
    return value


def make_samplers(
    splits: dict[str, Sized], processes: Processes, seed: int, shuffle_train: bool = True
) -> dict[str, Sampler]:
    """This rank's shard of each split: for train, shuffled every epoch (the same order on every rank, so the
    shards are disjoint; the last ones padded to equal length) or, without ``shuffle_train``, the same shard
    every epoch (for FeatureEpochs, which shuffles within it); for valid and test every sample exactly once."""
    return {
        "train": DistributedSampler(
            splits["train"], num_replicas=processes.world_size, rank=processes.rank, shuffle=shuffle_train, seed=seed
        ),
        "valid": ShardSampler(len(splits["valid"]), processes.rank, processes.world_size),
        "test": ShardSampler(len(splits["test"]), processes.rank, processes.world_size),
    }


@dataclass(frozen=True)
class Data:
    """The checked data set: its classes, the network's input configuration and this rank's loaders."""

    class_names: list[str]
    config: ModelConfig
    loaders: dict[str, DataLoader]


def load_data(
    args: argparse.Namespace, processes: Processes, runtime: Runtime, workers: int, *, augment: bool, cache: bool
) -> Data:
    """The splits, checked before anything is spent on them, and this rank's loader of each.

    With ``cache`` (FeatureEpochs), the train shard is the same every epoch and is read once, whole.
    """
    roots = split_roots(args)
    class_names = check_layout(roots)
    try:
        config = ModelConfig(
            backbone=args.backbone,
            num_classes=len(class_names),
            image_size=args.image_size,
            resize_size=args.resize_size or args.image_size * 8 // 7,
        )
    except ValueError as err:
        raise TrainingError(str(err)) from err
    transforms = {
        "train": train_transform(config) if augment else eval_transform(config),
        "valid": eval_transform(config),
        "test": eval_transform(config),
    }
    # Large JPEGs are decoded at a reduced scale that the transform still reduces twice or more.
    splits = {
        split: load_split(
            split, roots[split], transforms[split], decode_size(config, augment=augment and split == "train")
        )
        for split in SPLITS
    }
    samplers = make_samplers(splits, processes, args.seed, shuffle_train=not cache)
    if len(samplers["train"]) < args.batch_size and not args.extract_features:  # extraction makes no batch to train
        raise TrainingError(
            f"each process gets {len(samplers['train'])} training images, fewer than --batch-size {args.batch_size}"
        )
    loaders = {
        split: DataLoader(
            splits[split],
            batch_size=args.batch_size,
            sampler=samplers[split],
            num_workers=workers,
            pin_memory=runtime.device.type == "cuda",
            persistent_workers=workers > 0 and not cache,  # cached: train and valid are read once
            # Full training batches: a batch of one image fails in BatchNorm. FeatureEpochs needs every image
            # of the shard, and makes full batches itself.
            drop_last=split == "train" and not cache,
        )
        for split in SPLITS
    }
    log.info("%d classes; %s images", len(class_names), ", ".join(f"{s} {len(splits[s])}" for s in SPLITS))
    rank_log.info("this process's shard: %s images", ", ".join(f"{split} {len(samplers[split])}" for split in SPLITS))
    return Data(class_names, config, loaders)


# --- batches ----------------------------------------------------------------------------------------------------------


def add_batch(sums: torch.Tensor, loss: torch.Tensor, output: torch.Tensor, targets: torch.Tensor) -> None:
    """Add a batch's summed loss, correct predictions and sample count to ``sums`` (no device sync)."""
    sums[0] += loss.detach() * targets.numel()
    sums[1] += (output.argmax(dim=1) == targets).sum()
    sums[2] += targets.numel()


def reduce_sums(sums: torch.Tensor) -> tuple[float, float, int]:
    """Mean loss per sample, accuracy and sample count, summed over all ranks."""
    if dist.is_initialized():
        dist.all_reduce(sums)
    loss_sum, correct, count = sums.tolist()
    return loss_sum / count, correct / count, int(count)


def step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    scaler: torch.amp.GradScaler | None = None,
    frozen: nn.Module | None = None,
) -> torch.Tensor:
    """One pass over ``loader``; ``frozen``, a part of the model that does not train, runs in eval mode
    (the backbone with --trainable head: its BatchNorm layers keep their running statistics)."""
    model.train()
    if frozen is not None:
        frozen.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=runtime.device)
    for batch in loader:
        images, targets = runtime.to_device(*batch)
        with runtime.autocast():
            output = model(images)
            loss = criterion(output, targets)
        step(loss, optimizer, scaler)
        add_batch(sums, loss, output, targets)
    return sums


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module, runtime: Runtime) -> torch.Tensor:
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=runtime.device)
    for batch in loader:
        images, targets = runtime.to_device(*batch)
        with runtime.autocast():
            output = model(images)
            loss = criterion(output, targets)
        add_batch(sums, loss, output, targets)
    return sums


# --- the run's state: what the checkpoint holds -----------------------------------------------------------------------


@dataclass(frozen=True)
class Training:
    """The network (unwrapped) and how it learns: the loss, the optimizer, its schedule, the gradient scaler (fp16
    only), and where and how batches run. The checkpoint holds its state and the ``Progress``."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    runtime: Runtime

    def checkpoint(
        self, progress: Progress, args: argparse.Namespace, class_names: list[str], backbone_sha256: str | None
    ) -> dict:
        """The run's state; a head-only run's holds the head, not the frozen backbone (``trained_state``), and the
        backbone's SHA-256, which a resumed run checks against the backbone it loads."""
        return {
            "model": trained_state(self.model, args.trainable),
            "backbone_sha256": backbone_sha256,
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": progress.epoch,
            "args": vars(args),
            "class_names": class_names,
            "history": progress.history,
            "best_epoch": progress.best_epoch,
            "best_model": progress.best_model,
            "finished": progress.finished,
        }

    def resume(self, checkpoint: dict) -> Progress:
        """Load the checkpoint (read with ``map_location="cpu"``) and return the progress it records."""
        load_trained_state(self.model, checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        if self.scaler is not None and checkpoint["scaler"] is not None:
            self.scaler.load_state_dict(checkpoint["scaler"])
        return Progress(
            checkpoint["history"], checkpoint["best_epoch"], checkpoint["best_model"], checkpoint["finished"]
        )


@dataclass
class Progress:
    """The epochs so far: the history of their metrics, the best one and its weights, whether the run is over."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    finished: bool = False

    @property
    def epoch(self) -> int:
        """The last epoch done (0 before the first)."""
        return len(self.history)

    @property
    def stalled(self) -> int:
        """Epochs since the best one."""
        return self.epoch - self.best_epoch

    @property
    def best(self) -> dict:
        return self.history[self.best_epoch - 1]

    def add(self, row: dict, model: nn.Module, args: argparse.Namespace) -> None:
        """Record an epoch's metrics (keeping ``model``'s weights if it is the best so far) and whether to stop."""
        self.history.append(row)
        if self.best_model is None or row["valid_loss"] < self.best["valid_loss"]:
            self.best_epoch, self.best_model = row["epoch"], snapshot(model, args.trainable)
        self.finished = self.epoch == args.epochs or (args.patience > 0 and self.stalled >= args.patience)


# --- epochs: on the images, or on cached features ---------------------------------------------------------------------


class Epochs(Protocol):
    """One epoch of training, and the valid split's evaluation after it; each returns ``add_batch``'s sums.

    ``ImageEpochs`` reads the images every epoch; ``FeatureEpochs`` (--cache-features) trains the head on the
    frozen backbone's features, computed once. ``make_epochs`` chooses.
    """

    def train(self, epoch: int) -> torch.Tensor: ...

    def evaluate(self) -> torch.Tensor: ...


class ImageEpochs:
    """Every epoch reads the images and runs the network; ``frozen``, a part of it that does not train (the
    backbone with --trainable head), runs in eval mode, so its BatchNorm layers keep their running statistics."""

    def __init__(
        self, trained: nn.Module, loaders: dict[str, DataLoader], training: Training, frozen: nn.Module | None
    ) -> None:
        self.trained, self.loaders, self.training, self.frozen = trained, loaders, training, frozen

    def train(self, epoch: int) -> torch.Tensor:
        self.loaders["train"].sampler.set_epoch(epoch)
        training = self.training
        return train_one_epoch(
            self.trained,
            self.loaders["train"],
            training.criterion,
            training.optimizer,
            training.runtime,
            training.scaler,
            self.frozen,
        )

    def evaluate(self) -> torch.Tensor:
        model = self.training.model
        sync_buffers(model)
        return evaluate(model, self.loaders["valid"], self.training.criterion, self.training.runtime)


@dataclass(frozen=True)
class Features:
    """The frozen backbone's features of one split's images (this rank's shard) and their targets, on the device."""

    features: torch.Tensor
    targets: torch.Tensor


@dataclass(frozen=True)
class SharedFeatures:
    """--feature-store: where this run's features are shared, what their key is made of, and whether this run
    stores the features it computes (one process only: under torchrun each rank computes only its shard)."""

    store: FeatureStore
    inputs: KeyInputs
    write: bool

    @property
    def location(self) -> str:
        return f"{self.store.uri}{self.inputs.key}/"


class FeatureEpochs:
    """--cache-features: the head trains on the frozen backbone's features, computed once per image.

    The first call for a split reads both splits' features from the shared store (``shared``) when they are
    there, keeping this rank's shard of each; otherwise it runs the backbone (eval mode) over this rank's shard
    of the split, un-augmented (the train sampler gives the same shard every epoch), and once both splits are
    computed in one process, stores them for other runs. Each training epoch then shuffles the cached
    features with the permutation DistributedSampler would draw (seed + epoch) and makes full batches:
    in one process these are the batches of an uncached run with --augment false.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        trained: nn.Module,
        loaders: dict[str, DataLoader],
        training: Training,
        *,
        batch_size: int,
        seed: int,
        shared: SharedFeatures | None = None,
    ) -> None:
        self.backbone, self.head, self.trained, self.loaders = backbone, head, trained, loaders
        self.training = training
        self.batch_size, self.seed = batch_size, seed
        self.shared, self.looked_up = shared, False
        self.splits: dict[str, Features] = {}

    def features(self, split: str) -> Features:
        if split not in self.splits and self.shared is not None and not self.looked_up:
            self.looked_up = True
            self.splits.update(read_shared(self.shared, self.loaders, self.training.runtime.device))
        if split not in self.splits:
            started = time.perf_counter()
            self.splits[split] = compute_features(self.backbone, self.loaders[split], self.training.runtime)
            rank_log.info(
                "cached the backbone's features of this process's %d %s images in %.1f s",
                len(self.splits[split].targets),
                split,
                time.perf_counter() - started,
            )
            if self.shared is not None and self.shared.write and set(STORED_SPLITS) <= set(self.splits):
                write_shared(self.shared, self.splits)
        return self.splits[split]

    def train(self, epoch: int) -> torch.Tensor:
        cached, training = self.features("train"), self.training
        self.trained.train()
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(len(cached.targets), generator=generator).to(training.runtime.device)
        sums = torch.zeros(3, dtype=torch.float64, device=training.runtime.device)
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):  # full batches only
            batch = order[start : start + self.batch_size]
            targets = cached.targets[batch]
            with training.runtime.autocast():
                output = self.trained(cached.features[batch])
                loss = training.criterion(output, targets)
            step(loss, training.optimizer, training.scaler)
            add_batch(sums, loss, output, targets)
        return sums

    @torch.inference_mode()
    def evaluate(self) -> torch.Tensor:
        cached, runtime = self.features("valid"), self.training.runtime
        self.head.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=runtime.device)
        for start in range(0, len(cached.targets), self.batch_size):
            features = cached.features[start : start + self.batch_size]
            targets = cached.targets[start : start + self.batch_size]
            with runtime.autocast():
                output = self.head(features)
                loss = self.training.criterion(output, targets)
            add_batch(sums, loss, output, targets)
        return sums


@torch.no_grad()
def compute_features(backbone: nn.Module, loader: DataLoader, runtime: Runtime) -> Features:
    """The backbone's features (eval mode, float32) of ``loader``'s images, in its order: the forward passes that
    the feature cache and the shared store exist to do once."""
    backbone.eval()
    features, targets = [], []
    for batch in loader:
        images, labels = runtime.to_device(*batch)
        with runtime.autocast():
            features.append(backbone(images).float())
        targets.append(labels)
    return Features(torch.cat(features), torch.cat(targets))


# --- the shared feature store (feature_store.py): one extraction for every trial ------------------------------------

# What the store holds: the features the head trains and is scored on (the test split is scored on images).
STORED_SPLITS = ("train", "valid")


def shared_features(
    args: argparse.Namespace, store: FeatureStore, data: Data, backbone_sha256: str, runtime: Runtime, *, write: bool
) -> SharedFeatures:
    """The store and the key of this run's features: its images (paths, classes, sizes), backbone weights, input
    configuration, autocast dtype and feature code (feature_store.KeyInputs)."""
    c = data.config
    images = {
        split: image_listing(data.loaders[split].dataset.samples, Path(data.loaders[split].dataset.root))
        for split in STORED_SPLITS
    }
    inputs = KeyInputs(
        images=images,
        backbone=args.backbone,
        backbone_sha256=backbone_sha256,
        config={"image_size": c.image_size, "resize_size": c.resize_size, "mean": list(c.mean), "std": list(c.std)},
        amp=str(runtime.amp_dtype).removeprefix("torch.") if runtime.amp_dtype else "fp32",
    )
    return SharedFeatures(store, inputs, write=write)


def read_shared(shared: SharedFeatures, loaders: dict[str, DataLoader], device: torch.device) -> dict[str, Features]:
    """This rank's shard of each stored split, from the store; none (logged) when they are absent or unreadable."""
    started = time.perf_counter()
    try:
        stored = shared.store.read(shared.inputs.key)
        if stored is not None:
            for split, full in stored.items():
                if len(full.targets) != len(loaders[split].dataset):
                    raise FeatureStoreError(
                        f"{shared.location} holds {len(full.targets)} {split} images, not {len(loaders[split].dataset)}"
                    )
    except FeatureStoreError as err:
        rank_log.warning("cannot use the shared features (%s); computing them in this process", err)
        return {}
    if stored is None:
        rank_log.info("no shared features at %s yet; computing them in this process", shared.location)
        return {}
    found = {}
    for split in STORED_SPLITS:
        shard = torch.tensor(list(loaders[split].sampler), dtype=torch.long)  # this rank's indices, dataset order
        found[split] = Features(stored[split].features[shard].to(device), stored[split].targets[shard].to(device))
    rank_log.info(
        "read the backbone's features of this process's %s from %s in %.1f s",
        " and ".join(f"{len(found[split].targets)} {split} images" for split in STORED_SPLITS),
        shared.location,
        time.perf_counter() - started,
    )
    return found


def write_shared(shared: SharedFeatures, splits: dict[str, Features]) -> None:
    """Store the features one process computed (every image of each split, in dataset order) for other runs; a
    failure is logged, and this run goes on."""
    stored = {
        split: SplitFeatures(splits[split].features.cpu(), splits[split].targets.cpu()) for split in STORED_SPLITS
    }
    try:
        shared.store.write(shared.inputs.key, stored, shared.inputs)
    except FeatureStoreError as err:
        rank_log.warning("cannot store the features for other runs (%s); this run goes on", err)
        return
    log.info("stored the features for other runs at %s", shared.location)


def make_epochs(
    args: argparse.Namespace,
    training: Training,
    loaders: dict[str, DataLoader],
    *,
    cache: bool,
    shared: SharedFeatures | None = None,
) -> Epochs:
    """The epochs of this run. Under torchrun, DDP wraps what trains (the model, or the head alone on cached
    features, read from ``shared`` where they are there) and averages its gradients over the ranks."""
    model, device = training.model, training.runtime.device
    backbone, head = backbone_and_head(model)
    if cache:
        trained = distributed(head, device)
        return FeatureEpochs(
            backbone, head, trained, loaders, training, batch_size=args.batch_size, seed=args.seed, shared=shared
        )
    frozen = backbone if args.trainable == "head" else None  # runs in eval mode: BatchNorm statistics kept
    return ImageEpochs(distributed(model, device), loaders, training, frozen)


def distributed(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when this process is one of several, else itself."""
    if not dist.is_initialized():
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def sync_state(model: nn.Module) -> None:
    """Give every rank rank 0's weights and buffers (what DistributedDataParallel does when it wraps a model)."""
    if dist.is_initialized():
        for value in model.state_dict().values():
            dist.broadcast(value, src=0)


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's BatchNorm statistics: after its last training step each rank has its own."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def snapshot(model: nn.Module, trainable: str) -> dict[str, torch.Tensor]:
    """A copy, on the CPU, of what trains of ``model`` (``trained_state``)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in trained_state(model, trainable).items()}


def trained_state(model: nn.Module, trainable: str) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of the network: with --trainable head only the head (about 1 MB for 133 classes,
    where the whole ResNet-50 is 95 MB, twice over with the best epoch's copy), since the frozen backbone is the
    pretrained one, in eval mode, and never changes; otherwise the whole state dict."""
    state = model.state_dict()
    if trainable != "head":
        return state
    _, head = backbone_and_head(model)
    (name,) = [name for name, module in model.named_children() if module is head]
    return {key: value for key, value in state.items() if key.startswith(f"{name}.")}


def load_trained_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``trained_state``'s dict, whole or the head alone (the rest stays), strictly: an unknown name fails."""
    model.load_state_dict({**model.state_dict(), **state})


def state_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict's names and values: equal on two ranks only if their weights are identical."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --- checkpoint, outputs ----------------------------------------------------------------------------------------------


def load_checkpoint(directory: Path) -> dict | None:
    path = directory / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: pickle, zip and torch each raise their own
        raise TrainingError(f"cannot read the checkpoint {path} ({err}); delete it to start over") from err


def save_checkpoint(checkpoint: dict, directory: Path) -> None:
    """Write to a temporary file, then rename: an interruption leaves the previous checkpoint whole."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{CHECKPOINT_FILE}.partial"
    torch.save(checkpoint, partial)
    os.replace(partial, directory / CHECKPOINT_FILE)


def check_resumable(checkpoint: dict, args: argparse.Namespace, class_names: list[str], directory: Path) -> None:
    """Refuse a checkpoint of another run (other settings or classes) with a message naming the difference."""
    differences = [
        f"{key}={checkpoint['args'].get(key)} (now {getattr(args, key)})"
        for key in RUN_DEFINING_ARGS
        if checkpoint["args"].get(key) != getattr(args, key)
    ]
    if checkpoint["class_names"] != class_names:
        differences.append("the classes of another data set")
    if differences:
        raise TrainingError(
            f"the checkpoint in {directory} belongs to another run: {', '.join(differences)}; "
            "delete it or give another --checkpoint-dir"
        )


def check_same_epoch_on_all_ranks(epoch: int, device: torch.device) -> None:
    """Ranks that resume from different checkpoints would wait for each other forever; stop instead."""
    if not dist.is_initialized():
        return
    extremes = torch.tensor([epoch, -epoch], dtype=torch.float64, device=device)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    latest, earliest = int(extremes[0]), -int(extremes[1])
    if latest != earliest:
        raise TrainingError(
            f"the ranks found checkpoints of different epochs ({earliest} to {latest}): "
            "every host needs the same checkpoint folder contents"
        )


def write_metrics(
    output_dir: Path,
    history: list[dict],
    best_epoch: int,
    epochs: int,
    test_loss: float,
    test_accuracy: float,
    *,
    int8: dict | None = None,
) -> None:
    """metrics.json: the per-epoch history, the best epoch's valid metrics and the test metrics of its weights;
    with --quantize int8, the int8 model's report (quantize.py) under ``int8``."""
    best = history[best_epoch - 1]
    summary = {
        "history": history,
        "best_epoch": best_epoch,
        "stopped_early": len(history) < epochs,
        "valid_loss": best["valid_loss"],
        "valid_accuracy": best["valid_accuracy"],
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
    }
    if int8 is not None:
        summary["int8"] = int8
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2))


def plot_curves(history: list[dict], best_epoch: int, path: Path) -> None:
    """Loss and accuracy of train and valid over the epochs; skipped where matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        log.info("matplotlib is not installed: no %s", path.name)
        return
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split in ("train", "valid"):
            axes.plot(epochs, [row[f"{split}_{metric}"] for row in history], marker="o", label=split)
        axes.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch})")
        axes.set(xlabel="epoch", ylabel=metric, title=metric)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
    figure.savefig(path, dpi=100)


def record_failure(message: str) -> None:
    """SageMaker reports the failure file's first 1024 characters as the job's FailureReason; first failure wins."""
    output_dir = os.environ.get("SM_OUTPUT_DIR") or ("/opt/ml/output" if Path("/opt/ml/output").is_dir() else None)
    if output_dir:
        with contextlib.suppress(OSError), open(Path(output_dir) / "failure", "x") as failure:
            failure.write(message)


# --- the run ----------------------------------------------------------------------------------------------------------


def open_feature_store(args: argparse.Namespace, *, cache: bool) -> FeatureStore | None:
    """--feature-store, opened when this run caches features (else None); --extract-features checked against it."""
    try:
        store = open_store(args.feature_store)
    except FeatureStoreError as err:
        raise TrainingError(str(err)) from None
    if args.extract_features and (store is None or not cache):
        raise TrainingError(
            f"--extract-features needs --feature-store (now {args.feature_store}) and cached features: --trainable "
            f"head (now {args.trainable}), --augment auto or false (now {args.augment}), --cache-features auto or "
            f"true (now {args.cache_features})"
        )
    return store if cache else None


def log_set_up(
    args: argparse.Namespace,
    processes: Processes,
    runtime: Runtime,
    workers: int,
    *,
    augment: bool,
    cache: bool,
    store: FeatureStore | None,
) -> None:
    log.info(
        "host %s of %s (SM_NUM_GPUS %s); %d process(es), device %s, amp %s, channels_last %s, %d workers per process",
        os.environ.get("SM_CURRENT_HOST", "-"),
        os.environ.get("SM_HOSTS", "-"),
        os.environ.get("SM_NUM_GPUS", "-"),
        processes.world_size,
        runtime.device,
        str(runtime.amp_dtype).removeprefix("torch.") if runtime.amp_dtype else "off",
        args.channels_last,
        workers,
    )
    log.info("trainable %s; augmentation %s; cached features %s", args.trainable, augment, cache)
    if store is not None:
        log.info("feature store %s", store.uri)
    elif args.feature_store != "none":
        log.info("feature store %s unused: this run does not cache features", args.feature_store)


def frozen_backbone_sha256(
    model: nn.Module, args: argparse.Namespace, checkpoint: dict | None, directory: Path
) -> str | None:
    """With --trainable head: every rank gets rank 0's backbone (which a DDP-wrapped head would not cover), and its
    SHA-256, which head-only checkpoints record and a resumed run must match; None when the backbone trains."""
    if args.trainable != "head":
        return None
    sync_state(model)
    backbone, _ = backbone_and_head(model)
    digest = state_digest(backbone)
    recorded = (checkpoint or {}).get("backbone_sha256")
    if recorded and recorded != digest:
        raise TrainingError(
            f"the checkpoint in {directory} holds a head trained on another backbone (sha256 {recorded[:12]}, now "
            f"{digest[:12]}: other pretrained weights); delete it or give another --checkpoint-dir"
        )
    return digest


def extract_features(args: argparse.Namespace, data: Data, runtime: Runtime, store: FeatureStore) -> None:
    """--extract-features: the pipeline's step before head-only tuning. Stores the train and valid features under
    their key unless they are there already (a former run of the same images, weights and code), trains nothing."""
    if dist.is_initialized():
        raise TrainingError("--extract-features runs in one process; start it without torchrun")
    model = build_model(data.config)
    source = pretrained_source(args.pretrained)
    if source is not None:
        log.info("pretrained weights: %s", load_pretrained_backbone(model, data.config, source))
    model.to(runtime.device, memory_format=runtime.memory_format)
    backbone, _ = backbone_and_head(model)
    shared = shared_features(args, store, data, state_digest(backbone), runtime, write=True)
    try:
        if store.read(shared.inputs.key) is not None:
            log.info("the features are already stored at %s: nothing to extract", shared.location)
            return
    except FeatureStoreError as err:
        log.warning("the stored features are unusable (%s); extracting them again", err)
    started = time.perf_counter()
    splits = {split: compute_features(backbone, data.loaders[split], runtime) for split in STORED_SPLITS}
    try:
        store.write(
            shared.inputs.key,
            {split: SplitFeatures(f.features.cpu(), f.targets.cpu()) for split, f in splits.items()},
            shared.inputs,
        )
    except FeatureStoreError as err:
        raise TrainingError(f"cannot store the extracted features: {err}") from None
    log.info(
        "extracted the features of %s in %.1f s; stored at %s",
        " and ".join(f"{len(splits[split].targets)} {split} images" for split in STORED_SPLITS),
        time.perf_counter() - started,
        shared.location,
    )


def main(args: argparse.Namespace) -> None:
    augment, cache_features = augmentation_and_caching(args)
    store = open_feature_store(args, cache=cache_features)
    processes, device = init_distributed()
    setup_logging(processes)
    runtime = Runtime(
        device=device,
        memory_format=torch.channels_last if args.channels_last else torch.contiguous_format,
        amp_dtype=autocast_dtype(args.amp, device),
    )
    workers = worker_count(args.workers, processes)
    torch.manual_seed(args.seed + processes.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log_set_up(args, processes, runtime, workers, augment=augment, cache=cache_features, store=store)

    # Data: checked before anything is spent on it.
    data = load_data(args, processes, runtime, workers, augment=augment, cache=cache_features)
    if args.extract_features:
        assert store is not None  # open_feature_store checked it
        extract_features(args, data, runtime, store)
        return

    # Model, optimizer, schedule; resumed from the checkpoint, else started from the pretrained weights (also under
    # a head-only checkpoint, which holds no backbone). DDP copies rank 0's weights to all.
    checkpoints = checkpoint_dir(args)
    checkpoint = load_checkpoint(checkpoints)
    model = build_model(data.config)
    source = pretrained_source(args.pretrained)
    if source is not None and processes.is_main and (checkpoint is None or args.trainable == "head"):
        log.info("pretrained weights: %s", load_pretrained_backbone(model, data.config, source))
    parameters = set_trainable(model, args.trainable)
    model.to(device, memory_format=runtime.memory_format)
    optimizer = torch.optim.SGD(
        parameters, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay
    )
    training = Training(
        model=model,
        criterion=nn.CrossEntropyLoss(),
        optimizer=optimizer,
        lr_scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs),
        scaler=torch.amp.GradScaler(device.type) if runtime.amp_dtype == torch.float16 else None,
        runtime=runtime,
    )
    progress = Progress()
    if checkpoint is not None:
        check_resumable(checkpoint, args, data.class_names, checkpoints)
        progress = training.resume(checkpoint)
        log.info("resuming after epoch %d from %s", checkpoint["epoch"], checkpoints / CHECKPOINT_FILE)
    check_same_epoch_on_all_ranks(progress.epoch, device)
    backbone_sha256 = frozen_backbone_sha256(model, args, checkpoint, checkpoints)

    # Distributed: DDP wraps what trains; each epoch reads the images, or the features cached in the first (read
    # from the shared store where another run stored them).
    shared = None
    if store is not None and backbone_sha256 is not None:
        shared = shared_features(args, store, data, backbone_sha256, runtime, write=processes.world_size == 1)
    epochs = make_epochs(args, training, data.loaders, cache=cache_features, shared=shared)

    while not progress.finished:
        seen = train_epoch(epochs, training, progress, args)
        if processes.is_main:
            save_checkpoint(training.checkpoint(progress, args, data.class_names, backbone_sha256), checkpoints)
            print(metric_line(**progress.history[-1]), flush=True)
        log_epoch(progress, seen, args)
        if progress.epoch == args.stop_after_epoch and not progress.finished:
            if dist.is_initialized():
                dist.barrier()  # rank 0 has written the checkpoint before any rank exits
            raise RunStopped(
                f"stopped after epoch {progress.epoch} as --stop-after-epoch asked; running again resumes it"
            )

    finish(args, training, progress, data, processes)


class Seen(NamedTuple):
    """What an epoch's log line says besides its metrics (images summed over the ranks)."""

    train_images: int
    valid_images: int
    learning_rate: float


def train_epoch(epochs: Epochs, training: Training, progress: Progress, args: argparse.Namespace) -> Seen:
    """Train one epoch and evaluate it on the valid split; ``progress`` gets its metrics."""
    epoch = progress.epoch + 1
    learning_rate = training.lr_scheduler.get_last_lr()[0]
    started = time.perf_counter()  # the first epoch's times include computing the cached features
    train_loss, train_accuracy, train_images = reduce_sums(epochs.train(epoch))
    train_seconds = time.perf_counter() - started
    if not math.isfinite(train_loss):
        raise TrainingError(
            f"training diverged in epoch {epoch}: the train loss is {train_loss}; "
            f"lower --learning-rate (now {args.learning_rate})"
        )
    valid_loss, valid_accuracy, valid_images = reduce_sums(epochs.evaluate())
    training.lr_scheduler.step()
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "valid_loss": valid_loss,
        "valid_accuracy": valid_accuracy,
        "epoch_seconds": time.perf_counter() - started,
        "images_per_second": train_images / train_seconds,
    }
    progress.add(row, training.model, args)
    return Seen(train_images, valid_images, learning_rate)


def log_epoch(progress: Progress, seen: Seen, args: argparse.Namespace) -> None:
    log.info(
        "epoch %d/%d: %d train and %d valid images, learning rate %.4g; best epoch %d",
        progress.epoch,
        args.epochs,
        seen.train_images,
        seen.valid_images,
        seen.learning_rate,
        progress.best_epoch,
    )
    if progress.finished and progress.epoch < args.epochs:
        log.info(
            "stopping early: no lower valid loss in the %d epochs since epoch %d", progress.stalled, progress.best_epoch
        )


def finish(args: argparse.Namespace, training: Training, progress: Progress, data: Data, processes: Processes) -> None:
    """The best epoch's weights: its valid loss once more (the job's tuning objective), the test split's metrics,
    the model artifact, metrics.json and the curves (rank 0)."""
    model = training.model
    load_trained_state(model, progress.best_model)
    test_sums = evaluate(model, data.loaders["test"], training.criterion, training.runtime)
    test_loss, test_accuracy, test_images = reduce_sums(test_sums)
    rank_log.info("final weights sha256 %s", state_digest(model))
    if not processes.is_main:
        return
    best = progress.best
    log.info("best epoch %d of %d; %d test images", progress.best_epoch, progress.epoch, test_images)
    print(metric_line(valid_loss=best["valid_loss"], valid_accuracy=best["valid_accuracy"]), flush=True)
    print(metric_line(test_loss=test_loss, test_accuracy=test_accuracy), flush=True)
    save_artifact(Path(args.model_dir), model, data.config, data.class_names)
    save_serving_code(Path(args.model_dir))
    log.info("model artifact written to %s", args.model_dir)
    int8 = None
    if args.quantize == "int8":  # on rank 0 alone, over the whole valid and test splits
        loaders = data.loaders
        int8 = write_int8_model(model, Path(args.model_dir), loaders["valid"], loaders["test"], seed=args.seed)
    write_metrics(
        Path(args.output_dir), progress.history, progress.best_epoch, args.epochs, test_loss, test_accuracy, int8=int8
    )
    plot_curves(progress.history, progress.best_epoch, Path(args.output_dir) / CURVES_FILE)
    log.info("metrics and curves written to %s", args.output_dir)


def run(args: argparse.Namespace) -> int:
    """``main`` with an exit status: an expected failure becomes one line on stderr and in the failure file."""
    try:
        main(args)
        return 0
    except RunStopped as stop:
        message, status = str(stop), EXIT_STOPPED
    except (DataSetError, PretrainedWeightsError, TrainingError) as err:
        message, status = str(err), 1
    except torch.cuda.OutOfMemoryError as err:
        reason = str(err).splitlines()[0]
        message, status = f"out of GPU memory with --batch-size {args.batch_size}; lower it ({reason})", 1
    except Exception as err:
        record_failure(f"{type(err).__name__}: {err}")
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    print(f"train.py: error: {message}", file=sys.stderr, flush=True)
    record_failure(message)
    return status


if __name__ == "__main__":
    sys.exit(run(get_args_parser().parse_args()))
