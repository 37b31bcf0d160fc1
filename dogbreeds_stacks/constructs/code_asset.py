"""The training/ folder as one CDK asset in the tar.gz form the SageMaker framework containers expect.

A CDK directory asset is a zip; ``sagemaker_submit_directory`` wants a tar.gz. The archive is built
here, deterministically (sorted entries, fixed timestamps and owners, no gzip timestamp), so its
hash, and with it the asset's S3 key and the templates, change only when the code changes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from dogbreeds_stacks.contract import CODE_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO_ROOT / "build"
_EXCLUDED_DIRS = {"__pycache__"}
_EXCLUDED_SUFFIXES = {".pyc", ".pyo"}
_FIXED_MTIME = 1_577_836_800  # 2020-01-01: tar readers warn about a zero timestamp


def code_files(source: Path = CODE_DIR) -> list[Path]:
    """The files that ship, relative to ``source``, sorted: no caches, no hidden files."""
    files = []
    for path in source.rglob("*"):
        rel = path.relative_to(source)
        if any(part in _EXCLUDED_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in _EXCLUDED_SUFFIXES:
            files.append(rel)
    return sorted(files)


def build_code_archive(source: Path = CODE_DIR, build_dir: Path = BUILD_DIR) -> Path:
    """Write ``<build_dir>/training-code-<sha>.tar.gz`` (reused when it exists) and return its path."""
    data = _archive_bytes(source)
    digest = hashlib.sha256(data).hexdigest()[:16]
    target = build_dir / f"training-code-{digest}.tar.gz"
    if not target.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(target)  # atomic: concurrent synths write the same bytes
    return target


def _archive_bytes(source: Path) -> bytes:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in code_files(source):
            content = (source / rel).read_bytes()
            info = tarfile.TarInfo(rel.as_posix())
            info.size = len(content)
            info.mtime = _FIXED_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class TrainingCodeAsset(Construct):
    """The code package in the CDK assets bucket; ``s3_url`` is what ``sagemaker_submit_directory`` takes."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.asset = s3_assets.Asset(self, "Archive", path=str(build_code_archive()))

    @property
    def s3_url(self) -> str:
        return self.asset.s3_object_url

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """s3:GetObject on this one object (CDK's Asset.grant_read would add s3:List* and GetObject*)."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[self.asset.bucket.arn_for_objects(self.asset.s3_object_key)],
            )
        )
