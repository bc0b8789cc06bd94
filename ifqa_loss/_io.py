"""Writing result files: atomically (readers never see a half-written file; a failed write
leaves none), and as JSON that strict parsers accept."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _finite(obj: Any) -> Any:
    """``obj`` with NaN as None and infinities as the strings "inf" / "-inf"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def strict_json(doc: Any, **dumps_options: Any) -> str:
    """``doc`` as JSON that strict parsers read: Python's ``json`` would write the bare tokens
    ``NaN`` and ``Infinity``, which are not JSON. NaN (undefined, e.g. an agreement over no
    values) becomes ``null``; an infinity (the PSNR of an image identical to its reference)
    becomes the string ``"inf"`` or ``"-inf"``, which ``float()`` reads back. ``dumps_options``
    go to ``json.dumps`` (``ensure_ascii``, ``default``)."""
    return json.dumps(_finite(doc), indent=1, allow_nan=False, **dumps_options)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines untranslated) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def list_images(
    root: str | os.PathLike,
    patterns: tuple[str, ...] | list[str] = ("*",),
    skipped: list[str] | None = None,
) -> list[Path]:
    """The image files (extensions :data:`IMAGE_EXTS`) under ``root`` that match any of the glob
    ``patterns`` (``"*"``: the folder's own files; ``"**/*"``: its sub-folders' too), sorted,
    each once. Files and folders whose names start with a dot are passed over; the other
    matching files that are not images are added to ``skipped``, when a list is given."""
    base = Path(root)
    images: set[Path] = set()
    others: set[Path] = set()
    for pattern in patterns:
        for p in base.glob(pattern):
            if any(part.startswith(".") for part in p.relative_to(base).parts) or not p.is_file():
                continue
            (images if p.suffix.lower() in IMAGE_EXTS else others).add(p)
    if skipped is not None:
        skipped.extend(str(p) for p in sorted(others))
    return sorted(images)
