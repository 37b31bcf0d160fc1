"""``dogbreeds upload-weights``: torchvision's ImageNet weights for a backbone into the ``pretrained`` prefix.

Training jobs then need no internet: the pipeline adds the ``pretrained`` channel when the prefix
holds ``<backbone>*.pth``, and train.py loads the one such file it finds there. The object is named as
torchvision names the file (``resnet50-11ad3fa6.pth``), whose hex part is the start of its SHA-256.
``--json`` prints the result as one JSON object on stdout (what it does on the way goes to stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path, PurePosixPath

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.dataset import default_cache_dir
from dogbreeds.ops.download import download
from dogbreeds.ops.errors import OpsError, UsageError
from dogbreeds.ops.progress import human_bytes
from dogbreeds_stacks.contract import PREFIXES

# The weights training/model.py's BACKBONES uses (torchvision's enums); a test keeps the two equal, so
# the CLI needs no torch to know them.
TORCHVISION_WEIGHTS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
}
_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention for the file name


def file_name(backbone: str) -> str:
    return PurePosixPath(TORCHVISION_WEIGHTS[backbone]).name


def expected_sha256_prefix(name: str) -> str | None:
    match = _HASH_PREFIX.search(name)
    return match.group(1) if match else None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone",
        choices=sorted(TORCHVISION_WEIGHTS),
        help="the backbone whose weights to upload (default: the setting training_backbone, resnet50 in cdk.json)",
    )
    parser.add_argument(
        "--file", type=Path, metavar="PATH", help="upload this .pth file instead of downloading torchvision's"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="where the download is kept (default: %(default)s)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object (the progress goes to stderr)"
    )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if not args.json:
        upload(args, config, aws)
        return 0
    with redirect_stdout(sys.stderr):  # stdout holds the JSON alone
        answer = upload(args, config, aws)
    print(json.dumps(answer, indent=2), flush=True)
    return 0


def upload(args: argparse.Namespace, config: Config, aws: Aws) -> dict:
    """The command; returns its result (for --json)."""
    backbone = args.backbone or config.settings.training_backbone
    if backbone not in TORCHVISION_WEIGHTS:
        raise UsageError(f"backbone {backbone!r}: accepted is one of {', '.join(TORCHVISION_WEIGHTS)}")
    if args.file is not None and not args.file.is_file():
        raise UsageError(f"--file {args.file}: no such file")

    bucket = Stacks(aws, config).output("foundation", "ArtifactBucketName")
    name = file_name(backbone)
    expected = expected_sha256_prefix(name)

    if args.file is not None:
        source = args.file
        if expected and not sha256(source).startswith(expected):
            print(
                f"warning: {source} is not torchvision's {name} (its SHA-256 does not start with {expected}); "
                f"uploading it under that name all the same",
                file=sys.stderr,
            )
    else:
        source = args.cache_dir.expanduser() / "weights" / name
        if not source.exists():
            print(f"Downloading {TORCHVISION_WEIGHTS[backbone]}")
            download(TORCHVISION_WEIGHTS[backbone], source)
        if expected and not sha256(source).startswith(expected):
            source.unlink()
            raise OpsError(
                f"The download of {TORCHVISION_WEIGHTS[backbone]} is damaged (its SHA-256 does not start with "
                f"{expected}); it was removed: run the command again."
            )

    s3 = aws.client("s3")
    key = PREFIXES.pretrained + name
    size = source.stat().st_size
    existing = {
        obj["Key"]: obj["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIXES.pretrained + backbone)
        for obj in page.get("Contents", [])
    }
    uploaded = not (existing.get(key) == size and args.file is None)
    if not uploaded:
        print(f"s3://{bucket}/{key} is already there ({human_bytes(size)})")
    else:
        print(f"Uploading {source} to s3://{bucket}/{key} ({human_bytes(size)})")
        s3.upload_file(str(source), bucket, key)

    # train.py wants exactly one <backbone>*.pth in the channel's folder: others would stop the job.
    others = sorted(k for k in existing if k != key and "/" not in k[len(PREFIXES.pretrained) :] and k.endswith(".pth"))
    for other in others:
        s3.delete_object(Bucket=bucket, Key=other)
        print(f"Deleted s3://{bucket}/{other}: train.py accepts one {backbone}*.pth (the bucket keeps old versions)")
    print(f"Training jobs with backbone {backbone} now read s3://{bucket}/{key} (no internet needed).")
    return {
        "backbone": backbone,
        "source": str(source),
        "bucket": bucket,
        "key": key,
        "uri": f"s3://{bucket}/{key}",
        "size": size,
        "uploaded": uploaded,
        "deleted": [f"s3://{bucket}/{other}" for other in others],
    }
