"""upload-data and upload-weights against moto's S3 and a loopback download server."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import boto3
import pytest

from dogbreeds.ops import weights
from dogbreeds.ops.errors import EXIT_FAILED, EXIT_USAGE
from tests.dogbreeds.conftest import BUCKET
from tests.dogbreeds.fakes import REGION, serving

PREFIX = "datasets/dogImages/"
LAYOUT = {
    "train/001.Affenpinscher/a1.jpg": b"a" * 10,
    "train/001.Affenpinscher/a2.jpg": b"a" * 11,
    "train/002.Afghan_hound/b1.jpg": b"b" * 12,
    "valid/001.Affenpinscher/a3.jpg": b"a" * 13,
    "valid/002.Afghan_hound/b2.JPG": b"b" * 14,
    "test/001.Affenpinscher/a4.jpg": b"a" * 15,
    "test/002.Afghan_hound/b3.jpg": b"b" * 16,
}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def zipped(files: dict[str, bytes], top: str = "dogImages/") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(top + name, data)
        zf.writestr("__MACOSX/dogImages/._junk", b"resource fork")
    return buffer.getvalue()


def s3_objects(prefix: str = PREFIX) -> dict[str, int]:
    s3 = boto3.client("s3", region_name=REGION)
    return {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])}


# --- upload-data ---------------------------------------------------------------------------------------


def test_downloads_extracts_uploads_and_verifies(bucket, run_cli, tmp_path):
    cache = tmp_path / "cache"
    with serving(zipped(LAYOUT)) as server:
        result = run_cli("upload-data", "--url", server.url + "/dogImages.zip", "--cache-dir", str(cache))
        assert result.code == 0, result.err
        assert s3_objects() == {PREFIX + k: len(v) for k, v in LAYOUT.items()}
        assert "2 classes; train 3, valid 2, test 2 images" in result.out
        assert "Uploading to s3://dogbreeds-artifacts-test/datasets/dogImages/: 7 files" in result.out
        for line in ("train        3       3  ok", "valid        2       2  ok", "test         2       2  ok"):
            assert line in result.out
        assert "100.0%" in result.err  # the download's progress bar

        # Again: the cached archive and extraction are reused, and every object is skipped.
        again = run_cli("upload-data", "--url", server.url + "/dogImages.zip", "--cache-dir", str(cache))
    assert again.code == 0
    assert len(server.requests) == 1
    assert "Using the downloaded archive" in again.out and "Using the extracted files" in again.out
    assert ": 0 files (0 B); 7 already there with the same size" in again.out


def test_a_download_that_is_not_a_zip_is_refused_and_removed(bucket, run_cli, tmp_path):
    with serving(b"<html><body>Access denied</body></html>") as server:
        result = run_cli("upload-data", "--url", server.url + "/dogImages.zip", "--cache-dir", str(tmp_path))
    assert result.code == EXIT_FAILED
    assert "is not a zip archive (it starts with b'<html><body>Access denied" in result.err
    assert not (tmp_path / "dogImages.zip").exists()
    assert s3_objects() == {}


def test_source_folder_skips_objects_already_there(bucket, run_cli, tmp_path):
    root = write_tree(tmp_path / "data" / "dogImages", LAYOUT)
    (root / "train" / "001.Affenpinscher" / ".DS_Store").write_bytes(b"x")
    (root / "train" / "001.Affenpinscher" / "notes.txt").write_bytes(b"x")
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "train/001.Affenpinscher/a1.jpg", Body=b"a" * 10)  # same size
    s3.put_object(Bucket=BUCKET, Key=PREFIX + "train/001.Affenpinscher/a2.jpg", Body=b"old")  # other size

    result = run_cli("upload-data", "--source", str(tmp_path / "data"))  # the parent of dogImages/ works too
    assert result.code == 0, result.err
    assert ": 6 files (81 B); 1 already there with the same size" in result.out
    assert s3_objects()[PREFIX + "train/001.Affenpinscher/a2.jpg"] == 11
    assert PREFIX + "train/001.Affenpinscher/notes.txt" not in s3_objects()


def test_extra_objects_in_s3_fail_the_check_until_deleted(bucket, run_cli, tmp_path):
    root = write_tree(tmp_path / "dogImages", LAYOUT)
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key=PREFIX + "valid/001.Affenpinscher/stale.jpg", Body=b"s"
    )
    result = run_cli("upload-data", "--source", str(root))
    assert result.code == EXIT_FAILED
    assert "valid        2       3  MISMATCH" in result.out
    assert "S3 holds objects the local data set lacks: --delete removes them" in result.err

    result = run_cli("upload-data", "--source", str(root), "--delete")
    assert result.code == 0, result.err
    assert PREFIX + "valid/001.Affenpinscher/stale.jpg" not in s3_objects()
    assert "Deleted 1 objects" in result.out


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("test/002.Afghan_hound/b3.jpg", "the test split has class folders with no image file: 002.Afghan_hound"),
        ("valid", "lacks valid/: the data set needs train/, valid/ and test/ folders"),
    ],
)
def test_layout_problems_are_named(bucket, run_cli, tmp_path, remove, message):
    root = write_tree(tmp_path / "dogImages", LAYOUT)
    import shutil

    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    result = run_cli("upload-data", "--source", str(root))
    assert result.code == EXIT_FAILED
    assert message in result.err
    assert s3_objects() == {}


def test_classes_must_match_across_splits(bucket, run_cli, tmp_path):
    root = write_tree(tmp_path / "dogImages", {**LAYOUT, "valid/003.Airedale/c.jpg": b"c"})
    result = run_cli("upload-data", "--source", str(root))
    assert result.code == EXIT_FAILED
    assert "the valid split's classes differ from train's: it adds 003.Airedale" in result.err


# --- upload-weights ------------------------------------------------------------------------------------


def weights_file(data: bytes, backbone: str = "resnet50") -> str:
    return f"{backbone}-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def test_uploads_torchvision_weights_under_their_file_name(bucket, run_cli, tmp_path, monkeypatch):
    data = b"pretend state dict"
    name = weights_file(data)
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_object(Bucket=BUCKET, Key="pretrained/resnet50-old.pth", Body=b"x")  # would make train.py refuse
    s3.put_object(Bucket=BUCKET, Key="pretrained/resnet18-f37072fd.pth", Body=b"x")  # another backbone: kept
    with serving(data) as server:
        monkeypatch.setitem(weights.TORCHVISION_WEIGHTS, "resnet50", f"{server.url}/models/{name}")
        result = run_cli("upload-weights", "--cache-dir", str(tmp_path))
        again = run_cli("upload-weights", "--cache-dir", str(tmp_path))
    assert result.code == 0, result.err
    assert s3_objects("pretrained/") == {f"pretrained/{name}": len(data), "pretrained/resnet18-f37072fd.pth": 1}
    assert f"Deleted s3://{BUCKET}/pretrained/resnet50-old.pth" in result.out
    assert again.code == 0 and "is already there" in again.out
    assert len(server.requests) == 1  # the second run used the cached file


def test_a_damaged_weights_download_is_removed(bucket, run_cli, tmp_path, monkeypatch):
    name = weights_file(b"the real weights")
    with serving(b"something else") as server:
        monkeypatch.setitem(weights.TORCHVISION_WEIGHTS, "resnet34", f"{server.url}/models/{name}")
        result = run_cli("upload-weights", "--backbone", "resnet34", "--cache-dir", str(tmp_path))
    assert result.code == EXIT_FAILED
    assert f"its SHA-256 does not start with {name[9:17]}" in result.err
    assert not (tmp_path / "weights" / name).exists()
    assert s3_objects("pretrained/") == {}


def test_a_local_weights_file_is_uploaded_with_a_warning(bucket, run_cli, tmp_path):
    local = tmp_path / "mine.pth"
    local.write_bytes(b"fine-tuned elsewhere")
    result = run_cli("upload-weights", "--backbone", "resnet18", "--file", str(local))
    assert result.code == 0, result.err
    assert "is not torchvision's resnet18-f37072fd.pth" in result.err
    assert s3_objects("pretrained/") == {"pretrained/resnet18-f37072fd.pth": len(local.read_bytes())}
    assert run_cli("upload-weights", "--file", str(tmp_path / "nope.pth")).code == EXIT_USAGE


# --- --json --------------------------------------------------------------------------------------------


def test_upload_data_json_is_the_result_alone_on_stdout(bucket, run_cli, tmp_path):
    root = write_tree(tmp_path / "dogImages", LAYOUT)
    result = run_cli("upload-data", "--source", str(root), "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer == {
        "bucket": BUCKET,
        "prefix": PREFIX,
        "source": str(root),
        "classes": 2,
        "uploaded": 7,
        "uploaded_bytes": sum(len(v) for v in LAYOUT.values()),
        "skipped": 0,
        "deleted": 0,
        "splits": [
            {"split": "train", "local": 3, "in_s3": 3, "missing_in_s3": 0, "ok": True},
            {"split": "valid", "local": 2, "in_s3": 2, "missing_in_s3": 0, "ok": True},
            {"split": "test", "local": 2, "in_s3": 2, "missing_in_s3": 0, "ok": True},
        ],
        "ok": True,
    }
    assert "Uploading to s3://" in result.err  # what it did on the way


def test_upload_data_json_comes_with_a_failed_check_too(bucket, run_cli, tmp_path):
    root = write_tree(tmp_path / "dogImages", LAYOUT)
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key=PREFIX + "valid/001.Affenpinscher/stale.jpg", Body=b"s"
    )
    result = run_cli("upload-data", "--source", str(root), "--json")
    assert result.code == EXIT_FAILED
    answer = json.loads(result.out)
    assert answer["ok"] is False
    assert answer["splits"][1] == {"split": "valid", "local": 2, "in_s3": 3, "missing_in_s3": 0, "ok": False}
    assert result.err.splitlines()[-1].startswith("error: S3's listing does not match the local data set for valid.")


def test_upload_weights_json_is_the_result_alone_on_stdout(bucket, run_cli, tmp_path):
    local = tmp_path / "mine.pth"
    local.write_bytes(b"fine-tuned elsewhere")
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key="pretrained/resnet18-old.pth", Body=b"x")
    result = run_cli("upload-weights", "--backbone", "resnet18", "--file", str(local), "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == {
        "backbone": "resnet18",
        "source": str(local),
        "bucket": BUCKET,
        "key": "pretrained/resnet18-f37072fd.pth",
        "uri": f"s3://{BUCKET}/pretrained/resnet18-f37072fd.pth",
        "size": len(b"fine-tuned elsewhere"),
        "uploaded": True,
        "deleted": [f"s3://{BUCKET}/pretrained/resnet18-old.pth"],
    }
    assert "warning: " in result.err and "Uploading " in result.err
