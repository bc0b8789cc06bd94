"""Dark outlines: edges a restorer draws darker and steeper than the clean face has them.

A GAN term can sharpen a face by drawing dark lines around the eyes, nose and mouth; PSNR barely
moves and NIQE may even reward them, so the study counts them. A pixel is a *dark edge* when the
restored face's luminance gradient there is steeper, by more than ``steeper``, than the clean
face's anywhere within one pixel, and the pixel is darker than the clean one by more than
``darker`` (both on the 0-1 scale). A blur, which spreads the clean face's dark lines without
steepening them, does not count; a line drawn anew, or a crease drawn darker and sharper than
the photo has it, does. The share of such pixels is given inside the face's regions and outside
them, since the regions are where the term's emphasis, and the outlines seen in the picture
grids, lie.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ifqa_loss.preprocess import luma

STEEPER = 0.06
DARKER = 0.03


def _slope(y: torch.Tensor) -> torch.Tensor:
    """(B, H-1, W-1) magnitude of the forward differences of (B, H, W) images."""
    dx = y[:, :-1, 1:] - y[:, :-1, :-1]
    dy = y[:, 1:, :-1] - y[:, :-1, :-1]
    return (dx.square() + dy.square()).sqrt()


def dark_edges(
    x: torch.Tensor,
    clean: torch.Tensor,
    regions: torch.Tensor,
    steeper: float = STEEPER,
    darker: float = DARKER,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image share (%) of dark-edge pixels inside ``regions`` and outside them.

    Args:
        x, clean: (B, 3, H, W) images in [0, 1] (uint8 images are divided by 255).
        regions: (H, W) boolean mask of the face's regions (eyes, nose, mouth).
    Returns:
        two (B,) tensors: % of the pixels inside the regions, % of those outside.
    """
    x, clean = (t.float() / 255 if t.dtype == torch.uint8 else t.float() for t in (x, clean))
    if x.shape != clean.shape or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(
            f"x and clean must be (B, 3, H, W) of one shape, got {tuple(x.shape)} and "
            f"{tuple(clean.shape)}"
        )
    if regions.shape != x.shape[-2:] or regions.dtype != torch.bool:
        raise ValueError(
            f"regions must be a boolean (H, W) mask of shape {tuple(x.shape[-2:])}, got "
            f"{regions.dtype} {tuple(regions.shape)}"
        )
    inside = regions[:-1, :-1]
    if not inside.any() or inside.all():
        raise ValueError("regions must cover part of the image, not none or all of it")
    lx, lc = luma(x)[:, 0], luma(clean)[:, 0]
    steepest = F.max_pool2d(_slope(lc)[:, None], 3, 1, 1)[:, 0]
    edge = ((_slope(lx) > steepest + steeper) & ((lc - lx)[:, :-1, :-1] > darker)).float()
    return 100 * edge[:, inside].mean(1), 100 * edge[:, ~inside].mean(1)
