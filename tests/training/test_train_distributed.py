"""train.py under torchrun: two processes on CPU (gloo) training one model on disjoint shards."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import train
from metrics import parse_metrics
from model import MODEL_DIR_ENTRIES, load_artifact
from tests.imagesets import make_image_set

# Odd valid and test sizes: the two ranks' evaluation shards differ in size, and no sample may count twice.
PER_SPLIT = {"train": 12, "valid": 5, "test": 3}
CLASSES = 3
EPOCHS = 2


def test_two_processes_train_one_model_on_disjoint_shards(
    run_train: Callable[..., subprocess.CompletedProcess[str]], tiny: tuple[str, ...], tmp_path: Path
) -> None:
    images = make_image_set(tmp_path / "dogImages", per_split=PER_SPLIT)
    result = run_train(
        "--data-dir", images, *tiny, "--epochs", EPOCHS, "--patience", 0,
        "--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output",
        cwd=tmp_path, processes=2,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stdout

    shards = {
        int(rank): {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
        for rank, n_train, n_valid, n_test in re.findall(
            r"^\[rank (\d)\] this process's shard: train (\d+), valid (\d+), test (\d+) images$", log, re.MULTILINE
        )
    }
    assert sorted(shards) == [0, 1]
    for split, per_class in PER_SPLIT.items():
        assert shards[0][split] + shards[1][split] == per_class * CLASSES, split
    # Summed over both ranks, every valid and test image was scored exactly once.
    scored = re.findall(r"^\[rank 0\] epoch \d/2: \d+ train and (\d+) valid images", log, re.MULTILINE)
    assert scored == [str(PER_SPLIT["valid"] * CLASSES)] * EPOCHS
    assert re.search(rf"^\[rank 0\] best epoch \d of 2; {PER_SPLIT['test'] * CLASSES} test images$", log, re.MULTILINE)

    digests = dict(re.findall(r"^\[rank (\d)\] final weights sha256 ([0-9a-f]{64})$", log, re.MULTILINE))
    assert sorted(digests) == ["0", "1"]
    assert digests["0"] == digests["1"]

    # Rank 0 alone prints the metric lines and writes the artifact, which holds the ranks' final weights.
    assert parse_metrics(log)["epoch"] == list(range(1, EPOCHS + 1))
    assert len(parse_metrics(log)["test_accuracy"]) == 1
    assert re.findall(r"^.*model artifact written to .*$", log, re.MULTILINE) == [
        f"[rank 0] model artifact written to {tmp_path / 'model'}"
    ]
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == sorted(MODEL_DIR_ENTRIES)
    model, _, _ = load_artifact(tmp_path / "model")
    assert train.state_digest(model) == digests["0"]
