"""``dogbreeds upload-data``: the dogImages data set into the artifact bucket's dataset prefix.

Download the archive (resumable, cached), check it is a zip, extract it, check the layout that
train.py checks (train/, valid/ and test/ with the same class folders, none empty), upload what is not
in S3 yet (same key and size: skipped; the bucket encrypts with its KMS key by default), then compare
each split's count with S3's own listing. ``--json`` prints the result as one JSON object on stdout (what
it does on the way goes to stderr), also when the check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from boto3.s3.transfer import TransferConfig

from dogbreeds.ops.aws import Aws, Stacks
from dogbreeds.ops.config import Config
from dogbreeds.ops.download import check_url, download
from dogbreeds.ops.errors import OpsError, UsageError
from dogbreeds.ops.progress import Progress, human_bytes
from dogbreeds_stacks.contract import PREFIXES

DATASET_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
ARCHIVE_NAME = "dogImages.zip"
SPLITS = ("train", "valid", "test")
# What torchvision's ImageFolder reads as images (train.py's data set); other files are not uploaded.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_EXTRACTED_MARKER = ".extracted-from"
# The pool below uploads files in parallel; each upload runs in its worker (multipart only when large).
_TRANSFER = TransferConfig(use_threads=False)


class DataSetError(OpsError):
    """The data set's layout is not what train.py accepts; the message names the split and classes."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dogbreeds"


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str  # relative to the data set's root: <split>/<class>/<file>
    size: int


@dataclass
class LocalDataSet:
    root: Path
    classes: list[str]
    files: dict[str, list[LocalFile]] = field(default_factory=dict)

    def all_files(self) -> Iterator[LocalFile]:
        for split in SPLITS:
            yield from self.files[split]


# --- the archive ----------------------------------------------------------------------------------


def fetch_archive(url: str, cache_dir: Path) -> Path:
    """The cached archive, downloaded (or resumed) when not complete yet; refuses anything but a zip."""
    check_url(url)
    archive = cache_dir / ARCHIVE_NAME
    if archive.exists() and zipfile.is_zipfile(archive):
        print(f"Using the downloaded archive {archive}")
        return archive
    archive.unlink(missing_ok=True)
    print(f"Downloading {url}\n  to {archive} (an interrupted download resumes on the next run)")
    download(url, archive)
    if not zipfile.is_zipfile(archive):
        with archive.open("rb") as f:
            head = f.read(60)
        archive.unlink()
        raise OpsError(
            f"The download from {url} is not a zip archive (it starts with {head!r}); it was removed from the "
            "cache. Check the URL (--url), or download the archive yourself and use --source with its extracted "
            "folder."
        )
    return archive


def extract(archive: Path, into: Path) -> Path:
    """Extract the archive once (a marker records which one); returns the folder holding the data set."""
    stamp = f"{archive.stat().st_size} {archive.stat().st_mtime_ns}"
    marker = into / _EXTRACTED_MARKER
    if marker.exists() and marker.read_text() == stamp:
        print(f"Using the extracted files in {into}")
        return into
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not _junk(m.filename)]
            for m in members:
                name = PurePosixPath(m.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise OpsError(f"{archive} holds an unsafe path {m.filename!r}; it was not extracted.")
            progress = Progress(f"extracting {archive.name}", len(members), unit="files")
            for m in members:
                zf.extract(m, into)
                progress.update(1)
            progress.close()
    except (zipfile.BadZipFile, EOFError) as err:
        shutil.rmtree(into, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise OpsError(f"{archive} is damaged ({err}); it was removed: run the command again to download it.") from None
    marker.write_text(stamp)
    return into


def _junk(name: str) -> bool:
    return name.startswith("__MACOSX/") or any(part.startswith(".") for part in PurePosixPath(name).parts)


# --- the layout -------------------------------------------------------------------------------------


def find_root(folder: Path) -> Path:
    """``folder`` when it holds train/, valid/ and test/, else its one subfolder that does."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    if all((folder / s).is_dir() for s in SPLITS):
        return folder
    candidates = [d for d in sorted(folder.iterdir()) if d.is_dir() and all((d / s).is_dir() for s in SPLITS)]
    if len(candidates) == 1:
        return candidates[0]
    missing = ", ".join(f"{s}/" for s in SPLITS if not (folder / s).is_dir())
    raise DataSetError(
        f"{folder} lacks {missing}: the data set needs train/, valid/ and test/ folders, each with one folder "
        "per class (for example train/001.Affenpinscher/*.jpg)."
    )


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def scan(root: Path) -> LocalDataSet:
    """The data set under ``root``, after the checks train.py makes (same class folders, none empty)."""
    classes = {split: _class_folders(root / split) for split in SPLITS}
    for split in SPLITS:
        if not classes[split]:
            raise DataSetError(f"the {split} split has no class folders in {root / split}")
    for split in SPLITS[1:]:
        missing = sorted(set(classes["train"]) - set(classes[split]))
        extra = sorted(set(classes[split]) - set(classes["train"]))
        if missing or extra:
            differences = [f"{label} {', '.join(n)}" for label, n in (("lacks", missing), ("adds", extra)) if n]
            raise DataSetError(f"the {split} split's classes differ from train's: it {' and '.join(differences)}")
    dataset = LocalDataSet(root=root, classes=classes["train"])
    for split in SPLITS:
        files: list[LocalFile] = []
        empty = []
        for name in classes[split]:
            found = sorted(_images(root / split / name))
            if not found:
                empty.append(name)
            for path in found:
                files.append(LocalFile(path, path.relative_to(root).as_posix(), path.stat().st_size))
        if empty:
            raise DataSetError(f"the {split} split has class folders with no image file: {', '.join(empty)}")
        dataset.files[split] = files
    return dataset


def _images(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                yield Path(dirpath) / name


# --- S3 ---------------------------------------------------------------------------------------------


def list_objects(s3, bucket: str, prefix: str) -> dict[str, int]:
    """Every object under ``prefix`` (folder markers excluded): key -> size."""
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith("/"):
                found[obj["Key"]] = obj["Size"]
    return found


@dataclass(frozen=True)
class SyncResult:
    uploaded: int
    uploaded_bytes: int
    skipped: int
    deleted: int


def sync(s3, bucket: str, prefix: str, dataset: LocalDataSet, *, workers: int, delete: bool) -> SyncResult:
    """Upload the files S3 lacks (or holds with another size); with ``delete``, remove what is not local."""
    existing = list_objects(s3, bucket, prefix)
    todo = [f for f in dataset.all_files() if existing.get(prefix + f.key) != f.size]
    skipped = sum(1 for _ in dataset.all_files()) - len(todo)
    total = sum(f.size for f in todo)
    print(
        f"Uploading to s3://{bucket}/{prefix}: {len(todo)} files ({human_bytes(total)}); "
        f"{skipped} already there with the same size"
    )
    if todo:
        progress = Progress("uploading", total)
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(_upload, s3, bucket, prefix + f.key, f, progress) for f in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            progress.close()
            raise
        pool.shutdown(wait=True)
        progress.close()
    deleted = 0
    if delete:
        local = {prefix + f.key for f in dataset.all_files()}
        stale = sorted(set(existing) - local)
        for start in range(0, len(stale), 1000):
            batch = stale[start : start + 1000]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        deleted = len(stale)
        if deleted:
            print(f"Deleted {deleted} objects under s3://{bucket}/{prefix} that are not in the local data set")
    return SyncResult(uploaded=len(todo), uploaded_bytes=total, skipped=skipped, deleted=deleted)


def _upload(s3, bucket: str, key: str, f: LocalFile, progress: Progress) -> None:
    # The bucket's default encryption (its KMS key) applies; nothing to pass here.
    s3.upload_file(str(f.path), bucket, key, Config=_TRANSFER)
    progress.update(f.size)


@dataclass(frozen=True)
class SplitCheck:
    split: str
    local: int
    remote: int
    missing: int  # local files S3 lacks or holds with another size

    @property
    def ok(self) -> bool:
        return self.local == self.remote and not self.missing


def verify(s3, bucket: str, prefix: str, dataset: LocalDataSet) -> list[SplitCheck]:
    """Each split's local count against S3's listing, and the local files S3 lacks."""
    listed = list_objects(s3, bucket, prefix)
    checks = []
    for split in SPLITS:
        remote = sum(1 for k in listed if k.startswith(f"{prefix}{split}/"))
        missing = sum(1 for f in dataset.files[split] if listed.get(prefix + f.key) != f.size)
        checks.append(SplitCheck(split, len(dataset.files[split]), remote, missing))
    return checks


# --- the command ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DATASET_URL, help="where to download dogImages.zip (default: %(default)s)")
    parser.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="upload this already-extracted folder (holding train/, valid/ and test/) instead of downloading",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(),
        help="where the archive is downloaded and extracted (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=8, help="parallel uploads (default: %(default)s)")
    parser.add_argument(
        "--delete",
        action="store_true",
        help="also delete objects under the dataset prefix that are not in the local data set (default: keep)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object (the progress goes to stderr)"
    )


def run(args: argparse.Namespace, config: Config, aws: Aws) -> int:
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if not args.json:
        return upload(args, config, aws, None)
    answer: dict = {}
    try:
        with redirect_stdout(sys.stderr):  # stdout holds the JSON alone
            return upload(args, config, aws, answer)
    finally:
        if answer:
            print(json.dumps(answer, indent=2), flush=True)


def upload(args: argparse.Namespace, config: Config, aws: Aws, answer: dict | None) -> int:
    """The command; ``answer``, when given, is filled with the result as it is known (for --json)."""
    answer = {} if answer is None else answer
    stacks = Stacks(aws, config)
    # Find the bucket first: no point in downloading a gigabyte for a stack that is not there.
    bucket = stacks.output("foundation", "ArtifactBucketName")
    print(f"Artifact bucket: {bucket} (stack {config.names.stack('foundation')})")

    if args.source is not None:
        root = find_root(args.source)
    else:
        cache = args.cache_dir.expanduser()
        archive = fetch_archive(args.url, cache)
        root = find_root(extract(archive, cache / "extracted"))
    dataset = scan(root)
    counts = ", ".join(f"{s} {len(dataset.files[s])}" for s in SPLITS)
    print(f"Data set {root}: {len(dataset.classes)} classes; {counts} images")

    s3 = aws.client("s3")
    result = sync(s3, bucket, PREFIXES.datasets, dataset, workers=args.workers, delete=args.delete)
    print(f"Uploaded {result.uploaded} files ({human_bytes(result.uploaded_bytes)}); skipped {result.skipped}")

    checks = verify(s3, bucket, PREFIXES.datasets, dataset)
    answer.update(
        {
            "bucket": bucket,
            "prefix": PREFIXES.datasets,
            "source": str(root),
            "classes": len(dataset.classes),
            "uploaded": result.uploaded,
            "uploaded_bytes": result.uploaded_bytes,
            "skipped": result.skipped,
            "deleted": result.deleted,
            "splits": [
                {"split": c.split, "local": c.local, "in_s3": c.remote, "missing_in_s3": c.missing, "ok": c.ok}
                for c in checks
            ],
            "ok": all(c.ok for c in checks),
        }
    )
    print(f"Checked against the listing of s3://{bucket}/{PREFIXES.datasets}:")
    print(f"  {'split':<6} {'local':>7} {'in S3':>7}")
    for c in checks:
        note = "ok" if c.ok else "MISMATCH" + (f" ({c.missing} local files missing in S3)" if c.missing else "")
        print(f"  {c.split:<6} {c.local:>7} {c.remote:>7}  {note}")
    bad = [c for c in checks if not c.ok]
    if bad:
        extra = any(c.remote > c.local for c in bad)
        hint = " S3 holds objects the local data set lacks: --delete removes them." if extra else ""
        raise OpsError(
            f"S3's listing does not match the local data set for {', '.join(c.split for c in bad)}.{hint} "
            "Run the command again to upload what is missing."
        )
    print("Next: `dogbreeds upload-weights`, then `dogbreeds train`.")
    return 0
