"""Resumable downloads against a loopback HTTP server that honours (or ignores) Range."""

from __future__ import annotations

import random

import pytest

from dogbreeds.ops.download import DownloadError, download, partial_path
from tests.dogbreeds.fakes import serving

PAYLOAD = random.Random(7).randbytes(300_000)


def test_downloads_with_a_progress_bar(tmp_path, capsys):
    dest = tmp_path / "cache" / "file.bin"
    with serving(PAYLOAD) as server:
        assert download(server.url + "/file.bin", dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not partial_path(dest).exists()
    assert [r["range"] for r in server.requests] == [None]
    assert "100.0%" in capsys.readouterr().err


def test_resumes_a_partial_download_with_range(tmp_path):
    dest = tmp_path / "file.bin"
    partial_path(dest).write_bytes(PAYLOAD[:100_000])
    with serving(PAYLOAD) as server:
        download(server.url + "/file.bin", dest)
    assert [r["range"] for r in server.requests] == ["bytes=100000-"]
    assert dest.read_bytes() == PAYLOAD


def test_resumes_after_the_connection_drops(tmp_path):
    dest = tmp_path / "file.bin"
    with serving(PAYLOAD, cut_first_response_at=50_000) as server:
        download(server.url + "/file.bin", dest)
    assert [r["range"] for r in server.requests] == [None, "bytes=50000-"]
    assert dest.read_bytes() == PAYLOAD


def test_starts_over_when_the_server_ignores_range(tmp_path):
    dest = tmp_path / "file.bin"
    partial_path(dest).write_bytes(b"x" * 1000)  # not even the right bytes: must not survive
    with serving(PAYLOAD, honour_range=False) as server:
        download(server.url + "/file.bin", dest)
    assert [r["range"] for r in server.requests] == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD


def test_a_complete_partial_file_is_finished_on_416(tmp_path):
    dest = tmp_path / "file.bin"
    partial_path(dest).write_bytes(PAYLOAD)
    with serving(PAYLOAD) as server:
        download(server.url + "/file.bin", dest)
    assert [r["range"] for r in server.requests] == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_http_errors_name_the_status(tmp_path):
    with serving(PAYLOAD) as server, pytest.raises(DownloadError, match=r"/missing.bin answered HTTP 404 Not Found"):
        download(server.url + "/missing.bin", tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_refuses_other_schemes(tmp_path):
    with pytest.raises(Exception, match="only http:// and https:// URLs"):
        download("file:///etc/passwd", tmp_path / "f")


def test_progress_without_a_terminal_prints_a_line_per_tenth(capsys):
    from dogbreeds.ops.progress import Progress

    bar = Progress("uploading", 1000, unit="files")
    for _ in range(100):
        bar.update(10)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == [f"{p:.1f}%" for p in range(0, 101, 10)]
    assert lines[-1] == "uploading  100.0%  1000 / 1000 files"


def test_progress_of_an_unknown_size_prints_the_end(capsys):
    from dogbreeds.ops.progress import Progress

    bar = Progress("file.bin", None)
    bar.update(2_500_000)
    bar.close()
    assert capsys.readouterr().err == "file.bin  2.5 MB\n"
