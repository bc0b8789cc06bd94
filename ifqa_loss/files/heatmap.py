"""Pictures of realness maps: the original release's colour map, an overlay on the face, and
the maps of aligned faces pasted back over their photograph."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# The original script saves ``cv2.applyColorMap(uint8(map * 255), colormap=16)``; OpenCV's
# colormap 16 is VIRIDIS (dark purple = fake, yellow = real).
ORIGINAL_COLORMAP = 16


def _as_array(score_map: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(score_map, torch.Tensor):
        score_map = score_map.detach().float().cpu().numpy()
    arr = np.asarray(score_map, dtype=np.float32)
    arr = arr.reshape(arr.shape[-2:]) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise ValueError(f"expected a (H, W) or (1, H, W) map, got shape {tuple(arr.shape)}")
    return arr


def colorize(score_map: torch.Tensor | np.ndarray) -> np.ndarray:
    """The original release's heatmap picture of a map in [0, 1]: (H, W, 3) uint8, BGR.

    Same as the original script (``uint8(map * 255)``, truncating, then OpenCV's VIRIDIS
    colour map), at the map's own resolution.
    """
    import cv2

    arr = _as_array(score_map)
    grey = (np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.applyColorMap(grey, ORIGINAL_COLORMAP)


def overlay(
    image_bgr: np.ndarray, score_map: torch.Tensor | np.ndarray, alpha: float = 0.45
) -> np.ndarray:
    """The colour map blended over the face: (H, W, 3) uint8 BGR at the image's size.

    ``image_bgr`` is an 8-bit BGR image (as ``cv2.imread`` gives); the map is resized to it
    (bilinear) before blending with weight ``alpha``.
    """
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = np.asarray(image_bgr)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(
            f"image_bgr must be an (H, W, 3) uint8 array, got {img.dtype} {tuple(img.shape)}"
        )
    arr = _as_array(score_map)
    h, w = img.shape[:2]
    if arr.shape != (h, w):
        arr = cv2.resize(arr, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = colorize(arr)
    return cv2.addWeighted(colour, alpha, img, 1.0 - alpha, 0.0)


def paste_heatmaps(
    photo_bgr: np.ndarray,
    maps: Sequence[torch.Tensor | np.ndarray],
    matrices: Sequence[np.ndarray],
    crop_size: int,
    *,
    alpha: float = 0.45,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """The photo with each face's realness map (original colour map) warped back over it.

    Args:
        photo_bgr: (H, W, 3) uint8 BGR photograph (as ``cv2.imread`` gives).
        maps: one (S, S) or (1, S, S) map in [0, 1] per face, on that face's aligned crop.
        matrices: the faces' (2, 3) photo -> crop matrices.
        crop_size: side of the crops the matrices were made for.
        alpha: opacity of the colour maps.
        labels: optional text per face, written above the face's mapped crop.

    Returns:
        (H, W, 3) uint8 BGR picture.
    """
    import cv2

    from ..align import invert_affine, paste_back

    if len(maps) != len(matrices) or (labels is not None and len(labels) != len(maps)):
        raise ValueError(
            f"need one matrix (and label) per map: {len(maps)} maps, {len(matrices)} matrices"
            + ("" if labels is None else f", {len(labels)} labels")
        )
    out = np.array(photo_bgr, dtype=np.uint8)  # a copy: the caller's photo is not drawn on
    for m, mat in zip(maps, matrices, strict=True):
        out = paste_back(out, colorize(m), mat, crop_size=crop_size, alpha=alpha, feather=0.03)
    if labels:
        scale = max(0.5, min(out.shape[:2]) / 900)  # readable on small and large photos
        thick = max(1, round(2 * scale))
        for text, mat in zip(labels, matrices, strict=True):
            corners = np.array([[0, 0], [crop_size, 0], [crop_size, crop_size], [0, crop_size]])
            inv = invert_affine(mat)
            pts = corners @ inv[:, :2].T + inv[:, 2]
            x = int(np.clip(pts[:, 0].min(), 0, out.shape[1] - 1))
            y = int(np.clip(pts[:, 1].min(), 0, out.shape[0] - 1))
            org = (x + 4, y + int(30 * scale))
            for colour, t in (((0, 0, 0), thick + 2), ((255, 255, 255), thick)):
                cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, t)
    return out
