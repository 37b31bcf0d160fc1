"""The shared feature store: the frozen backbone's features of the train and valid splits, extracted once and
read by every head-only run (tuning trials, the final job) that would compute the same features.

A store is a folder (``--feature-store DIR`` or ``file://DIR``) or an S3 prefix (``s3://bucket/prefix``) holding
one folder per content-addressed key::

    <store>/<key>/train.pt       {"features": float32 [images, features], "targets": int64 [images]}, dataset order
    <store>/<key>/valid.pt
    <store>/<key>/COMPLETE       JSON: what the key was made from, and the SHA-256 of each split's file

``COMPLETE`` is written last: a key without it is absent, whatever else is there. Readers check each file
against its SHA-256, so two writers racing on one key (each S3 PUT replaces a whole object) can at worst
make a reader extract for itself, never train on a mix.

The key is the SHA-256 of everything that decides the features (``KeyInputs.key``): the images of both splits
(relative paths, class folders and sizes), the backbone's name and weights (the SHA-256 of its state), the
input configuration (image and resize sizes, normalization), the autocast dtype, the torch and torchvision
versions, and the feature code: ``FEATURES_FORMAT`` and the source of the modules that turn files into
features. A new data set, backbone, weights, image size or code gives a new key; nothing is ever overwritten
with other features, so there is nothing to invalidate.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision

# Bump when what is stored changes shape or meaning (the source hash below covers changes to the code itself).
FEATURES_FORMAT = 1
SPLITS = ("train", "valid")
MARKER = "COMPLETE"
# The modules whose code decides what the backbone sees and what is stored: decoding (images.py, data.py),
# transforms and network (model.py), and this file.
FEATURE_CODE = ("images.py", "data.py", "model.py", "feature_store.py")
CODE_DIR = Path(__file__).resolve().parent


class FeatureStoreError(Exception):
    """The store cannot be read or written; the message names it and says why."""


@dataclass(frozen=True)
class SplitFeatures:
    """One split's features, all its images in dataset order, on the CPU."""

    features: torch.Tensor
    targets: torch.Tensor


def image_listing(samples: Sequence[tuple[str, int]], root: Path) -> str:
    """SHA-256 of a split's images as the data set lists them: relative path (so class folder), class index, size."""
    digest = hashlib.sha256()
    for path, target in samples:
        relative = Path(path).relative_to(root).as_posix()
        digest.update(f"{relative}\0{target}\0{os.path.getsize(path)}\n".encode())
    return digest.hexdigest()


def code_digest(directory: Path = CODE_DIR) -> str:
    digest = hashlib.sha256()
    for name in FEATURE_CODE:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class KeyInputs:
    """Everything that decides the stored features; ``key`` is their SHA-256."""

    images: dict[str, str]  # split -> image_listing
    backbone: str
    backbone_sha256: str
    config: dict  # model.ModelConfig's input side: image_size, resize_size, mean, std
    amp: str  # the autocast dtype, or "fp32"
    torch: str = torch.__version__
    torchvision: str = torchvision.__version__
    code_sha256: str = ""
    format: int = FEATURES_FORMAT

    def __post_init__(self) -> None:
        if not self.code_sha256:
            object.__setattr__(self, "code_sha256", code_digest())

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


# --- stores -----------------------------------------------------------------------------------------------------------


def _serialized(split: SplitFeatures) -> bytes:
    buffer = io.BytesIO()
    torch.save({"features": split.features.cpu().contiguous(), "targets": split.targets.cpu()}, buffer)
    return buffer.getvalue()


def _deserialized(data: bytes, expected_sha256: str, where: str) -> SplitFeatures:
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise FeatureStoreError(f"{where} does not match its SHA-256 in {MARKER} (rewritten by another writer?)")
    loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return SplitFeatures(loaded["features"], loaded["targets"])


def _marker(files: dict[str, bytes], inputs: KeyInputs) -> bytes:
    sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    return json.dumps({"inputs": asdict(inputs), "sha256": sha256}, indent=2).encode()


class FeatureStore:
    """Where shared features live: ``read`` gives None for a key that is not complete; ``write`` writes one whole.

    Subclasses give two primitives, each raising ``FeatureStoreError`` when the store fails: get an object
    (None if absent) and put one.
    """

    uri: str

    def _get(self, key: str, name: str) -> bytes | None:
        raise NotImplementedError

    def _put(self, key: str, name: str, data: bytes) -> None:
        raise NotImplementedError

    def read(self, key: str) -> dict[str, SplitFeatures] | None:
        marker = self._get(key, MARKER)
        if marker is None:
            return None
        try:
            sha256 = json.loads(marker)["sha256"]
        except (ValueError, KeyError, TypeError) as err:
            raise FeatureStoreError(f"{self.uri}{key}/{MARKER} is not a marker this code wrote ({err})") from err
        splits = {}
        for split in SPLITS:
            data = self._get(key, f"{split}.pt")
            if data is None:
                raise FeatureStoreError(f"{self.uri}{key}/ has {MARKER} but no {split}.pt")
            splits[split] = _deserialized(data, sha256[f"{split}.pt"], f"{self.uri}{key}/{split}.pt")
        return splits

    def write(self, key: str, splits: dict[str, SplitFeatures], inputs: KeyInputs) -> None:
        files = {f"{split}.pt": _serialized(splits[split]) for split in SPLITS}
        for name, data in files.items():
            self._put(key, name, data)
        self._put(key, MARKER, _marker(files, inputs))  # last: the key is complete only now


class LocalFeatureStore(FeatureStore):
    """A folder; each file written to a temporary name, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"{root.as_posix().rstrip('/')}/"

    def _get(self, key: str, name: str) -> bytes | None:
        path = self.root / key / name
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError as err:
            raise FeatureStoreError(f"cannot read {path}: {err}") from err

    def _put(self, key: str, name: str, data: bytes) -> None:
        folder = self.root / key
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as partial:
                partial.write(data)
            os.replace(partial.name, folder / name)
        except OSError as err:
            raise FeatureStoreError(f"cannot write {folder / name}: {err}") from err


class S3FeatureStore(FeatureStore):
    """An S3 prefix, through boto3 (in the SageMaker PyTorch containers); the bucket's default encryption applies."""

    def __init__(self, bucket: str, prefix: str, client=None) -> None:
        folder = prefix.strip("/")
        self.bucket, self.prefix = bucket, f"{folder}/" if folder else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3  # only where an S3 store is used: a laptop run needs no boto3

            # The job's region (the toolkit sets SAGEMAKER_REGION from the sagemaker_region hyperparameter): in a
            # VPC the S3 gateway endpoint serves only its own region's S3.
            env = os.environ
            region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or env.get("SAGEMAKER_REGION")
            self._client = boto3.client("s3", region_name=region)
        return self._client

    def _get(self, key: str, name: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"{self.uri}{key}/{name}"
        try:
            return self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}{key}/{name}")["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise FeatureStoreError(f"cannot read {where}: {err}") from err
        except BotoCoreError as err:
            raise FeatureStoreError(f"cannot read {where}: {err}") from err

    def _put(self, key: str, name: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{key}/{name}", Body=data)
        except (BotoCoreError, ClientError) as err:
            raise FeatureStoreError(f"cannot write {self.uri}{key}/{name}: {err}") from err


def open_store(uri: str) -> FeatureStore | None:
    """The store ``uri`` names: ``none`` (no store), ``s3://bucket/prefix``, ``file://DIR`` or a folder path."""
    if uri == "none":
        return None
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise FeatureStoreError(f"--feature-store {uri}: an S3 store needs a bucket, as in s3://bucket/features/")
        return S3FeatureStore(bucket, prefix)
    if "://" in uri and not uri.startswith("file://"):
        raise FeatureStoreError(f"--feature-store {uri}: expected none, s3://bucket/prefix, file://DIR or a folder")
    return LocalFeatureStore(Path(uri.removeprefix("file://")))
