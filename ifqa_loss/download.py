"""Fetching a registered model's weight file: Google Drive through ``gdown``, or plain HTTP(S).

Transport only. :func:`ifqa_loss.weights.download_weights` decides when to download, holds the
lock, checks what arrived and moves it into the cache; this module moves bytes to a file and
says what a file looks like.

- ``$IFQA_WEIGHTS_URL``: a base URL replacing every source (a mirror, a cluster's file
  server): the file is ``<base>/<weight file name>``, fetched with a plain GET.
- ``$IFQA_OFFLINE`` (``1``, ``true``, ``yes``): no download at all.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models.registry import ModelConfig

URL_VAR = "IFQA_WEIGHTS_URL"
OFFLINE_VAR = "IFQA_OFFLINE"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


class DownloadError(FileNotFoundError):
    """Weights not on this machine that could not be downloaded: downloads are off, or the
    server or the network failed. A ``FileNotFoundError``, as when no weights are found."""


def offline() -> bool:
    """Whether ``$IFQA_OFFLINE`` turns downloads off."""
    return os.environ.get(OFFLINE_VAR, "").strip().lower() not in ("", "0", "false", "no", "off")


def mirror_url(cfg: ModelConfig) -> str | None:
    """``<$IFQA_WEIGHTS_URL>/<weight file>``, or None when the variable is not set."""
    base = os.environ.get(URL_VAR, "").strip()
    if not base:
        return None
    return base.rstrip("/") + "/" + urllib.parse.quote(cfg.weight_file)


def source_of(cfg: ModelConfig) -> str:
    """Where ``cfg``'s weights would be downloaded from, in words."""
    url = mirror_url(cfg) or cfg.url
    if url:
        return url
    return f"Google Drive file id {cfg.drive_id}"


def by_hand(cfg: ModelConfig) -> str:
    """Where to download ``cfg``'s weight file from in a browser."""
    if cfg.drive_id:
        return (
            f"https://drive.google.com/uc?id={cfg.drive_id} (Google Drive file id {cfg.drive_id})"
        )
    return str(cfg.url)


def fetch(cfg: ModelConfig, dest: Path, *, progress: bool) -> str:
    """Download ``cfg``'s weight file to ``dest`` and return where it came from.

    ``progress``: a progress bar (size, rate) on stderr. A Google Drive download resumes a
    partial one left beside ``dest`` by an interrupted run.

    Raises:
        DownloadError: the server or the network failed, or ``gdown`` is missing.
    """
    url = mirror_url(cfg) or cfg.url
    if url:
        _http_get(url, dest, progress=progress, label=cfg.weight_file)
        return url
    _drive_get(str(cfg.drive_id), dest, progress=progress)
    return f"Google Drive file id {cfg.drive_id}"


def _drive_get(file_id: str, dest: Path, *, progress: bool) -> None:
    try:
        import gdown
    except ImportError as e:
        raise DownloadError(
            f"downloading Google Drive file id {file_id} needs the gdown package "
            f"(pip install gdown), or set ${URL_VAR} to a mirror"
        ) from e
    try:
        out = gdown.download(id=file_id, output=str(dest), quiet=not progress, resume=True)
    except Exception as e:
        raise DownloadError(
            f"the Google Drive download of file id {file_id} failed: "
            f"{type(e).__name__}: {str(e).strip()}"
        ) from e
    if out is None or not dest.is_file():  # older gdown versions return None on failure
        raise DownloadError(f"the Google Drive download of file id {file_id} returned no file")


def _http_get(url: str, dest: Path, *, progress: bool, label: str) -> None:
    from tqdm import tqdm

    from . import __version__

    req = urllib.request.Request(url, headers={"User-Agent": f"ifqa-loss/{__version__}"})
    got, total = 0, None
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as r, open(dest, "wb") as f:
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
                file=sys.stderr,
            ) as bar:
                while chunk := r.read(_CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot download {url}: {reason}") from e
    if total is not None and got != total:
        raise DownloadError(
            f"the transfer from {url} stopped after {got:,} of {total:,} bytes; try again"
        )


def looks_like_html(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a web page."""
    text = head.lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text


def describe(path: str | os.PathLike) -> str:
    """What a downloaded file is: its size, kind and first bytes (for error messages)."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(4096)
        f.seek(max(0, size - 65_557))  # a zip's end record lies in its last 64 KiB + 22 bytes
        tail = f.read()
    if not head:
        kind = "an empty file"
    elif looks_like_html(head):
        title = re.search(rb"<title[^>]*>([^<]{1,200})", head, re.IGNORECASE)
        named = f" titled {title.group(1).decode('utf-8', 'replace').strip()!r}" if title else ""
        kind = f"an HTML page{named}"
    elif head.startswith(b"PK\x03\x04") and b"PK\x05\x06" not in tail:
        kind = "the start of a zip archive (torch's format) without its end: cut short"
    elif head.startswith(b"PK\x03\x04"):
        kind = "a zip archive, the format of torch checkpoints"
    elif head[:1] == b"\x80":
        kind = "a pickle, the legacy torch format"
    elif head[8:10] == b'{"':
        kind = "a safetensors file"
    else:
        kind = "a file of no format this package reads"
    return f"{size:,} bytes, {kind}, starting {head[:16]!r}"
