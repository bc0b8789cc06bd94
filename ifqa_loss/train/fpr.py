"""Facial primary regions (FPR) in training: region swaps and region-weighted per-pixel losses.

This reconstructs the published idea (the IFQA paper's method text was not available to us)
with the U-Net GAN recipe (Schonfeld et al., CVPR 2020): CutMix-style mixing of a real and a fake
image where the per-pixel target equals the mixing mask. Our choices: the mixed regions are the
eyes, nose and mouth masks of :func:`ifqa_loss.masks.face_region_masks` (a random non-empty
subset, binarised at a threshold), placed on jittered template landmarks; the swap goes either
way (fake regions on a real face or real regions on a fake face, 50/50); every per-pixel BCE is
weighted by the region weights of :mod:`ifqa_loss.regions` (the loss's rule).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..masks import face_region_masks, template_landmarks

PRIMARY_REGIONS = ("left_eye", "right_eye", "nose", "mouth")


def jittered_landmarks(
    batch: int, size: int, jitter: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """FFHQ template landmarks for ``size`` with a random per-sample shift and scale.

    ``jitter`` is the largest shift as a fraction of ``size`` and the largest relative scale
    change; it covers the differences between the FFHQ and CelebA-HQ crops in the data.
    """
    lm = template_landmarks(size, batch)
    if jitter <= 0:
        return lm
    u = torch.rand(batch, 3, generator=generator) * 2 - 1
    centre = lm.mean(1, keepdim=True)
    scale = 1.0 + jitter * u[:, 2].view(batch, 1, 1)
    shift = (jitter * size) * u[:, :2].view(batch, 1, 2)
    return (lm - centre) * scale + centre + shift


def swap_masks(
    landmarks: torch.Tensor,
    size: int,
    regions: Sequence[str] = PRIMARY_REGIONS,
    threshold: float = 0.25,
    softness: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary region masks to swap and the per-pixel targets that follow them.

    Returns:
        ``(regions_mask, target)``, both (B, 1, size, size) in {0, 1}: ``regions_mask`` is the
        union of the chosen regions; ``target`` is 1 where the mixed image shows real pixels:
        ``regions_mask`` when real regions go onto the fake face, ``1 - regions_mask`` when fake
        regions go onto the real face.
    """
    b = landmarks.shape[0]
    soft = face_region_masks(landmarks, size, tuple(regions), softness=softness)
    r = soft.shape[1]
    chosen = torch.rand(b, r, generator=generator) < 0.5
    none = ~chosen.any(1)
    if none.any():
        pick = torch.randint(0, r, (b,), generator=generator)
        chosen[none, pick[none]] = True
    hard = (soft > threshold).to(soft.dtype) * chosen[:, :, None, None].to(soft.dtype)
    region = hard.amax(1, keepdim=True)
    real_on_fake = (torch.rand(b, generator=generator) < 0.5).view(b, 1, 1, 1)
    target = torch.where(real_on_fake, region, 1.0 - region)
    return region, target


def mix(real: torch.Tensor, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mixed image: real pixels where ``target`` is 1, fake pixels where it is 0."""
    return target * real + (1.0 - target) * fake


def weighted_bce(
    logits: torch.Tensor, target: torch.Tensor | float, weight: torch.Tensor
) -> torch.Tensor:
    """Per-pixel binary cross-entropy on logits, averaged with per-pixel weights."""
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(logits, float(target))
    loss = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits), reduction="none")
    w = weight.expand_as(loss)
    return (loss * w).sum() / w.sum()


def paired_rank_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``softplus(s(fake) - s(real))`` averaged over pairs; ``s`` is the weighted mean logit.

    Sample ``i`` of ``fake_logits`` must come from sample ``i`` of ``real_logits`` (same face,
    same crop). Zero gradient once a pair is ranked by a wide margin.
    """
    w = weight.expand_as(real_logits)
    norm = w.sum((1, 2, 3))
    s_real = (real_logits * w).sum((1, 2, 3)) / norm
    s_fake = (fake_logits * w).sum((1, 2, 3)) / norm
    return F.softplus(s_fake - s_real).mean()


def region_rank_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    mixed_logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """Paired ranking inside the swapped regions of region-mixed samples.

    Sample ``i`` of all three logit maps shows the same face (and crop): the real face, its fake
    and their mix with per-pixel target ``target`` (1 = real pixel). Where the mix shows fake
    pixels, its weighted mean logit must be below the real face's on the same pixels; where it
    shows real pixels, above the fake's on the same pixels. A discriminator that judges the
    whole image cannot satisfy both, so this asks for the map to follow the swap, with each
    comparison made between two versions of the same pixels (no content to fight). Terms whose
    part of the image is empty (a crop missing the regions) are skipped. Zero when nothing is
    left.
    """
    w = weight.expand_as(mixed_logits)
    t = target.expand_as(mixed_logits)
    losses = []
    for part, upper, lower in (
        (1.0 - t, real_logits, mixed_logits),
        (t, mixed_logits, fake_logits),
    ):
        m = w * part
        norm = m.sum((1, 2, 3))
        keep = norm > 1e-6
        if not keep.any():
            continue
        hi = (upper * m).sum((1, 2, 3))[keep] / norm[keep]
        lo = (lower * m).sum((1, 2, 3))[keep] / norm[keep]
        losses.append(F.softplus(lo - hi))
    if not losses:
        return mixed_logits.sum() * 0.0
    return torch.cat(losses).mean()


def pixel_accuracy(logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Share of pixels on the right side of 0.5 (targets are binarised at 0.5)."""
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(logits, float(target))
    return ((logits > 0) == (target.expand_as(logits) > 0.5)).float().mean()


def visibility(
    fake: torch.Tensor, real: torch.Tensor, tau: float, floor: float = 0.05, kernel: int = 5
) -> torch.Tensor:
    """Per-pixel weight of a fake pixel: how visibly the degradation changed it.

    ``clamp(box_k(mean_c |fake - real|) / tau, floor, 1)`` for images in [-1, 1] (``tau`` is in
    [0, 1] units, e.g. 4/255): pixels a degradation left unchanged (flat skin under a blur) get
    the ``floor`` weight instead of being labelled fake at full weight. Shape (B, 1, H, W).
    """
    d = (fake - real).abs().mean(1, keepdim=True) * 0.5  # [-1, 1] -> [0, 1] units
    d = F.avg_pool2d(d, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return (d / tau).clamp(floor, 1.0).detach()
