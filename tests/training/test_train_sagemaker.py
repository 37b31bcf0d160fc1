"""train.py run by the real SageMaker training toolkit, offline, as a training job runs it.

``.venv/bin/train`` is the entry point of the SageMaker PyTorch training container (sagemaker-training
with sagemaker-pytorch-training). ``SAGEMAKER_BASE_DIR`` stands in for ``/opt/ml``; the toolkit reads
it when imported, so it is set in the subprocess's environment. The code goes in as the tar.gz the
training stack uploads: the toolkit takes ``sagemaker_submit_directory`` as an s3:// URI, a local
directory or a local tar.gz (not a file:// URI), and unpacks it into ``<base>/code``.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import torch
from torchvision import models

import train
from dogbreeds.local import training_job
from metrics import parse_metrics
from model import MODEL_DIR_ENTRIES
from stacks.constructs.code_asset import build_code_archive

TINY_HYPERPARAMETERS = {
    "backbone": "resnet18",
    "pretrained": "none",
    "image_size": 32,
    "batch_size": 8,
    "epochs": 2,
    "channels_last": True,  # reaches train.py as "--channels_last True"
}


@pytest.fixture(scope="module")
def code_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """training/ as the training stack packs it for ``sagemaker_submit_directory``."""
    return build_code_archive(build_dir=tmp_path_factory.mktemp("build"))


def sagemaker_base(root: Path, channels: dict[str, Path], hyperparameters: dict, code_archive: Path) -> Path:
    """The /opt/ml layout of a one-instance job, as local mode lays it out (dogbreeds.local.training_job)."""
    return training_job.lay_out_job(root, channels, hyperparameters, code_archive).base


def run_toolkit(base: Path) -> subprocess.CompletedProcess[str]:
    """The toolkit's ``train`` on ``base``, with the environment local mode gives it (no DNS wait for hosts)."""
    return subprocess.run(
        [str(training_job.TOOLKIT)],
        cwd=base,
        env=training_job.job_environment(training_job.TrainingJob(base)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )


def assert_outputs_where_sagemaker_collects_them(base: Path, log: str) -> None:
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()
    assert sorted(path.name for path in (base / "model").iterdir()) == sorted(MODEL_DIR_ENTRIES)  # model.tar.gz
    assert sorted(path.name for path in (base / "output" / "data").iterdir()) == sorted(
        [train.CURVES_FILE, train.METRICS_FILE]
    )  # output.tar.gz
    assert (base / "checkpoints" / train.CHECKPOINT_FILE).is_file()  # /opt/ml/checkpoints, synced to S3
    found = parse_metrics(log)
    assert found["epoch"] == [1, 2]
    assert len(found["test_accuracy"]) == 1


def test_a_one_process_job_reads_the_sagemaker_environment(image_set: Path, code_archive: Path, tmp_path: Path) -> None:
    base = sagemaker_base(tmp_path / "opt-ml", {"training": image_set}, TINY_HYPERPARAMETERS, code_archive)
    result = run_toolkit(base)
    assert result.returncode == 0, result.stdout[-5000:]
    # The toolkit runs the script with its own interpreter (python3 in the container, the venv's python here).
    assert re.search(
        r"^\S*python3? -- train\.py --backbone resnet18 --batch_size 8 --channels_last True --epochs 2 ",
        result.stdout,
        re.M,
    ), result.stdout[-5000:]
    assert 'host algo-1 of ["algo-1"] (SM_NUM_GPUS 0); 1 process(es)' in result.stdout
    assert_outputs_where_sagemaker_collects_them(base, result.stdout)


def test_a_torch_distributed_job_runs_under_torchrun_with_split_channels_and_pretrained_weights(
    image_set: Path, code_archive: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "weights" / "resnet18-f37072fd.pth"  # torchvision's file name
    weights.parent.mkdir()
    torch.save(models.resnet18().state_dict(), weights)
    channels = {
        "train": image_set / "train",
        "validation": image_set / "valid",
        "test": image_set / "test",
        "pretrained": weights.parent,
    }
    hyperparameters = {name: value for name, value in TINY_HYPERPARAMETERS.items() if name != "pretrained"} | {
        "workers": 0,
        "sagemaker_torch_distributed_enabled": True,
        # Processes per host: the number of GPUs on a GPU instance; two CPU processes here.
        "sagemaker_mpi_num_of_processes_per_host": 2,
    }
    base = sagemaker_base(tmp_path / "opt-ml", channels, hyperparameters, code_archive)
    result = run_toolkit(base)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "torchrun --nnodes 1 --nproc_per_node 2 train.py" in result.stdout
    assert "[rank 0] host algo-1" in result.stdout
    shards = re.findall(r"^\[rank (\d)\] this process's shard: train 18, valid 6, test 6 images$", result.stdout, re.M)
    assert sorted(shards) == ["0", "1"]
    assert f"[rank 0] pretrained weights: {base / 'input' / 'data' / 'pretrained' / weights.name}" in result.stdout
    assert_outputs_where_sagemaker_collects_them(base, result.stdout)


def test_a_failed_job_says_why_in_the_failure_file(image_set_copy: Path, code_archive: Path, tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        (image_set_copy / split / "200.Empty_breed").mkdir()
    base = sagemaker_base(tmp_path / "opt-ml", {"training": image_set_copy}, TINY_HYPERPARAMETERS, code_archive)
    result = run_toolkit(base)
    assert result.returncode == 1
    # SageMaker reports this file as the job's FailureReason.
    expected = "the train split has class folders with no image file: 200.Empty_breed"
    assert (base / "output" / "failure").read_text() == expected
    assert f"train.py: error: {expected}" in result.stdout
    assert not (base / "output" / "success").exists()
