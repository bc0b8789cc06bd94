"""Inputs a score says nothing about: near-constant images, and crops without a face.

The discriminator scores whatever it is given; a flat colour gets a number like any face
(docs/robustness.md gives the figures). A flag tells
``ifqa score`` and ``ifqa compare`` users that a score is meaningless; the score itself stays
what the model says (docs/robustness.md).

Near-constant: the standard deviation of the 8-bit luminance (BT.601, ``0.299 R + 0.587 G +
0.114 B``) over all the image's pixels is below :data:`NEAR_CONSTANT_STD` grey levels. A face
crop has a spread of tens of levels; a flat colour plus JPEG or sensor noise stays under 2.
"""

from __future__ import annotations

import numpy as np
import torch

from ..preprocess import luma

NEAR_CONSTANT = "near_constant"
NO_FACE = "no_face"
FLAGS = (NEAR_CONSTANT, NO_FACE)
# Grey levels (of 255) of luminance spread below which an image is near-constant.
NEAR_CONSTANT_STD = 2.0
# Pixels per block when summing the luminance of a large image (bounds the float copy).
BLOCK_PIXELS = 1 << 20
# Crops are resized to this side before looking for a face (dlib's HOG detector finds faces of
# about 80 px and more; a face crop's face spans about half of it).
FACE_CHECK_SIDE = 256


def luminance_std(rgb: np.ndarray) -> float:
    """Standard deviation of the 8-bit luminance of an (H, W, 3) uint8 RGB (or (H, W) gray)
    image, in grey levels [0, 127.5], over every pixel; summed by blocks of rows, so a large
    image needs no full-size float copy."""
    arr = np.asarray(rgb)
    h, w = arr.shape[:2]
    rows = max(1, BLOCK_PIXELS // max(w, 1))
    total = total_sq = 0.0
    for r in range(0, h, rows):
        block = arr[r : r + rows].astype(np.float32)
        y = (block if block.ndim == 2 else luma(block[..., :3])).astype(np.float64)
        total += float(y.sum())
        total_sq += float((y * y).sum())
    n = max(h * w, 1)
    mean = total / n
    return float(np.sqrt(max(total_sq / n - mean * mean, 0.0)))


def is_near_constant(rgb: np.ndarray) -> bool:
    """Whether an 8-bit RGB image's luminance spread is below :data:`NEAR_CONSTANT_STD`."""
    return luminance_std(rgb) < NEAR_CONSTANT_STD


def near_constant(
    images: torch.Tensor, input_range: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """The same test on a batch of tensors, at their full resolution.

    Shape:
        images (B, 3, H, W) (or (B, 1, H, W)) in ``input_range`` -> (B,) bool.
    """
    lo, hi = input_range
    x = (images.detach().float() - lo) * (255.0 / (hi - lo))
    if x.shape[1] == 3:
        x = luma(x)
    return x.flatten(1).std(1, correction=0) < NEAR_CONSTANT_STD


def has_face(rgb: np.ndarray) -> bool:
    """Whether dlib's detector finds a face in an (H, W, 3) uint8 RGB crop, resized to
    :data:`FACE_CHECK_SIDE` first. Needs the ``[align]`` extra."""
    import cv2

    from ..align import detect_faces

    h, w = rgb.shape[:2]
    scale = FACE_CHECK_SIDE / max(h, w)
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(rgb), size, interpolation=interp)
    return bool(detect_faces(small, upsample=0))


def image_flag(rgb: np.ndarray, check_face: bool = False) -> str | None:
    """The flag of one decoded image: :data:`NEAR_CONSTANT`, :data:`NO_FACE` (only with
    ``check_face``; not looked for in a near-constant image) or None."""
    if is_near_constant(rgb):
        return NEAR_CONSTANT
    if check_face and not has_face(rgb):
        return NO_FACE
    return None


def flag_summary(records: list[dict]) -> list[str]:
    """One line per flag present in ``records`` (each a dict with ``flag`` and ``error``).

    E.g. ``"3 of 40 inputs are near-constant: their scores mean nothing"``.
    """
    scored = [r for r in records if r.get("error") is None]
    lines = []
    for flag, what in ((NEAR_CONSTANT, "are near-constant"), (NO_FACE, "show no face")):
        n = sum(r.get("flag") == flag for r in scored)
        if n:
            lines.append(f"{n} of {len(scored)} inputs {what}: their scores mean nothing")
    return lines
