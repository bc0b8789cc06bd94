"""Soft, differentiable face-region masks built from facial landmarks.

The masks weight a face-quality loss towards the eyes, nose, mouth and the rest of the face. They
are smooth anisotropic Gaussian bumps (eyes, nose, mouth) and a feathered ellipse (face), sized in
units of the inter-ocular distance (IOD) so they follow the scale and roll of the face. Everything
is batched, differentiable with respect to the landmarks and traceable by ``torch.compile``.

Coordinates are ``(x, y)`` pixels with pixel ``(i, j)`` centred at ``x = j, y = i``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

try:  # kornia 0.9 (the kornia.utils name is deprecated)
    from kornia.geometry import create_meshgrid
except ImportError:  # pragma: no cover - older kornia
    from kornia.utils import create_meshgrid

__all__ = [
    "FFHQ_TEMPLATE_512",
    "REGIONS",
    "FaceRegionMasks",
    "check_landmarks",
    "face_region_masks",
    "similarity_from_points",
    "template_landmarks",
]

#: FFHQ-style 5-point alignment template for 512x512 images, ``(x, y)``: image-left eye,
#: image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
FFHQ_TEMPLATE_512 = torch.tensor(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)

#: Accepted region names, in canonical order.
REGIONS = ("left_eye", "right_eye", "eyes", "nose", "mouth", "face", "rest")

# Region geometry (5-point input), as standard deviations in IOD units along the eye line (e) and
# the face's vertical axis (n = e rotated by +90 degrees, pointing towards the chin).
_EYE_SIGMA = (0.15, 0.09)
_NOSE_SIGMA = (0.13, 0.22)
# The nose bump is centred 30% of the way from the nose tip towards the eye midpoint.
_NOSE_SHIFT = 0.3
_MOUTH_SIGMA_ALONG = 0.35  # times the mouth-corner distance
_MOUTH_SIGMA_ACROSS = 0.12  # times the IOD
# Face ellipse in the 512 template (brows to chin, cheek to cheek): centre and semi-axes (x, y).
_FACE_CENTRE_512 = (256.0, 320.0)
_FACE_AXES_512 = (125.0, 135.0)
# 68-point input: covariance gains (points lie on region outlines) and a scale-aware floor.
_BUMP_COV_GAIN = 1.5
_FACE_COV_GAIN = 2.0
_FLOOR_IOD = 0.05
_FLOOR_PX = 0.5
_FACE_STEEPNESS = 4.0  # logistic edge steepness of the face ellipse at softness 1
# iBUG-68 index ranges.
_GROUPS_68 = {
    "left_eye": slice(36, 42),
    "right_eye": slice(42, 48),
    "nose": slice(27, 36),
    "mouth": slice(48, 68),
    "face": slice(0, 27),
}


def _parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    return int(h), int(w)


def _check_regions(regions: Sequence[str]) -> tuple[str, ...]:
    names = (regions,) if isinstance(regions, str) else tuple(regions)
    if not names:
        raise ValueError(f"regions must not be empty; accepted names: {REGIONS}")
    unknown = [r for r in names if r not in REGIONS]
    if unknown:
        raise ValueError(f"unknown region name(s) {unknown}; accepted names: {REGIONS}")
    return names


def check_landmarks(landmarks: torch.Tensor, *, finite: bool = True) -> None:
    """Refuse landmarks that are not a floating (B, 5, 2) or (B, 68, 2) tensor.

    The shape and dtype checks read metadata only; ``finite`` also refuses NaN/Inf values,
    which reads a value back from the device (one synchronisation).

    Raises:
        TypeError: not a tensor, or not a floating-point one.
        ValueError: another shape (the message says how to add a missing batch dim), or NaN/Inf.

    Example:
        >>> check_landmarks(torch.zeros(2, 68, 2))           # fine: returns None
        >>> check_landmarks(torch.zeros(5, 2))
        Traceback (most recent call last):
        ...
        ValueError: landmarks need a batch dim, got (5, 2); use landmarks.unsqueeze(0)
        >>> check_landmarks(torch.full((1, 5, 2), float("nan")))
        Traceback (most recent call last):
        ...
        ValueError: landmarks contain NaN or Inf values
    """
    if not isinstance(landmarks, torch.Tensor):
        raise TypeError(f"landmarks must be a torch.Tensor or None, got {type(landmarks).__name__}")
    shape = tuple(landmarks.shape)
    if shape in ((5, 2), (68, 2)):
        raise ValueError(f"landmarks need a batch dim, got {shape}; use landmarks.unsqueeze(0)")
    if len(shape) != 3 or shape[1:] not in ((5, 2), (68, 2)):
        raise ValueError(f"landmarks must have shape (B, 5, 2) or (B, 68, 2), got {shape}")
    if not landmarks.is_floating_point():
        raise TypeError(f"landmarks must be a floating-point tensor, got {landmarks.dtype}")
    if finite and not torch.isfinite(landmarks).all():
        raise ValueError("landmarks contain NaN or Inf values")


# Constant tensors on the devices they were asked for: copying one from host memory waits for
# the device, so it happens once per (device, dtype), not at every call.
_ON_DEVICE: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}


def _template_like(ref: torch.Tensor) -> torch.Tensor:
    """:data:`FFHQ_TEMPLATE_512` (5, 2) on ``ref``'s device and dtype (copied once per pair)."""
    if torch.compiler.is_compiling():
        return FFHQ_TEMPLATE_512.to(ref)  # a constant of the compiled graph
    key = ("template", ref.device, ref.dtype)
    t = _ON_DEVICE.get(key)
    if t is None:
        t = _ON_DEVICE[key] = FFHQ_TEMPLATE_512.to(ref)
    return t


def template_landmarks(
    size: int | tuple[int, int],
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """FFHQ 5-point template scaled to an image size (x by W/512, y by H/512).

    Args:
        size: image size, ``S`` (square) or ``(H, W)``.
        batch_size: number of copies.
        device: output device (default cpu).
        dtype: output dtype (default float32).

    Returns:
        template landmarks of shape :math:`(B, 5, 2)`.

    Example:
        >>> template_landmarks(256).shape
        torch.Size([1, 5, 2])
        >>> template_landmarks((128, 64), batch_size=3)[0].round().tolist()  # (H, W) = (128, 64)
        [[24.0, 60.0], [40.0, 60.0], [32.0, 79.0], [25.0, 93.0], [39.0, 93.0]]
    """
    h, w = _parse_size(size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dtype = dtype or torch.float32
    pts = FFHQ_TEMPLATE_512.to(device=device, dtype=dtype)
    pts = pts * torch.tensor([w / 512.0, h / 512.0], device=device, dtype=dtype)
    return pts.unsqueeze(0).expand(batch_size, 5, 2).contiguous()


def similarity_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares 2-D similarity (rotation, uniform scale, translation) mapping src to dst.

    Closed-form Umeyama solution without reflection, written with the complex-number form of the
    2-D case (no SVD), so it is batched and smoothly differentiable.

    Args:
        src: source points :math:`(B, N, 2)`; the batch dims broadcast against ``dst``.
        dst: destination points :math:`(B, N, 2)`.

    Returns:
        affine matrices :math:`(B, 2, 3)` with ``dst ~= M[:, :, :2] @ src + M[:, :, 2]``
        (kornia ``warp_affine`` convention).

    Example:
        >>> pts = torch.rand(2, 5, 2)
        >>> m = similarity_from_points(pts, 2 * pts + 1)
        >>> torch.allclose(m[0], torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]]), atol=1e-4)
        True
    """
    if src.shape[-1] != 2 or dst.shape[-1] != 2 or src.shape[-2] != dst.shape[-2]:
        raise ValueError(
            f"src and dst must be (B, N, 2) with equal N, got {src.shape}, {dst.shape}"
        )
    mu_s, mu_d = src.mean(-2), dst.mean(-2)
    p, q = src - mu_s.unsqueeze(-2), dst - mu_d.unsqueeze(-2)
    norm = (p * p).sum((-2, -1)).clamp_min(torch.finfo(p.dtype).eps)
    a = (p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1]).sum(-1) / norm
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(-1) / norm
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    t = mu_d - (rot @ mu_s.unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], -1)


def _outer(v: torch.Tensor) -> torch.Tensor:
    return v.unsqueeze(-1) * v.unsqueeze(-2)


def _mean_cov(pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = pts.mean(1)
    d = pts - mu.unsqueeze(1)
    return mu, d.transpose(1, 2) @ d / pts.shape[1]


def _params_5pt(lm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    le, re, tip, ml, mr = lm.unbind(1)
    e = re - le  # eye line, length IOD
    n = torch.stack([-e[:, 1], e[:, 0]], -1)  # face vertical axis, length IOD
    ee, nn_ = _outer(e), _outer(n)
    eye_cov = _EYE_SIGMA[0] ** 2 * ee + _EYE_SIGMA[1] ** 2 * nn_
    nose_cov = _NOSE_SIGMA[0] ** 2 * ee + _NOSE_SIGMA[1] ** 2 * nn_
    mouth_cov = _MOUTH_SIGMA_ALONG**2 * _outer(mr - ml) + _MOUTH_SIGMA_ACROSS**2 * nn_
    nose_c = tip + _NOSE_SHIFT * (0.5 * (le + re) - tip)
    centres = torch.stack([le, re, nose_c, 0.5 * (ml + mr)], 1)
    covs = torch.stack([eye_cov, eye_cov, nose_cov, mouth_cov], 1)
    # Face: template ellipse mapped through the least-squares similarity template -> landmarks.
    m = similarity_from_points(_template_like(lm).unsqueeze(0), lm)
    a = m[:, :, :2]
    # a @ centre and a @ diag(axes^2) @ a^T, with the template's numbers as Python floats.
    (cx, cy), (ax, ay) = _FACE_CENTRE_512, _FACE_AXES_512
    face_c = a[:, :, 0] * cx + a[:, :, 1] * cy + m[:, :, 2]
    face_s = torch.stack((a[:, :, 0] * ax**2, a[:, :, 1] * ay**2), -1) @ a.transpose(1, 2)
    return centres, covs, face_c, face_s


def _params_68pt(lm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    stats = {k: _mean_cov(lm[:, s]) for k, s in _GROUPS_68.items()}
    iod2 = (stats["right_eye"][0] - stats["left_eye"][0]).pow(2).sum(-1)
    eye = torch.eye(2, device=lm.device, dtype=lm.dtype)
    floor = (_FLOOR_IOD**2 * iod2)[:, None, None] * eye
    names = ("left_eye", "right_eye", "nose", "mouth")
    centres = torch.stack([stats[k][0] for k in names], 1)
    covs = torch.stack([_BUMP_COV_GAIN * stats[k][1] + floor for k in names], 1)
    face_c, face_cov = stats["face"]
    return centres, covs, face_c, _FACE_COV_GAIN * face_cov + floor


def _mahalanobis_sq(grid: torch.Tensor, centre: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of every pixel: grid (H,W,2), centre (...,2), cov (...,2,2)."""
    a, b, c = (v[..., None, None] for v in (cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]))
    dx = grid[..., 0] - centre[..., 0, None, None]
    dy = grid[..., 1] - centre[..., 1, None, None]
    return (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / (a * c - b * b)


def face_region_masks(
    landmarks: torch.Tensor | None,
    size: int | tuple[int, int],
    regions: Sequence[str] = ("eyes", "nose", "mouth"),
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    softness: float = 1.0,
    check_finite: bool = True,
) -> torch.Tensor:
    """Soft face-region masks, value 1 at each region's centre, falling smoothly to 0.

    Eyes, nose and mouth are anisotropic Gaussian bumps. With 5 points they are centred on the eye
    landmarks, on the nose tip moved 30% of the way towards the eye midpoint (so the bump covers
    the nose rather than the area below it), and on the mouth-corner midpoint; eyes have standard
    deviations 0.15 x 0.09 IOD along/across the eye line, the nose 0.13 x 0.22 IOD, the mouth
    0.35 x corner distance along the corners and 0.12 IOD across. With 68 points each bump is
    centred on the mean of its points, with 1.5x their covariance plus a floor of
    (0.05 IOD)^2 + (0.5 px)^2. "face" is a feathered ellipse (~0.5 on the brow-to-chin,
    cheek-to-cheek ellipse): the FFHQ-template ellipse mapped by the least-squares similarity for
    5 points, twice the covariance of the jaw and brow points for 68 points. "eyes" is the union
    ``1 - (1 - left) * (1 - right)``; "rest" is ``face * (1 - union(eyes, nose, mouth))``.

    Args:
        landmarks: ``(x, y)`` pixel landmarks (5-point order: left eye, right eye, nose tip,
            left and right mouth corners, image-left first; or iBUG-68), or ``None`` for the FFHQ
            template scaled to ``size``.
        size: output size, ``S`` or ``(H, W)``.
        regions: region names from :data:`REGIONS`, one output channel each, in this order.
        batch_size: batch size when ``landmarks`` is ``None``.
        device: device when ``landmarks`` is ``None`` (default cpu); else follows ``landmarks``.
        dtype: dtype when ``landmarks`` is ``None`` (default float32); else follows ``landmarks``.
        softness: multiplies the standard deviations of the bumps and the width of the face
            ellipse's edge.
        check_finite: refuse NaN/Inf landmarks (reads a value back from the device: one
            synchronisation; ``IFQALoss`` does it on its own schedule and passes False).

    Returns:
        masks with values in ``[0, 1]``.

    Shape:
        - landmarks: :math:`(B, 5, 2)` or :math:`(B, 68, 2)`
        - output: :math:`(B, R, H, W)` with ``R = len(regions)``

    Example:
        >>> lm = template_landmarks(256, batch_size=2)
        >>> face_region_masks(lm, 256, ("eyes", "rest")).shape
        torch.Size([2, 2, 256, 256])

        Each bump is 1 at its landmark (pixel ``(i, j)`` is ``x = j, y = i``) and the masks are
        differentiable with respect to the landmarks:

        >>> lm = torch.tensor([[[20.0, 24.0], [44.0, 24.0], [32.0, 36.0], [22.0, 46.0],
        ...                     [42.0, 46.0]]], requires_grad=True)
        >>> m = face_region_masks(lm, 64, ("eyes", "mouth", "rest"))
        >>> m[0, 0, 24, 20].item(), m[0, 0, 24, 44].item(), m[0, 1, 46, 32].item()
        (1.0, 1.0, 1.0)
        >>> m[0, 2, 24, 20].item(), bool(m[0, :, 0, 0].max() < 1e-6)  # rest: not on an eye
        (0.0, True)
        >>> m.sum().backward()
        >>> lm.grad.shape
        torch.Size([1, 5, 2])
        >>> face_region_masks(None, 64, ("lips",))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown region name(s) ['lips']; accepted names: ('left_eye', 'right_eye', ...)
    """
    h, w = _parse_size(size)
    names = _check_regions(regions)
    if not softness > 0:
        raise ValueError(f"softness must be > 0, got {softness}")
    if landmarks is None:
        landmarks = template_landmarks((h, w), batch_size, device, dtype)
    elif not torch.compiler.is_compiling():
        check_landmarks(landmarks, finite=check_finite)
    out_dtype = landmarks.dtype
    lm = landmarks.to(torch.promote_types(out_dtype, torch.float32))  # fp16 overflows x^2 terms
    grid = create_meshgrid(h, w, normalized_coordinates=False, device=lm.device, dtype=lm.dtype)[0]
    centres, covs, face_c, face_s = (_params_5pt if lm.shape[1] == 5 else _params_68pt)(lm)
    floor = _FLOOR_PX**2 * torch.eye(2, device=lm.device, dtype=lm.dtype)
    bumps = torch.exp(-0.5 * _mahalanobis_sq(grid, centres, softness**2 * covs + floor))
    left, right, nose, mouth = bumps.unbind(1)
    out = {"left_eye": left, "right_eye": right, "nose": nose, "mouth": mouth}
    out["eyes"] = 1.0 - (1.0 - left) * (1.0 - right)
    if "face" in names or "rest" in names:
        k = _FACE_STEEPNESS / softness
        r2 = _mahalanobis_sq(grid, face_c, face_s + floor)
        # logistic edge on r^2, normalised so that the centre is exactly 1
        out["face"] = torch.sigmoid(k * (1.0 - r2)) * (1.0 + math.exp(-k))
        keep = (1.0 - left) * (1.0 - right) * (1.0 - nose) * (1.0 - mouth)
        out["rest"] = out["face"] * keep
    return torch.stack([out[r] for r in names], 1).clamp(0.0, 1.0).to(out_dtype)


class FaceRegionMasks(nn.Module):
    """Module form of :func:`face_region_masks` with a fixed size and region list.

    Args:
        size: output size, ``S`` or ``(H, W)``.
        regions: region names from :data:`REGIONS`.
        softness: spread multiplier, see :func:`face_region_masks`.

    Shape:
        - landmarks: :math:`(B, 5, 2)`, :math:`(B, 68, 2)` or ``None`` (FFHQ template)
        - output: :math:`(B, R, H, W)`

    Example:
        >>> masks = FaceRegionMasks(128, ("eyes", "mouth"))
        >>> masks
        FaceRegionMasks(size=(128, 128), regions=('eyes', 'mouth'), softness=1.0)
        >>> masks(batch_size=3).shape
        torch.Size([3, 2, 128, 128])
        >>> masks(template_landmarks(128, batch_size=2)).shape    # landmarks in 128 px
        torch.Size([2, 2, 128, 128])

        The mean realness of each region, from the bundled ``ifqa-lite``'s map:

        >>> from ifqa_loss import load_discriminator
        >>> d = load_discriminator("ifqa-lite")
        >>> _ = torch.manual_seed(0)
        >>> faces = torch.rand(2, 3, 64, 64)                      # RGB in [0, 1]
        >>> realness = d(faces * 2 - 1)                           # (2, 1, 64, 64)
        >>> m = FaceRegionMasks(64, ("eyes", "mouth"))(batch_size=2)
        >>> per_region = (realness * m).sum((-2, -1)) / m.sum((-2, -1))
        >>> per_region.shape, bool(((per_region > 0) & (per_region < 1)).all())
        (torch.Size([2, 2]), True)
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        regions: Sequence[str] = ("eyes", "nose", "mouth"),
        softness: float = 1.0,
    ) -> None:
        super().__init__()
        self.size = _parse_size(size)
        self.regions = _check_regions(regions)
        if not softness > 0:
            raise ValueError(f"softness must be > 0, got {softness}")
        self.softness = float(softness)

    def forward(
        self,
        landmarks: torch.Tensor | None = None,
        batch_size: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        return face_region_masks(
            landmarks,
            self.size,
            self.regions,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            softness=self.softness,
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, regions={self.regions}, softness={self.softness}"
