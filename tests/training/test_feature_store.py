"""The shared feature store (training/feature_store.py, train.py --feature-store and --extract-features) and head-only
checkpoints: features extracted once, read by every later head-only run of the same images, backbone weights, input
configuration and code; a new key for anything else; a folder or an S3 prefix (moto's S3 here); the head alone in
the checkpoint, and resumption from it."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import boto3
import feature_store
import pytest
import torch
from data import ShardSampler
from feature_store import MARKER, FeatureStoreError, KeyInputs, LocalFeatureStore, S3FeatureStore, SplitFeatures
from moto import mock_aws
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import train
from dogbreeds.local import training_job
from model import MODEL_DIR_ENTRIES
from tests.imagesets import DEFAULT_CLASSES, make_image_set
from tests.training.running import Result, finished_run, train_here, train_under_torchrun

EPOCHS = 3
HEAD = ("--trainable", "head", "--epochs", EPOCHS, "--patience", 0)
READ_LINE = r"read the backbone's features of this process's (\d+) train images and (\d+) valid images from (\S+) in"
CACHED_LINE = r"cached the backbone's features of this process's (\d+) (train|valid) images"
TRAIN_IMAGES, VALID_IMAGES = 12 * len(DEFAULT_CLASSES), 4 * len(DEFAULT_CLASSES)
BUCKET = "dogbreeds-artifacts-test"


@pytest.fixture
def extracted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The images every call of the backbone over a loader (``train.compute_features``) ran through it."""
    counts: list[int] = []
    original = train.compute_features

    def counting(backbone, loader, runtime):
        features = original(backbone, loader, runtime)
        counts.append(len(features.targets))
        return features

    monkeypatch.setattr(train, "compute_features", counting)
    return counts


def keys(store: Path) -> list[str]:
    """The complete keys of a local store."""
    return sorted(path.parent.name for path in store.glob(f"*/{MARKER}"))


def trial(work: Path, images: Path, tiny: tuple[str, ...], *extra: object, env: dict | None = None) -> Result:
    """A head-only tuning trial as a process of its own would run it (here in this process)."""
    outputs = ("--model-dir", work / "model", "--output-dir", work / "output")
    return train_here("--data-dir", images, *tiny, *HEAD, *outputs, *extra, env=env)


# --- the key ----------------------------------------------------------------------------------------------------------


def key_inputs(**changes: object) -> KeyInputs:
    inputs = KeyInputs(
        images={"train": "a" * 64, "valid": "b" * 64},
        backbone="resnet50",
        backbone_sha256="c" * 64,
        config={"image_size": 224, "resize_size": 256, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        amp="fp32",
    )
    return dataclasses.replace(inputs, **changes)


@pytest.mark.parametrize(
    "change",
    [
        {"images": {"train": "d" * 64, "valid": "b" * 64}},
        {"backbone": "resnet101"},
        {"backbone_sha256": "e" * 64},
        {"config": {"image_size": 256, "resize_size": 292, "mean": [0.5] * 3, "std": [0.2] * 3}},
        {"amp": "bfloat16"},
        {"torch": "9.9.9"},
        {"code_sha256": "f" * 64},
        {"format": feature_store.FEATURES_FORMAT + 1},
    ],
    ids=lambda change: next(iter(change)),
)
def test_anything_that_changes_the_features_changes_the_key(change: dict) -> None:
    assert key_inputs().key == key_inputs().key
    assert re.fullmatch("[0-9a-f]{64}", key_inputs().key)
    assert key_inputs(**change).key != key_inputs().key


def test_the_code_digest_covers_the_modules_that_make_the_features(tmp_path: Path) -> None:
    for name in feature_store.FEATURE_CODE:
        shutil.copy(feature_store.CODE_DIR / name, tmp_path / name)
    assert feature_store.code_digest(tmp_path) == feature_store.code_digest()
    (tmp_path / "images.py").write_text((tmp_path / "images.py").read_text() + "\n# a change\n")
    assert feature_store.code_digest(tmp_path) != feature_store.code_digest()
    assert key_inputs().code_sha256 == feature_store.code_digest()


def test_the_image_listing_changes_with_a_file_its_size_or_its_class(tmp_path: Path) -> None:
    root = make_image_set(tmp_path / "dogImages", per_split={"train": 2})
    split = root / "train"

    def listing() -> str:
        folders = sorted(split.iterdir())
        samples = [(str(path), index) for index, folder in enumerate(folders) for path in sorted(folder.iterdir())]
        return feature_store.image_listing(samples, split)

    before = listing()
    assert listing() == before
    first = next((split / DEFAULT_CLASSES[0]).iterdir())
    first.write_bytes(first.read_bytes() + b"\0")
    grown = listing()
    assert grown != before
    first.rename(split / DEFAULT_CLASSES[1] / first.name)
    assert listing() not in (before, grown)


def test_every_kind_of_change_to_a_run_gives_a_new_key(image_set: Path, tiny: tuple[str, ...], tmp_path: Path) -> None:
    store = tmp_path / "store"
    images = Path(shutil.copytree(image_set, tmp_path / "dogImages"))
    runs = [
        (),
        ("--learning-rate", 0.05, "--batch-size", 4),  # the head's hyperparameters: the same features
        ("--image-size", 40),
        ("--backbone", "resnet34"),
        ("--seed", 1),  # random initialization from another seed: other backbone weights
    ]
    for n, options in enumerate(runs):
        result = trial(tmp_path / f"run{n}", images, tiny, "--feature-store", store, *options)
        assert result.returncode == 0, result.stderr
    assert len(keys(store)) == 4
    next((images / "valid" / DEFAULT_CLASSES[2]).iterdir()).unlink()  # a new version of the data set
    assert trial(tmp_path / "new data", images, tiny, "--feature-store", store).returncode == 0
    assert len(keys(store)) == 5


# --- sharing between runs -------------------------------------------------------------------------------------------


def test_a_second_trial_reads_the_features_the_first_stored_and_trains_the_same_head(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path, extracted: list[int]
) -> None:
    store = tmp_path / "store"
    first = trial(tmp_path / "first", image_set, tiny, "--feature-store", f"file://{store}")
    assert first.returncode == 0, first.stderr
    assert extracted == [TRAIN_IMAGES, VALID_IMAGES], "the first trial extracts, once per split"
    assert f"no shared features at {store}/" in first.stdout
    (key,) = keys(store)
    assert f"stored the features for other runs at {store}/{key}/" in first.stdout

    extracted.clear()
    second = trial(tmp_path / "second", image_set, tiny, "--feature-store", store, "--learning-rate", 0.05)
    assert second.returncode == 0, second.stderr
    assert extracted == [], "no forward pass of the backbone over the train or valid images"
    assert not re.search(CACHED_LINE, second.stdout)
    assert re.findall(READ_LINE, second.stdout) == [(str(TRAIN_IMAGES), str(VALID_IMAGES), f"{store}/{key}/")]
    assert keys(store) == [key]

    # What the second trial trained on stored features is what it trains computing them itself.
    alone = trial(tmp_path / "alone", image_set, tiny, "--learning-rate", 0.05)
    for name in ("train_loss", "valid_loss", "valid_accuracy", "test_loss", "test_accuracy"):
        assert second.metrics[name] == pytest.approx(alone.metrics[name], rel=1e-5, abs=1e-7), name
    assert sorted(path.name for path in (tmp_path / "second" / "model").iterdir()) == sorted(MODEL_DIR_ENTRIES)


def test_the_extraction_step_stores_once_and_every_trial_reads(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path, extracted: list[int]
) -> None:
    store = tmp_path / "store"
    extract = ("--data-dir", image_set, *tiny, "--trainable", "head", "--feature-store", store)
    outputs = ("--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output")
    first = train_here(*extract, *outputs, "--extract-features", "true")
    assert first.returncode == 0, first.stderr
    (key,) = keys(store)
    assert re.search(
        rf"extracted the features of {TRAIN_IMAGES} train images and {VALID_IMAGES} valid images in [\d.]+ s; "
        rf"stored at {re.escape(str(store))}/{key}/",
        first.stdout,
    )
    assert not (tmp_path / "model").exists() and not any(first.metrics.values()), "nothing trained"
    again = train_here(*extract, *outputs, "--extract_features", "True")  # as the SageMaker toolkit passes it
    assert again.returncode == 0, again.stderr
    assert f"the features are already stored at {store}/{key}/: nothing to extract" in again.stdout
    assert extracted == [TRAIN_IMAGES, VALID_IMAGES]

    for n, rate in enumerate((0.01, 0.05, 0.1)):
        result = trial(tmp_path / f"trial{n}", image_set, tiny, "--feature-store", store, "--learning-rate", rate)
        assert result.returncode == 0, result.stderr
        assert len(re.findall(READ_LINE, result.stdout)) == 1
    assert extracted == [TRAIN_IMAGES, VALID_IMAGES], "three trials, no extraction"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ("--feature-store", "none"),
            "--extract-features needs --feature-store (now none) and cached features: --trainable head (now head), "
            "--augment auto or false (now auto), --cache-features auto or true (now auto)",
        ),
        (
            ("--feature-store", "store", "--trainable", "last_block"),
            "--extract-features needs --feature-store (now store) and cached features: --trainable head (now "
            "last_block), --augment auto or false (now auto), --cache-features auto or true (now auto)",
        ),
        (
            ("--feature-store", "ftp://host/features"),
            "--feature-store ftp://host/features: expected none, s3://bucket/prefix, file://DIR or a folder",
        ),
    ],
)
def test_extraction_without_a_store_or_cached_features_is_refused_before_any_work(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    extract = ("--trainable", "head", "--extract-features", "true")
    result = train_here("--data-dir", tmp_path / "missing", *extract, *options)
    assert (result.returncode, result.error) == (1, f"train.py: error: {message}")


def test_a_store_is_unused_where_features_are_not_cached(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    result = trial(tmp_path / "run", image_set, tiny, "--feature-store", store, "--augment", "true")
    assert result.returncode == 0, result.stderr
    assert f"feature store {store} unused: this run does not cache features" in result.stdout
    assert "trainable head; augmentation True; cached features False" in result.stdout
    assert not store.exists()


# --- the store's guarantees -----------------------------------------------------------------------------------------


def splits() -> dict[str, SplitFeatures]:
    return {
        "train": SplitFeatures(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])),
        "valid": SplitFeatures(torch.randn(3, 4), torch.tensor([0, 1, 2])),
    }


def test_the_marker_is_written_last_and_a_key_without_it_is_absent(tmp_path: Path) -> None:
    store, written = LocalFeatureStore(tmp_path), []
    put = store._put
    store._put = lambda key, name, data: (written.append(name), put(key, name, data))
    inputs = key_inputs()
    store.write(inputs.key, splits(), inputs)
    assert written == ["train.pt", "valid.pt", MARKER]
    assert store.read(inputs.key) is not None
    (tmp_path / inputs.key / MARKER).unlink()  # an interrupted writer
    assert store.read(inputs.key) is None


def test_features_that_do_not_match_their_marker_are_refused(tmp_path: Path) -> None:
    store, inputs, stored = LocalFeatureStore(tmp_path), key_inputs(), splits()
    store.write(inputs.key, stored, inputs)
    read = store.read(inputs.key)
    assert torch.equal(read["train"].features, stored["train"].features)
    assert torch.equal(read["valid"].targets, stored["valid"].targets)
    other = {**stored, "train": SplitFeatures(torch.zeros(6, 4), stored["train"].targets)}
    store._put(inputs.key, "train.pt", feature_store._serialized(other["train"]))  # a racing writer's other bits
    with pytest.raises(FeatureStoreError, match=r"train\.pt does not match its SHA-256 in COMPLETE"):
        store.read(inputs.key)


def test_a_trial_computes_the_features_itself_when_the_stored_ones_are_unusable(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path, extracted: list[int]
) -> None:
    store = tmp_path / "store"
    assert trial(tmp_path / "first", image_set, tiny, "--feature-store", store).returncode == 0
    (key,) = keys(store)
    (store / key / "valid.pt").write_bytes(b"not features")
    extracted.clear()
    second = trial(tmp_path / "second", image_set, tiny, "--feature-store", store)
    assert second.returncode == 0, second.stderr
    assert "cannot use the shared features (" in second.stdout and "valid.pt does not match" in second.stdout
    assert extracted == [TRAIN_IMAGES, VALID_IMAGES]


# --- S3 (moto) ------------------------------------------------------------------------------------------------------

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_the_s3_store_shares_the_features_between_the_extraction_and_the_trials(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path, extracted: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        uri = f"s3://{BUCKET}/features/"
        options = ("--data-dir", image_set, *tiny, "--trainable", "head", "--feature-store", uri)
        outputs = ("--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output")
        extraction = train_here(*options, *outputs, "--extract-features", "true", env=AWS_ENV)
        assert extraction.returncode == 0, extraction.stderr
        listed = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
        (key,) = {name.split("/")[1] for name in listed}
        assert listed == [f"features/{key}/{name}" for name in (MARKER, "train.pt", "valid.pt")]

        result = trial(tmp_path / "trial", image_set, tiny, "--feature-store", uri, env=AWS_ENV)
        assert result.returncode == 0, result.stderr
        assert re.findall(READ_LINE, result.stdout) == [(str(TRAIN_IMAGES), str(VALID_IMAGES), f"{uri}{key}/")]
        assert extracted == [TRAIN_IMAGES, VALID_IMAGES], "extracted by the extraction alone"


def test_the_s3_store_reads_an_absent_key_as_absent_and_names_what_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        store, inputs = S3FeatureStore(BUCKET, "features"), key_inputs()
        assert store.uri == f"s3://{BUCKET}/features/"
        assert store.read(inputs.key) is None
        store.write(inputs.key, splits(), inputs)
        assert torch.equal(store.read(inputs.key)["valid"].targets, splits()["valid"].targets)
        missing = S3FeatureStore("no-such-bucket", "features/")
        with pytest.raises(FeatureStoreError, match=r"cannot write s3://no-such-bucket/features/.*NoSuchBucket"):
            missing.write(inputs.key, splits(), inputs)


# --- head-only checkpoints ------------------------------------------------------------------------------------------


def test_a_head_only_run_checkpoints_the_head_and_resumes_from_it(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    first = trial(tmp_path, image_set, tiny, "--feature-store", store, "--stop-after-epoch", 1)
    assert first.returncode == train.EXIT_STOPPED, first.stderr
    path = tmp_path / "output" / "checkpoints" / train.CHECKPOINT_FILE
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint["model"]) == set(checkpoint["best_model"]) == {"fc.weight", "fc.bias"}
    assert re.fullmatch("[0-9a-f]{64}", checkpoint["backbone_sha256"])
    # resnet18 is 45 MB, 90 MB with the best epoch's copy; the head and the rest of the state take a few kB.
    assert path.stat().st_size < 64 * 1024

    resumed = trial(tmp_path, image_set, tiny, "--feature-store", store)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1" in resumed.stdout and len(re.findall(READ_LINE, resumed.stdout)) == 1
    assert resumed.metrics["epoch"] == [2, 3]
    whole = trial(tmp_path / "whole", image_set, tiny)
    for name in ("valid_loss", "test_loss", "test_accuracy"):
        assert resumed.metrics[name][-1] == pytest.approx(whole.metrics[name][-1], rel=1e-5, abs=1e-7), name
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == sorted(MODEL_DIR_ENTRIES)


def test_a_head_only_checkpoint_of_another_backbone_is_refused(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path
) -> None:
    assert trial(tmp_path, image_set, tiny, "--stop-after-epoch", 1).returncode == train.EXIT_STOPPED
    checkpoints = tmp_path / "output" / "checkpoints"
    checkpoint = torch.load(checkpoints / train.CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    actual = checkpoint["backbone_sha256"]
    checkpoint["backbone_sha256"] = "0" * 64  # as if the pretrained weights had changed since
    train.save_checkpoint(checkpoint, checkpoints)
    resumed = trial(tmp_path, image_set, tiny)
    assert (resumed.returncode, resumed.error) == (
        1,
        f"train.py: error: the checkpoint in {checkpoints} holds a head trained on another backbone (sha256 "
        f"000000000000, now {actual[:12]}: other pretrained weights); delete it or give another --checkpoint-dir",
    )


def test_a_head_only_run_that_augments_also_checkpoints_the_head(
    image_set: Path, tiny: tuple[str, ...], tmp_path: Path
) -> None:
    run = finished_run(tmp_path, "--data-dir", image_set, *tiny, *HEAD, "--augment", "true")
    checkpoint = torch.load(
        tmp_path / "output" / "checkpoints" / train.CHECKPOINT_FILE, map_location="cpu", weights_only=True
    )
    assert set(checkpoint["model"]) == {"fc.weight", "fc.bias"}
    assert run.metrics["epoch"] == [1, 2, 3]


# --- through the SageMaker training toolkit ---------------------------------------------------------------------------


def test_the_pipelines_extraction_job_and_a_trial_share_the_features_through_the_toolkit(tmp_path: Path) -> None:
    """The extraction step and a tuning trial as SageMaker runs them: the real training toolkit, the code archive
    the stack uploads, the hyperparameters JSON-encoded as the pipeline sends them (a folder stands for S3)."""
    from torchvision import models

    images = make_image_set(tmp_path / "dogImages")
    weights = tmp_path / "weights" / "resnet18-f37072fd.pth"
    weights.parent.mkdir()
    torch.save(models.resnet18().state_dict(), weights)
    channels = {"training": images, "pretrained": weights.parent}
    store = tmp_path / "store"
    static = {"backbone": "resnet18", "image_size": 32, "trainable": "head", "epochs": 2, "patience": 0}
    static |= {"workers": 0, "feature_store": f"file://{store}"}
    archive = training_job.build_code_archive(tmp_path / "build")

    logs = []
    for name, hyperparameters in (
        ("extract", {**static, "extract_features": True}),
        ("trial", {**static, "learning_rate": 0.02, "batch_size": 8}),
    ):
        job = training_job.lay_out_job(tmp_path / name, channels, hyperparameters, archive)
        process = training_job.start_job(job)
        try:
            log, _ = process.communicate(timeout=300)
        finally:
            training_job.stop_process(process)
        assert process.returncode == 0, log[-3000:]
        logs.append(log)
    (key,) = keys(store)
    assert f"stored at {store}/{key}/" in logs[0]
    assert re.findall(READ_LINE, logs[1]) == [(str(TRAIN_IMAGES), str(VALID_IMAGES), f"{store}/{key}/")]
    assert not re.search(CACHED_LINE, logs[1])


# --- under torchrun: each rank keeps its shard ------------------------------------------------------------------------


def test_each_rank_keeps_its_own_shard_of_the_stored_features(tmp_path: Path) -> None:
    """Rank 1 of 2: the train shard DistributedSampler gives it (padded to equal length), every other valid image."""
    store, inputs = LocalFeatureStore(tmp_path), key_inputs()
    sizes = {"train": 7, "valid": 5}
    stored = {
        split: SplitFeatures(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 4), torch.arange(n) % 3)
        for split, n in sizes.items()
    }
    store.write(inputs.key, stored, inputs)
    datasets = {split: TensorDataset(torch.zeros(n)) for split, n in sizes.items()}
    samplers = {
        "train": DistributedSampler(datasets["train"], num_replicas=2, rank=1, shuffle=False),
        "valid": ShardSampler(sizes["valid"], rank=1, world_size=2),
    }
    loaders = {split: DataLoader(datasets[split], sampler=samplers[split]) for split in sizes}
    found = train.read_shared(train.SharedFeatures(store, inputs, write=False), loaders, torch.device("cpu"))
    assert found["train"].features[:, 0].tolist() == [1, 3, 5, 0]  # DistributedSampler pads with the first
    assert found["valid"].features[:, 0].tolist() == [1, 3]
    assert found["valid"].targets.tolist() == [1, 0]


def test_two_processes_read_their_shards_from_the_store_and_train_one_head(
    tiny: tuple[str, ...], tmp_path: Path
) -> None:
    images = make_image_set(tmp_path / "dogImages", per_split={"train": 12, "valid": 5, "test": 3})
    store = tmp_path / "store"
    outputs = ("--model-dir", tmp_path / "model", "--output-dir", tmp_path / "output")
    extraction = train_here(
        "--data-dir", images, *tiny, *HEAD, "--feature-store", store, *outputs, "--extract-features", "true"
    )
    assert extraction.returncode == 0, extraction.stderr
    run = train_under_torchrun("--data-dir", images, *tiny, *HEAD, "--feature-store", store, *outputs, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    read = re.findall(rf"^\[rank (\d)\] {READ_LINE}", run.stdout, re.MULTILINE)
    # train: 36 images in two shards of 18; valid: 15 images, 8 and 7.
    assert sorted(rank_and_counts[:3] for rank_and_counts in read) == [("0", "18", "8"), ("1", "18", "7")]
    assert not re.search(CACHED_LINE, run.stdout)
    assert "stored the features" not in run.stdout, "under torchrun nothing is stored"
    digests = dict(re.findall(r"^\[rank (\d)\] final weights sha256 ([0-9a-f]{64})$", run.stdout, re.MULTILINE))
    assert sorted(digests) == ["0", "1"] and digests["0"] == digests["1"]
    assert run.metrics["epoch"] == [1, 2, 3]
