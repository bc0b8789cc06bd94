"""NIQE, the no-reference naturalness measure, from basicsr's implementation.

basicsr ships the pristine-image model NIQE needs (``niqe_pris_params.npz``: the mean and
covariance of natural-image statistics, estimated by NIQE's authors with 96x96 px blocks) and
an implementation that matches the authors' MATLAB code. This module applies the project's
compatibility layer (:mod:`ifqa_loss.integrations.basicsr`, which makes basicsr importable on
current torchvision) before importing it; nothing else in ``ifqa_loss`` imports basicsr.

Images at least :data:`NIQE_BLOCK` x 2 = 192 px a side are scored by
``basicsr.metrics.niqe.calculate_niqe`` itself (Y channel, no border crop). NIQE fits a
Gaussian to the statistics of the image's blocks and needs at least two of them: a smaller
image (setting C's 128 px restorer outputs) is scored by the same code with blocks of half
its side (64 px at 128 px), not upsampled (upsampling smooths noise away: at 128 px, noise of
sigma 15/255 upsampled to 192 px scores like the clean face). Values at another block size
are on another scale: compare NIQE only between images of the same size.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np
import torch

NIQE_BLOCK = 96  # the block size of basicsr's pristine parameters and of calculate_niqe
MIN_NIQE_SIZE = 64  # smallest image side scored (two 32 px blocks)
INSTALL_HINT = (
    "NIQE needs basicsr: pip install --no-build-isolation 'ifqa-loss[judges]' (basicsr builds "
    "against the installed torch, so install torch first)"
)


def load():
    """basicsr's NIQE module, imported after the project's compatibility layer."""
    try:
        # The compatibility layer first (torchvision stand-in), then basicsr itself.
        importlib.import_module(".basicsr", __package__)
        niqe_module = importlib.import_module("basicsr.metrics.niqe")
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT}. ({type(e).__name__}: {e})") from e
    return niqe_module


def niqe_block(side: int) -> int:
    """The block size used for an image whose shorter side is ``side`` px (96, or side // 2)."""
    if side < MIN_NIQE_SIZE:
        raise ValueError(f"NIQE needs images of at least {MIN_NIQE_SIZE} px a side, got {side}")
    return NIQE_BLOCK if side >= 2 * NIQE_BLOCK else (side // 2) & ~1  # even: halved at scale 2


def _bgr255(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> (H, W, 3) BGR float32 on the 8-bit grid, as basicsr expects."""
    a = (x.detach().float().clamp(0, 1) * 255.0).round().cpu().numpy()
    return np.ascontiguousarray(a[::-1].transpose(1, 2, 0))


def niqe_one(img_bgr255: np.ndarray) -> float:
    """NIQE of one (H, W, 3) BGR image in [0, 255]; lower is more natural.

    Uses ``calculate_niqe`` at 192 px and above, else the same features with smaller blocks.
    NaN when it is undefined: an image with no texture at all (flat blocks).
    """
    mod = load()
    side = min(img_bgr255.shape[:2])
    block = niqe_block(side)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # basicsr's nanmean of flat blocks
            return _niqe_at(mod, img_bgr255, block)
    except np.linalg.LinAlgError:
        return float("nan")


def _niqe_at(mod, img_bgr255: np.ndarray, block: int) -> float:
    if block == NIQE_BLOCK:
        return float(mod.calculate_niqe(img_bgr255, 0, input_order="HWC", convert_to="y"))
    from basicsr.metrics.metric_util import to_y_channel

    params = np.load(os.path.join(os.path.dirname(mod.__file__), "niqe_pris_params.npz"))
    y = np.squeeze(to_y_channel(img_bgr255.astype(np.float32))).round()
    return float(
        mod.niqe(
            y,
            params["mu_pris_param"],
            params["cov_pris_param"],
            params["gaussian_window"],
            block_size_h=block,
            block_size_w=block,
        )
    )


def niqe(images: torch.Tensor) -> torch.Tensor:
    """NIQE of each image; lower is more natural.

    Args:
        images: (B, 3, H, W) RGB in [0, 1], each side at least :data:`MIN_NIQE_SIZE` px;
            rounded to the 8-bit grid first, as a saved image would be.

    Returns:
        (B,) float64.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"NIQE expects (B, 3, H, W) RGB images, got shape {tuple(images.shape)}")
    load()  # the install hint before any work
    return torch.tensor([niqe_one(_bgr255(x)) for x in images], dtype=torch.float64)
