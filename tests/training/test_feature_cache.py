"""Head-only fine-tuning on cached backbone features (--cache-features), and the frozen backbone's eval mode.

The cached path (train.FeatureEpochs) must train the same head as the uncached path (train.ImageEpochs)
without augmentation, keep everything train.py guarantees (metric lines, metrics.json, a full-model
artifact, resumption, DDP), and the backbone of a --trainable head run, cached or not, must keep its
BatchNorm statistics. The runs happen in this process, but for the two processes of the DDP test.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import data
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

import train
from metrics import parse_metrics
from model import MODEL_DIR_ENTRIES, eval_transform, load_artifact
from tests.imagesets import DEFAULT_CLASSES, make_image_set
from tests.training.running import Run, finished_run, train_here, train_under_torchrun

EPOCHS = 3
HEAD = ("--trainable", "head", "--epochs", EPOCHS, "--patience", 0)
HISTORY_METRICS = ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy")
CACHED_LINE = r"cached the backbone's features of this process's (\d+) (train|valid) images in [\d.]+ s"


@pytest.fixture(scope="module")
def runs(image_set: Path, tiny: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The same head-only run two ways: cached (the default), and uncached without augmentation."""
    options = {"cached": (), "uncached": ("--cache-features", "false", "--augment", "false")}
    return {
        name: finished_run(tmp_path_factory.mktemp(name), "--data-dir", image_set, *tiny, *HEAD, *extra)
        for name, extra in options.items()
    }


def history(run: Run) -> list[dict]:
    return run.summary["history"]


# --- the options ----------------------------------------------------------------------------------------------


def namespace(**values: str) -> argparse.Namespace:
    return train.get_args_parser().parse_args([f"--{name.replace('_', '-')}={value}" for name, value in values.items()])


@pytest.mark.parametrize(
    ("trainable", "cache_features", "augment", "expected"),
    [
        ("head", "auto", "auto", (False, True)),  # the default for head-only tuning: cached, not augmented
        ("head", "True", "auto", (False, True)),  # as the SageMaker toolkit passes JSON true
        ("head", "auto", "true", (True, False)),  # augmentation asked for: computed every epoch
        ("head", "auto", "false", (False, True)),
        ("head", "false", "auto", (True, False)),
        ("head", "false", "false", (False, False)),
        ("last_block", "auto", "auto", (True, False)),
        ("all", "auto", "false", (False, False)),
        ("all", "false", "auto", (True, False)),
    ],
)
def test_augmentation_and_caching_follow_the_options(
    trainable: str, cache_features: str, augment: str, expected: tuple[bool, bool]
) -> None:
    args = namespace(trainable=trainable, cache_features=cache_features, augment=augment)
    assert train.augmentation_and_caching(args) == expected


def test_the_options_default_to_auto_and_take_the_sagemaker_spellings() -> None:
    args = train.get_args_parser().parse_args([])
    assert (args.cache_features, args.augment) == ("auto", "auto")
    args = train.get_args_parser().parse_args(["--cache_features", "False", "--augment", "TRUE"])
    assert (args.cache_features, args.augment) == ("false", "true")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cache-features", "maybe"], 'argument --cache-features/--cache_features: expected true, false or "auto"'),
        (["--augment", "sometimes"], 'argument --augment: expected true, false or "auto"'),
        (["--cache-features"], "argument --cache-features/--cache_features: expected one argument"),
    ],
)
def test_invalid_option_values_are_refused(argv: list[str], message: str) -> None:
    result = train_here(*argv)
    assert result.returncode == 2
    got = f", got '{argv[1]}'" if len(argv) == 2 else ""
    assert result.error == f"train.py: error: {message}{got}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"trainable": "last_block", "cache_features": "true"},
            "--cache-features true needs --trainable head (now last_block): only a frozen backbone's features "
            "stay the same from epoch to epoch; use --cache-features auto or false",
        ),
        (
            {"trainable": "head", "cache_features": "true", "augment": "true"},
            "--cache-features true and --augment true contradict each other: cached features are of "
            "un-augmented images; give one of them as false or auto",
        ),
    ],
)
def test_contradictory_options_are_refused_with_one_message(options: dict[str, str], message: str) -> None:
    with pytest.raises(train.TrainingError) as refused:
        train.augmentation_and_caching(namespace(**options))
    assert str(refused.value) == message


def test_contradictory_options_stop_the_run_with_one_line_before_any_work(tmp_path: Path) -> None:
    # No data set at all: the options are checked first.
    result = train_here("--data-dir", tmp_path / "missing", "--cache-features", "true")
    assert result.returncode == 1
    assert result.stderr.startswith("train.py: error: --cache-features true needs --trainable head ")
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_the_options_are_part_of_what_defines_a_run() -> None:
    assert {"augment", "cache_features"} <= set(train.RUN_DEFINING_ARGS)


# --- what the cached path trains ------------------------------------------------------------------------------


def test_the_cached_path_trains_the_head_of_the_uncached_path_without_augmentation(runs: dict[str, Run]) -> None:
    cached, uncached = runs["cached"], runs["uncached"]
    assert cached.metrics["epoch"] == uncached.metrics["epoch"] == list(range(1, EPOCHS + 1))
    for name in (*HISTORY_METRICS, "test_loss", "test_accuracy"):
        assert cached.metrics[name] == pytest.approx(uncached.metrics[name], rel=1e-4, abs=1e-6), name
    cached_head, _, _ = load_artifact(cached.model_dir)
    uncached_head, _, _ = load_artifact(uncached.model_dir)
    for (name, value), other in zip(cached_head.state_dict().items(), uncached_head.state_dict().values(), strict=True):
        assert torch.allclose(value.float(), other.float(), rtol=1e-4, atol=1e-6), name


def test_the_features_are_computed_once_in_the_first_epoch(runs: dict[str, Run]) -> None:
    cached = re.findall(CACHED_LINE, runs["cached"].stdout)
    assert cached == [(str(12 * len(DEFAULT_CLASSES)), "train"), (str(4 * len(DEFAULT_CLASSES)), "valid")]
    assert "trainable head; augmentation False; cached features True" in runs["cached"].stdout
    assert not re.search(CACHED_LINE, runs["uncached"].stdout)
    assert "trainable head; augmentation False; cached features False" in runs["uncached"].stdout


def test_the_cached_run_writes_every_output_and_a_full_model_artifact(runs: dict[str, Run], image_set: Path) -> None:
    run = runs["cached"]
    assert sorted(path.name for path in run.model_dir.iterdir()) == sorted(MODEL_DIR_ENTRIES)
    assert [row["epoch"] for row in history(run)] == list(range(1, EPOCHS + 1))
    assert len(run.metrics["valid_loss"]) == EPOCHS + 1
    assert run.metrics["valid_loss"][-1] == min(run.metrics["valid_loss"][:-1])
    assert (run.output_dir / train.CURVES_FILE).is_file()
    # The artifact is backbone and trained head: scored here on the test images, it gives the printed metrics.
    model, config, class_names = load_artifact(run.model_dir)
    assert class_names == list(DEFAULT_CLASSES)
    test_set = data.DogImageFolder(image_set / "test", eval_transform(config))
    images, targets = next(iter(DataLoader(test_set, batch_size=len(test_set))))
    with torch.inference_mode():
        logits = model(images)
    assert (logits.argmax(dim=1) == targets).double().mean().item() == pytest.approx(run.metrics["test_accuracy"][0])
    assert F.cross_entropy(logits, targets).item() == pytest.approx(run.metrics["test_loss"][0], rel=1e-4)


@pytest.mark.parametrize("name", ["cached", "uncached"])
def test_a_frozen_backbone_keeps_its_batchnorm_statistics(runs: dict[str, Run], name: str) -> None:
    # Random initialization: running mean 0, variance 1, nothing tracked; a backbone in train mode would change them.
    model, _, _ = load_artifact(runs[name].model_dir)
    batch_norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert batch_norms
    for module in batch_norms:
        assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
        assert torch.equal(module.running_var, torch.ones_like(module.running_var))
        assert module.num_batches_tracked.item() == 0


# --- resuming and DDP -----------------------------------------------------------------------------------------


def test_an_interrupted_cached_run_resumes_with_the_features_computed_again(
    image_set: Path, runs: dict[str, Run], tiny: tuple[str, ...], tmp_path: Path
) -> None:
    args = ("--data-dir", image_set, *tiny, *HEAD)
    first = train_here(
        *args, "--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output", "--stop-after-epoch", 1
    )
    assert first.returncode == train.EXIT_STOPPED, first.stderr
    assert parse_metrics(first.stdout)["epoch"] == [1]

    resumed = finished_run(tmp_path, *args)
    assert "resuming after epoch 1" in resumed.stdout
    assert [split for _, split in re.findall(CACHED_LINE, resumed.stdout)] == ["train", "valid"]
    assert resumed.metrics["epoch"] == [2, 3]
    # Interrupted or not, the same run: the same history and test metrics as the uninterrupted cached run.
    for row, expected in zip(history(resumed), history(runs["cached"]), strict=True):
        for name in HISTORY_METRICS:
            assert row[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), (row["epoch"], name)
    assert resumed.metrics["test_loss"] == pytest.approx(runs["cached"].metrics["test_loss"], rel=1e-4)
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == sorted(MODEL_DIR_ENTRIES)


def test_two_processes_each_cache_their_shard_and_train_one_head(tiny: tuple[str, ...], tmp_path: Path) -> None:
    """The cached path under DDP: the backbone copied from rank 0 to rank 1 (whose own seed differs), each rank
    caching its shard, the head's gradients averaged: both ranks end with the same weights."""
    images = make_image_set(tmp_path / "dogImages", per_split={"train": 12, "valid": 5, "test": 3})
    outputs = ("--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output")
    run = train_under_torchrun("--data-dir", images, *tiny, *HEAD, *outputs, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    log = run.stdout
    cached = re.findall(rf"^\[rank (\d)\] {CACHED_LINE}$", log, re.MULTILINE)
    # train: 36 images in two shards of 18; valid: 15 images, 8 and 7, each scored once.
    assert sorted(cached) == [("0", "18", "train"), ("0", "8", "valid"), ("1", "18", "train"), ("1", "7", "valid")]
    assert re.findall(r"^\[rank 0\] epoch \d/3: \d+ train and (\d+) valid images", log, re.MULTILINE) == ["15"] * 3
    digests = dict(re.findall(r"^\[rank (\d)\] final weights sha256 ([0-9a-f]{64})$", log, re.MULTILINE))
    assert sorted(digests) == ["0", "1"]
    assert digests["0"] == digests["1"]
    model, _, _ = load_artifact(tmp_path / "model")
    assert train.state_digest(model) == digests["0"]
    assert run.metrics["epoch"] == [1, 2, 3]
