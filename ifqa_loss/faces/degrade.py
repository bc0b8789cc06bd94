"""Plain degradations of clean faces with explicit strengths (numpy, HWC, float32 RGB in [0, 1]).

Shared by the trainer (:mod:`ifqa_loss.train.degradations` draws them at random strengths, and
:mod:`ifqa_loss.train.artefacts` builds on :func:`unsharp`), the validation protocol and
``ifqa audit``: :func:`degrade` applies one family at one strength.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..preprocess import luma

_CV2_INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def check_rgb(img: np.ndarray) -> None:
    """Raise a ValueError unless ``img`` is an (H, W, 3) float32 image."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.float32:
        raise ValueError(f"expected an (H, W, 3) float32 image, got {img.shape} {img.dtype}")


def quantize(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to the 8-bit grid (as a saved image would be)."""
    return (np.clip(img * 255.0, 0, 255).round() / 255.0).astype(np.float32)


def clip01(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] as float32."""
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur, kernel 2*ceil(3 sigma)+1, reflected borders; sigma 0 = copy."""
    check_rgb(img)
    if sigma <= 0:
        return img.copy()
    k = 2 * math.ceil(3.0 * sigma) + 1
    return cv2.GaussianBlur(img, (k, k), sigma, sigma, borderType=cv2.BORDER_REFLECT_101)


def down_up(
    img: np.ndarray, factor: float, down: str = "bicubic_aa", up: str = "bicubic"
) -> np.ndarray:
    """Downsample by ``factor`` and resize back to the original size (factor <= 1: copy).

    ``down``/``up``: OpenCV interpolations (``nearest``, ``linear``, ``cubic``, ``area``) or
    ``bicubic_aa``/``bicubic`` (PyTorch bicubic, antialiased when shrinking: MATLAB-style).
    """
    check_rgb(img)
    h, w = img.shape[:2]
    if factor <= 1.0:
        return img.copy()
    lh, lw = max(1, round(h / factor)), max(1, round(w / factor))
    small = resize_rgb(img, lh, lw, down)
    return resize_rgb(small, h, w, up)


def resize_rgb(img: np.ndarray, h: int, w: int, how: str) -> np.ndarray:
    """Resize to (h, w) with an OpenCV interpolation or PyTorch's (``bicubic``, ``bicubic_aa``,
    ``bilinear_aa``: antialiased when shrinking)."""
    if how in ("bicubic", "bicubic_aa", "bilinear_aa"):
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
        mode = "bilinear" if how == "bilinear_aa" else "bicubic"
        aa = how.endswith("_aa") and (h < img.shape[0] or w < img.shape[1])
        t = F.interpolate(t, size=(h, w), mode=mode, antialias=aa, align_corners=False)
        return np.clip(t[0].numpy().transpose(1, 2, 0), 0.0, 1.0).astype(np.float32)
    if how not in _CV2_INTERP:
        raise ValueError(
            f"unknown interpolation {how!r}; use one of {sorted(_CV2_INTERP)} or bicubic_aa"
        )
    return cv2.resize(img, (w, h), interpolation=_CV2_INTERP[how])


def add_gaussian_noise(
    img: np.ndarray, sigma: float, rng: np.random.Generator, gray: bool = False
) -> np.ndarray:
    """Add N(0, sigma/255) noise (per channel, or the same for all channels with ``gray``), clip."""
    check_rgb(img)
    if sigma <= 0:
        return img.copy()
    shape = img.shape[:2] + ((1,) if gray else (3,))
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0)


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """JPEG-compress at ``quality`` (1..100) with OpenCV (4:2:0 chroma) and decode."""
    check_rgb(img)
    q = round(float(quality))
    bgr = cv2.cvtColor((np.clip(img, 0, 1) * 255.0).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), q])
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.cvtColor(dec, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def to_gray(img: np.ndarray) -> np.ndarray:
    """Luma (BT.601) copied to three channels."""
    g = luma(img)
    return np.repeat(g[..., None], 3, axis=2)


def unsharp(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """Unsharp mask ``img + amount * (img - gaussian_blur(img, sigma))``, clipped (halos).

    ``amount`` 0 returns the image unchanged.
    """
    check_rgb(img)
    return clip01(img + np.float32(amount) * (img - gaussian_blur(img, sigma)))


UNSHARP_SIGMA = 2.0  # px at the 512 evaluation size of the validation protocol


def degrade(img: np.ndarray, family: str, level: float | None, seed: int = 0) -> np.ndarray:
    """One family at one strength on an (H, W, 3) float32 RGB image in [0, 1] (8-bit output).

    blur: Gaussian, sigma in pixels; downup: factor, antialiased bicubic down then bicubic up;
    noise: Gaussian, sigma in 1/255 units, seeded; jpeg: OpenCV quality (None: untouched);
    unsharp: unsharp mask ``img + amount * (img - blur(img, sigma 2))``, clipped.
    """
    if family == "blur":
        out = gaussian_blur(img, float(level or 0.0))
    elif family == "downup":
        out = down_up(img, float(level or 1.0), "bicubic_aa", "bicubic")
    elif family == "noise":
        out = add_gaussian_noise(img, float(level or 0.0), np.random.default_rng(seed))
    elif family == "jpeg":
        out = img.copy() if level is None else jpeg(img, float(level))
    elif family == "unsharp":
        out = unsharp(img, UNSHARP_SIGMA, float(level or 0.0))
    else:
        raise ValueError(
            f"unknown degradation family {family!r}; use blur, downup, noise, jpeg, unsharp"
        )
    return quantize(out)
