"""Aligned face files as tensors and the held-out split."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .._io import list_images
from ..preprocess import resize_map


def load_face(path: str | os.PathLike, size: int = 512) -> torch.Tensor:
    """Read an aligned face as (3, size, size) float32 RGB in [0, 1] on the 8-bit grid.

    OpenCV decoding (alpha dropped, as ``cv2.IMREAD_COLOR`` does), then an antialiased bilinear
    resize to ``size`` when needed, then rounding to 8 bits (as a saved 512 face would be).
    """
    import cv2

    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
    x = resize_map(x, size)
    return (x.clamp(0, 1) * 255.0).round() / 255.0


class FaceLists(Protocol):
    """Which faces of a root are for training (globs), held out (files) and left out (globs):
    the ``data`` section of a training config."""

    train: Sequence[str]
    val: Sequence[str]
    exclude: Sequence[str]


def split_faces(root: str | os.PathLike, cfg: FaceLists) -> tuple[list[Path], list[Path]]:
    """``(train, val)`` file lists; held-out and excluded files never appear in training.

    Raises:
        FileNotFoundError: the root or a listed held-out file does not exist, or no training
            image matched.
        ValueError: a held-out file also matches ``exclude``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"faces folder not found: {root} (set data.root, --data-root or $IFQA_FACES_DIR)"
        )
    val = [root / v for v in cfg.val]
    missing = [str(v) for v in val if not v.is_file()]
    if missing:
        raise FileNotFoundError(f"held-out face(s) not found: {missing[:5]}")
    excluded = {p.resolve() for p in list_images(root, cfg.exclude)} if cfg.exclude else set()
    if clash := [str(v) for v in val if v.resolve() in excluded]:
        raise ValueError(f"held-out face(s) also match data.exclude: {clash[:5]}")
    held = {v.resolve() for v in val} | excluded
    train = [p for p in list_images(root, cfg.train) if p.resolve() not in held]
    if not train:
        raise FileNotFoundError(f"no training images under {root} match {cfg.train}")
    return train, val
