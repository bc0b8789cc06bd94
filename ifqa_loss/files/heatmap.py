"""Pictures of realness maps: the original release's colour map, and an overlay on the face."""

from __future__ import annotations

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
