"""Atomic file writing: readers never see a half-written file; a failed write leaves none."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

# Image files the command line picks up from folders and globs (``ifqa score``, ``ifqa compare``).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the finished file onto ``path`` in one rename.

    The temporary file lives in the destination folder (so the rename is atomic), is flushed to
    disk before the rename, gets the permissions a plain ``open()`` would give (``mkstemp``
    would leave it readable by its owner only), and is removed if ``write`` fails.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def atomic_write_image(
    path: str | os.PathLike, image, ext: str = ".png", params: list[int] | None = None
) -> Path:
    """Encode an 8-bit BGR array with OpenCV (``ext``: ".png", ".jpg", ...), write atomically."""
    import cv2

    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:  # pragma: no cover - encoding an 8-bit BGR array does not fail
        raise ValueError(f"could not encode {path} as {ext}")
    data = buf.tobytes()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines untranslated) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)
