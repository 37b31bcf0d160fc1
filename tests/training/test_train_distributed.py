"""train.py under torchrun: two processes on CPU (gloo) training one model on disjoint shards.

It reads the session's SageMaker job (tests/training/sagemaker_job.py), whose torchrun runs two processes
on an image set with odd valid and test sizes: the two ranks' evaluation shards differ in size, and no
sample may count twice. The cached path's two processes: test_feature_cache.py.
"""

from __future__ import annotations

import re

import pytest

import train
from metrics import parse_metrics
from model import MODEL_DIR_ENTRIES, load_artifact
from tests.training.sagemaker_job import CLASSES, EPOCHS, PER_SPLIT, SharedJob

# The session's one SageMaker job (torchrun): its readers run on the worker that ran it (pytest -n).
pytestmark = pytest.mark.xdist_group("sagemaker-job")


def test_two_processes_train_one_model_on_disjoint_shards(sagemaker_job: SharedJob) -> None:
    log, model_dir = sagemaker_job.log, sagemaker_job.job.model_dir
    assert sagemaker_job.status == 0, log[-5000:]

    shards = {
        int(rank): {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
        for rank, n_train, n_valid, n_test in re.findall(
            r"^\[rank (\d)\] this process's shard: train (\d+), valid (\d+), test (\d+) images$", log, re.MULTILINE
        )
    }
    assert sorted(shards) == [0, 1]
    for split, per_class in PER_SPLIT.items():
        assert shards[0][split] + shards[1][split] == per_class * len(CLASSES), split
    assert shards[0]["valid"] != shards[1]["valid"]  # 8 and 7: each image scored once, none padded in
    # Summed over both ranks, every valid and test image was scored exactly once.
    scored = re.findall(rf"^\[rank 0\] epoch \d/{EPOCHS}: \d+ train and (\d+) valid images", log, re.MULTILINE)
    assert scored == [str(PER_SPLIT["valid"] * len(CLASSES))] * EPOCHS
    test_images = PER_SPLIT["test"] * len(CLASSES)
    assert re.search(rf"^\[rank 0\] best epoch \d of {EPOCHS}; {test_images} test images$", log, re.MULTILINE)

    digests = dict(re.findall(r"^\[rank (\d)\] final weights sha256 ([0-9a-f]{64})$", log, re.MULTILINE))
    assert sorted(digests) == ["0", "1"]
    assert digests["0"] == digests["1"]

    # Rank 0 alone prints the metric lines and writes the artifact, which holds the ranks' final weights.
    assert parse_metrics(log)["epoch"] == list(range(1, EPOCHS + 1))
    assert len(parse_metrics(log)["test_accuracy"]) == 1
    assert re.findall(r"^.*model artifact written to .*$", log, re.MULTILINE) == [
        f"[rank 0] model artifact written to {model_dir}"
    ]
    assert sorted(path.name for path in model_dir.iterdir()) == sorted(MODEL_DIR_ENTRIES)
    model, _, _ = load_artifact(model_dir)
    assert train.state_digest(model) == digests["0"]
