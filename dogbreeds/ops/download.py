"""Resumable HTTP(S) downloads into a cache folder, with a progress bar.

The bytes go to ``<name>.part`` first; a later run (or a retry after a dropped connection) asks for
the rest with ``Range: bytes=<have>-``. A server that ignores the range (200) restarts the file; a
206 that starts elsewhere than asked restarts it too. Only a complete file gets its final name.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from pathlib import Path

from dogbreeds.ops.errors import OpsError, UsageError
from dogbreeds.ops.progress import Progress

CHUNK = 1 << 20
TIMEOUT_SECONDS = 60
RETRIES = 3
USER_AGENT = "dogbreeds-cli"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")


class DownloadError(OpsError):
    """The download failed; the message says what to do (the .part file is kept for a resume)."""


def check_url(url: str) -> str:
    if not url.lower().startswith(("https://", "http://")):
        raise UsageError(f"{url}: only http:// and https:// URLs can be downloaded")
    return url


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: Path, *, label: str | None = None, retries: int = RETRIES) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); returns ``dest``."""
    check_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    label = label or dest.name
    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (the scheme is checked above)
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)  # noqa: S310
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:
                # Nothing after byte `have`: complete if the server's size is what we hold.
                total = _UNSATISFIED_RANGE.fullmatch(err.headers.get("Content-Range", "") or "")
                if total and int(total.group(1)) == have:
                    part.replace(dest)
                    return dest
                part.unlink()
                continue
            raise DownloadError(f"GET {url} answered HTTP {err.code} {err.reason}; check the URL.") from None
        except (urllib.error.URLError, OSError) as err:
            failures += 1
            if failures > retries:
                raise DownloadError(f"could not download {url}: {_reason(err)}. Run the command again.") from None
            continue

        with response:
            mode, total = _plan(response, have, part)
            if mode is None:
                failures += 1
                if failures > retries:
                    raise DownloadError(f"{url} answered a byte range other than the one asked for; run it again.")
                continue
            start = have if mode == "ab" else 0
            progress = Progress(label, total, initial=start)
            try:
                with part.open(mode) as out:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        progress.update(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                progress.close()
                failures += 1
                if failures > retries:
                    raise DownloadError(
                        f"the download of {url} was interrupted ({_reason(err)}); {part} keeps what arrived: "
                        "run the command again to resume."
                    ) from None
                continue
            progress.close()

        size = part.stat().st_size
        if total is not None and size < total:
            failures += 1
            if failures > retries:
                raise DownloadError(f"the download of {url} stopped at {size} of {total} bytes; run it again.")
            continue
        if total is not None and size > total:
            part.unlink()
            raise DownloadError(f"the download of {url} is longer than the server announced; run it again.")
        part.replace(dest)
        return dest


def _plan(response, have: int, part: Path) -> tuple[str | None, int | None]:
    """How to write this response: ("ab", total) to append, ("wb", total) to start over, (None, _) to ask again."""
    if response.status == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "") or "")
        if not match or int(match.group(1)) != have:
            part.unlink(missing_ok=True)  # a range we did not ask for: start from the beginning
            return None, None
        total = None if match.group(3) == "*" else int(match.group(3))
        return "ab", total
    length = response.headers.get("Content-Length")
    return "wb", int(length) if length and length.isdigit() else None


def _reason(err: BaseException) -> str:
    return str(getattr(err, "reason", None) or err or type(err).__name__)
