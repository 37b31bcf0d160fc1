"""train.py as a SageMaker training job runs it: the real training toolkit, offline, and SageMaker's environment.

The toolkit part reads the session's one job (tests/training/sagemaker_job.py): ``.venv/bin/train``, the entry
point of the SageMaker PyTorch training container, runs train.py under torchrun with two processes in a
stand-in ``/opt/ml``, the code going in as the tar.gz the training stack uploads. What one process does with
SageMaker's variables, and the failure file a failed job leaves, run in this process.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import train
from metrics import parse_metrics
from model import MODEL_DIR_ENTRIES
from tests.training.running import TINY, train_here
from tests.training.sagemaker_job import EPOCHS, WEIGHTS_FILE, SharedJob

# The session's one SageMaker job (torchrun): its readers run on the worker that ran it (pytest -n).
pytestmark = pytest.mark.xdist_group("sagemaker-job")


def assert_outputs_where_sagemaker_collects_them(base: Path, log: str, epochs: int) -> None:
    assert sorted(path.name for path in (base / "model").iterdir()) == sorted(MODEL_DIR_ENTRIES)  # model.tar.gz
    assert sorted(path.name for path in (base / "output" / "data").iterdir()) == sorted(
        [train.CURVES_FILE, train.METRICS_FILE]
    )  # output.tar.gz
    assert (base / "checkpoints" / train.CHECKPOINT_FILE).is_file()  # /opt/ml/checkpoints, synced to S3
    found = parse_metrics(log)
    assert found["epoch"] == list(range(1, epochs + 1))
    assert len(found["test_accuracy"]) == 1


def test_a_torch_distributed_job_runs_under_torchrun_with_split_channels_and_pretrained_weights(
    sagemaker_job: SharedJob,
) -> None:
    job, log = sagemaker_job.job, sagemaker_job.log
    assert sagemaker_job.status == 0, log[-5000:]
    assert job.success_file.exists()
    assert job.failure_reason() is None
    # The hyperparameters as the toolkit passes them: JSON true arrives as "True".
    assert re.search(
        r"^\S*torchrun --nnodes 1 --nproc_per_node 2 train\.py --backbone resnet18 --batch_size 8 --channels_last True "
        r"--epochs 2 --image_size 32 --patience 0 --workers 0$",
        log,
        re.M,
    ), log[-5000:]
    assert '[rank 0] host algo-1 of ["algo-1"] (SM_NUM_GPUS 0); 2 process(es), device cpu' in log
    pretrained = job.base / "input" / "data" / "pretrained" / WEIGHTS_FILE
    assert re.findall(r"^.*pretrained weights: .*$", log, re.M) == [f"[rank 0] pretrained weights: {pretrained}"]
    assert_outputs_where_sagemaker_collects_them(job.base, log, EPOCHS)


def test_one_process_reads_the_sagemaker_environment(image_set: Path, tmp_path: Path) -> None:
    """What the toolkit sets for a one-instance job without torchrun: the channels and folders, the host names."""
    base = tmp_path / "opt-ml"
    (base / "output" / "data").mkdir(parents=True)
    environment = {
        "SM_CHANNEL_TRAINING": str(image_set),
        "SM_MODEL_DIR": str(base / "model"),
        "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"),
        "SM_OUTPUT_DIR": str(base / "output"),
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": '["algo-1"]',
        "SM_NUM_GPUS": "0",
    }
    result = train_here(*TINY, "--epochs", "2", "--channels_last", "True", env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert result.stdout.startswith('host algo-1 of ["algo-1"] (SM_NUM_GPUS 0); 1 process(es), device cpu')
    assert_outputs_where_sagemaker_collects_them(base, result.stdout, 2)
    assert not (base / "output" / "failure").exists()


def test_a_failed_job_says_why_in_the_failure_file(image_set_copy: Path, tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        (image_set_copy / split / "200.Empty_breed").mkdir()
    output = tmp_path / "output"
    output.mkdir()
    environment = {"SM_CHANNEL_TRAINING": str(image_set_copy), "SM_OUTPUT_DIR": str(output)}
    result = train_here(*TINY, "--model-dir", tmp_path / "model", env=environment)
    assert result.returncode == 1
    # SageMaker reports this file as the job's FailureReason (the toolkit keeps it: tests/local/test_demo.py).
    expected = "the train split has class folders with no image file: 200.Empty_breed"
    assert (output / "failure").read_text() == expected
    assert result.stderr == f"train.py: error: {expected}\n"
