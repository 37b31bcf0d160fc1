"""train.py in one process: its options, the data checks, learning, the metric lines, the outputs, resuming.

The runs happen in this process (running.train_here), as ``python train.py ARGS`` would run them.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import data
import pytest
import torch
from PIL import Image, ImageFile
from torch.nn import functional as F
from torch.utils.data import DataLoader

import train
from metrics import METRIC_REGEXES, parse_metrics
from model import MODEL_DIR_ENTRIES, SERVING_FILES, eval_transform, load_artifact
from tests.imagesets import DEFAULT_CLASSES
from tests.training.conftest import EPOCHS, PATIENCE
from tests.training.running import Run, train_here

CHECKPOINT_KEYS = {
    "model",
    "optimizer",
    "lr_scheduler",
    "scaler",
    "epoch",
    "args",
    "class_names",
    "history",
    "best_epoch",
    "best_model",
    "backbone_sha256",
    "finished",
}


# --- options ---------------------------------------------------------------------------------------


def test_every_option_has_a_type_and_a_help_that_states_its_default() -> None:
    for action in train.get_args_parser()._actions:
        if action.dest != "help":
            assert action.type is not None, action.option_strings
            assert re.search(r"[(;] ?default: ", action.help), action.option_strings


def test_every_multi_word_option_takes_both_spellings() -> None:
    multi_word = [action.option_strings for action in train.get_args_parser()._actions if "_" in action.dest]
    assert multi_word
    for names in multi_word:
        name = names[0].removeprefix("--")
        assert {f"--{name.replace('_', '-')}", f"--{name.replace('-', '_')}"} <= set(names), names


def test_values_parse_as_the_sagemaker_toolkit_passes_them() -> None:
    # The toolkit JSON-decodes each hyperparameter and passes str(value): JSON true arrives as "True".
    args = train.get_args_parser().parse_args(
        ["--batch_size", "32", "--learning_rate", "0.05", "--channels_last", "True", "--workers", "-1"]
    )
    assert (args.batch_size, args.learning_rate, args.channels_last, args.workers) == (32, 0.05, True, -1)
    args = train.get_args_parser().parse_args(["--channels-last", "false", "--workers", "auto", "--image-size", "64"])
    assert (args.channels_last, args.workers, args.image_size) == (False, -1, 64)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--channels-last", "maybe"], "argument --channels-last/--channels_last: expected true or false, got 'maybe'"),
        (["--workers", "-2"], "argument --workers: expected auto, -1 or a number of workers, got '-2'"),
    ],
)
def test_invalid_values_are_refused_with_argparse_s_status(argv: list[str], message: str) -> None:
    result = train_here(*argv)
    assert (result.returncode, result.error) == (2, f"train.py: error: {message}")


def test_paths_default_to_the_sagemaker_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SM_CHANNEL_TRAINING", "/opt/ml/input/data/training")
    monkeypatch.setenv("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation")
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")
    args = train.get_args_parser().parse_args([])
    assert args.data_dir == "/opt/ml/input/data/training"
    assert args.valid_dir == "/opt/ml/input/data/validation"
    assert (args.model_dir, args.output_dir) == (str(tmp_path / "model"), "/opt/ml/output/data")
    assert train.checkpoint_dir(args) == tmp_path / "checkpoints"  # /opt/ml/checkpoints on SageMaker
    assert (tmp_path / "checkpoints").is_dir()

    for name in ("SM_CHANNEL_TRAINING", "SM_CHANNEL_VALIDATION", "SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR"):
        monkeypatch.delenv(name)
    args = train.get_args_parser().parse_args([])
    assert (args.data_dir, args.valid_dir, args.model_dir, args.output_dir) == (None, None, "model", "output")
    assert train.checkpoint_dir(args) == Path("output/checkpoints")


# --- data ------------------------------------------------------------------------------------------


def test_each_rank_gets_a_disjoint_shard_and_the_shards_make_up_the_split() -> None:
    sizes = {"train": 36, "valid": 15, "test": 9}
    splits = {split: range(size) for split, size in sizes.items()}
    for world_size in (1, 2, 3):
        shards = []
        for rank in range(world_size):
            samplers = train.make_samplers(splits, train.Processes(rank=rank, world_size=world_size), seed=0)
            samplers["train"].set_epoch(3)
            shards.append({split: list(sampler) for split, sampler in samplers.items()})
        for split, size in sizes.items():
            indices = [index for shard in shards for index in shard[split]]
            assert sorted(indices) == list(range(size)), (split, world_size)


def test_a_truncated_jpeg_loads_with_a_warning_and_garbage_is_reported_by_path(
    image_set: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = next((image_set / "train").rglob("*.jpg")).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    with caplog.at_level("WARNING"):
        image = data.load_rgb(str(truncated))
    assert (image.mode, image.size) == ("RGB", (48, 40))
    assert f"image {truncated} is truncated" in caplog.text
    assert not ImageFile.LOAD_TRUNCATED_IMAGES

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    with pytest.raises(data.UnreadableImageError, match=f"^cannot read image {re.escape(str(garbage))}: "):
        data.load_rgb(str(garbage))


def test_training_sees_the_pixels_the_endpoint_sees(tmp_path: Path) -> None:
    """EXIF orientation and transparency are applied as inference.decode applies them (images.upright_rgb)."""
    sideways = Image.new("RGB", (60, 40), (200, 30, 30))
    sideways.paste((30, 30, 200), (0, 0, 30, 40))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    photo = tmp_path / "portrait.jpg"
    sideways.save(photo, quality=95, exif=exif)
    upright = data.load_rgb(str(photo))
    assert upright.size == (40, 60)
    assert upright.getpixel((20, 5))[2] > 150  # the blue half is on top once rotated
    assert upright.getpixel((20, 55))[0] > 150

    cut_out = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    cut_out.paste((0, 0, 0, 255), (0, 0, 4, 8))
    path = tmp_path / "cut-out.png"
    cut_out.save(path)
    loaded = data.load_rgb(str(path))
    assert loaded.getpixel((6, 4)) == (255, 255, 255)  # transparent: white, as at the endpoint (not black)
    assert loaded.getpixel((1, 4)) == (0, 0, 0)


def test_hidden_folders_are_not_classes(image_set_copy: Path) -> None:
    roots = {split: image_set_copy / split for split in data.SPLITS}
    for root in roots.values():
        (root / ".ipynb_checkpoints").mkdir()  # what a notebook leaves beside the files it opened
    assert data.check_layout(roots) == list(DEFAULT_CLASSES)
    assert data.load_split("train", roots["train"], transform=None).classes == list(DEFAULT_CLASSES)


def _missing_split(root: Path) -> str:
    shutil.rmtree(root / "test")
    return f"the test split is missing: {root / 'test'} is not a folder"


def _class_mismatch(root: Path) -> str:
    (root / "valid" / "042.Carolina_dog").rename(root / "valid" / "042.Carolina_Dog")
    return "the valid split's classes differ from train's: it lacks 042.Carolina_dog and adds 042.Carolina_Dog"


def _empty_class(root: Path) -> str:
    for split in ("train", "valid", "test"):
        (root / split / "200.Empty_breed").mkdir()
    return "the train split has class folders with no image file: 200.Empty_breed"


def _corrupt_image(root: Path) -> str:
    broken = root / "valid" / "103.Mastiff" / "Mastiff_99999.jpg"
    broken.write_bytes(b"not a JPEG")
    return f"cannot read image {broken}: "


@pytest.mark.parametrize("break_data_set", [_missing_split, _class_mismatch, _empty_class, _corrupt_image])
def test_a_broken_data_set_stops_the_run_with_one_line_that_names_the_problem(
    break_data_set: Callable[[Path], str], image_set_copy: Path, tiny: tuple[str, ...], tmp_path: Path
) -> None:
    expected = break_data_set(image_set_copy)
    # One DataLoader worker: an unreadable image is found in a worker process, not in this one.
    result = train_here(
        "--data-dir", image_set_copy, *tiny, "--workers", "1", "--epochs", "1",
        "--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output",
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"train.py: error: {expected}")
    assert result.stderr.count("\n") == 1  # one line, no traceback


# --- a whole run -----------------------------------------------------------------------------------


def test_the_training_loss_goes_down(trained: Run) -> None:
    losses = trained.metrics["train_loss"]
    assert len(losses) >= 3
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_stops_after_patience_epochs_without_a_lower_valid_loss(trained: Run) -> None:
    summary = trained.summary
    valid_losses = [row["valid_loss"] for row in summary["history"]]
    expected_last = EPOCHS
    for epoch in range(1, EPOCHS + 1):
        best_epoch = valid_losses.index(min(valid_losses[:epoch])) + 1
        if epoch - best_epoch >= PATIENCE:
            expected_last = epoch
            break
    assert expected_last < EPOCHS, f"valid losses {valid_losses} never stall for {PATIENCE} epochs: nothing to test"
    assert trained.metrics["epoch"] == list(range(1, expected_last + 1))
    assert summary["stopped_early"] == (expected_last < EPOCHS)
    assert summary["best_epoch"] == valid_losses.index(min(valid_losses)) + 1


def test_every_metric_line_matches_the_documented_regexes(trained: Run) -> None:
    lines = [line for line in trained.stdout.splitlines() if re.match(r"[a-z_]+=", line)]
    assert lines
    for line in lines:
        names = re.findall(r"([a-z_]+)=", line)
        assert set(names) <= set(METRIC_REGEXES), line
        assert all(re.search(METRIC_REGEXES[name], line) for name in names), line
        assert re.sub("|".join(METRIC_REGEXES[name] for name in names), "", line).strip() == "", line

    found, epochs = trained.metrics, len(trained.metrics["epoch"])
    for name in ("train_loss", "train_accuracy", "epoch_seconds", "images_per_second"):
        assert len(found[name]) == epochs, name
    # One valid line per epoch, then the best epoch's once more: the last value is the tuning objective.
    assert len(found["valid_loss"]) == len(found["valid_accuracy"]) == epochs + 1
    assert found["valid_loss"][-1] == min(found["valid_loss"][:-1])
    assert len(found["test_loss"]) == len(found["test_accuracy"]) == 1
    for name in ("train_accuracy", "valid_accuracy", "test_accuracy"):
        assert all(0 <= value <= 1 for value in found[name]), name


def test_metrics_json_holds_the_printed_history_and_the_final_metrics(trained: Run) -> None:
    summary = trained.summary
    found = trained.metrics
    for name in ("epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
        assert [float(f"{row[name]:.6g}") for row in summary["history"]] == found[name][: len(summary["history"])]
    best = summary["history"][summary["best_epoch"] - 1]
    assert (summary["valid_loss"], summary["valid_accuracy"]) == (best["valid_loss"], best["valid_accuracy"])
    assert float(f"{summary['test_accuracy']:.6g}") == found["test_accuracy"][0]
    assert float(f"{summary['test_loss']:.6g}") == found["test_loss"][0]


def test_the_curves_are_a_png(trained: Run) -> None:
    with Image.open(trained.output_dir / train.CURVES_FILE) as image:
        assert image.format == "PNG"
        assert image.width > image.height > 100


def test_the_artifact_is_the_tested_model_and_loads_for_inference(trained: Run, image_set: Path) -> None:
    assert sorted(path.name for path in trained.model_dir.iterdir()) == sorted(MODEL_DIR_ENTRIES)
    # The serving code, byte for byte this folder's, where the inference container imports it from.
    code = trained.model_dir / "code"
    assert sorted(path.name for path in code.iterdir()) == sorted(SERVING_FILES)
    for name in SERVING_FILES:
        assert (code / name).read_bytes() == (Path(train.__file__).parent / name).read_bytes()
    model, config, class_names = load_artifact(trained.model_dir)
    assert class_names == list(DEFAULT_CLASSES)
    assert (config.backbone, config.num_classes, config.image_size, config.resize_size) == ("resnet18", 3, 32, 36)

    # Scored again here, the artifact gives the test metrics the run printed: it is the tested model.
    test_set = data.DogImageFolder(image_set / "test", eval_transform(config))
    assert test_set.classes == class_names
    images, targets = next(iter(DataLoader(test_set, batch_size=len(test_set))))
    with torch.inference_mode():
        logits = model(images)
    accuracy = (logits.argmax(dim=1) == targets).double().mean().item()
    assert accuracy == pytest.approx(trained.metrics["test_accuracy"][0], abs=1e-5)
    assert F.cross_entropy(logits, targets).item() == pytest.approx(trained.metrics["test_loss"][0], rel=1e-4)


# --- resuming --------------------------------------------------------------------------------------


def test_an_interrupted_run_resumes_after_its_last_epoch_and_a_finished_one_only_evaluates(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path
) -> None:
    args = (
        "--data-dir", image_set, *tiny, "--epochs", 3, "--patience", 0,
        "--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output",
    )  # fmt: skip
    checkpoints = tmp_path / "output" / "checkpoints"

    first = train_here(*args, "--stop-after-epoch", 1)
    assert first.returncode == train.EXIT_STOPPED
    assert first.error == (
        "train.py: error: stopped after epoch 1 as --stop-after-epoch asked; running again resumes it"
    )
    assert parse_metrics(first.stdout)["epoch"] == [1]
    assert not (tmp_path / "model").exists()
    checkpoint = torch.load(checkpoints / train.CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    assert set(checkpoint) == CHECKPOINT_KEYS
    assert (checkpoint["epoch"], checkpoint["finished"], len(checkpoint["history"])) == (1, False, 1)

    second = train_here(*args)
    assert second.returncode == 0, second.stderr
    assert f"resuming after epoch 1 from {checkpoints / train.CHECKPOINT_FILE}" in second.stdout
    assert parse_metrics(second.stdout)["epoch"] == [2, 3]
    history = json.loads((tmp_path / "output" / train.METRICS_FILE).read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert float(f"{history[0]['valid_loss']:.6g}") == parse_metrics(first.stdout)["valid_loss"][0]
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == sorted(MODEL_DIR_ENTRIES)

    third = train_here(*args)
    assert third.returncode == 0, third.stderr
    assert parse_metrics(third.stdout)["epoch"] == []
    assert parse_metrics(third.stdout)["test_loss"] == parse_metrics(second.stdout)["test_loss"]

    other = train_here(*args, "--learning-rate", 0.05)
    assert other.returncode == 1
    assert other.error == (
        f"train.py: error: the checkpoint in {checkpoints} belongs to another run: learning_rate=0.01 (now 0.05); "
        "delete it or give another --checkpoint-dir"
    )


@pytest.mark.parametrize(
    ("capability", "amp", "expected"),
    [((7, 5), "auto", torch.float16), ((8, 0), "auto", torch.bfloat16), ((7, 5), "fp16", torch.float16)],
)
def test_the_gpu_autocast_dtype_follows_the_compute_capability(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], amp: str, expected: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert train.autocast_dtype(amp, torch.device("cuda", 0)) == expected


def test_bf16_training_on_a_gpu_without_native_bf16_is_refused_naming_the_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    with pytest.raises(
        train.TrainingError,
        match=r"^--amp bf16 needs a GPU of compute capability 8\.0 or newer, not a Tesla T4; use --amp fp16$",
    ):
        train.autocast_dtype("bf16", torch.device("cuda", 0))
