"""Synthetic degradations of clean faces (numpy, HWC, float32 RGB in [0, 1]).

Two layers:
- plain operations with explicit strengths (:func:`gaussian_blur`, :func:`down_up`,
  :func:`add_gaussian_noise`, :func:`jpeg`), used by the validation protocol;
- :func:`random_degradation`, the GFPGAN-style random pipeline (blur, downsample, noise, JPEG,
  upsample back) driven by a :class:`~ifqa_loss.train.config.DegradationConfig` and a seeded
  ``numpy.random.Generator`` (same seed, same output).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .config import DegradationConfig

_CV2_INTERP = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def _check(img: np.ndarray) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.float32:
        raise ValueError(f"expected an (H, W, 3) float32 image, got {img.shape} {img.dtype}")


def quantize(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to the 8-bit grid (as a saved image would be)."""
    return (np.clip(img * 255.0, 0, 255).round() / 255.0).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur, kernel 2*ceil(3 sigma)+1, reflected borders; sigma 0 = copy."""
    _check(img)
    if sigma <= 0:
        return img.copy()
    k = 2 * math.ceil(3.0 * sigma) + 1
    return cv2.GaussianBlur(img, (k, k), sigma, sigma, borderType=cv2.BORDER_REFLECT_101)


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> np.ndarray:
    """A normalised (size, size) anisotropic Gaussian kernel rotated by ``theta`` radians."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    r = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - r
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = np.exp(-0.5 * ((u / max(sigma_x, 1e-6)) ** 2 + (v / max(sigma_y, 1e-6)) ** 2))
    return (k / k.sum()).astype(np.float32)


def down_up(
    img: np.ndarray, factor: float, down: str = "bicubic_aa", up: str = "bicubic"
) -> np.ndarray:
    """Downsample by ``factor`` and resize back to the original size (factor <= 1: copy).

    ``down``/``up``: OpenCV interpolations (``nearest``, ``linear``, ``cubic``, ``area``) or
    ``bicubic_aa``/``bicubic`` (PyTorch bicubic, antialiased when shrinking: MATLAB-style).
    """
    _check(img)
    h, w = img.shape[:2]
    if factor <= 1.0:
        return img.copy()
    lh, lw = max(1, round(h / factor)), max(1, round(w / factor))
    small = _resize(img, lh, lw, down)
    return _resize(small, h, w, up)


def _resize(img: np.ndarray, h: int, w: int, how: str) -> np.ndarray:
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
    _check(img)
    if sigma <= 0:
        return img.copy()
    shape = img.shape[:2] + ((1,) if gray else (3,))
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(img + noise, 0.0, 1.0)


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """JPEG-compress at ``quality`` (1..100) with OpenCV (4:2:0 chroma) and decode."""
    _check(img)
    q = round(float(quality))
    bgr = cv2.cvtColor((np.clip(img, 0, 1) * 255.0).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), q])
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return cv2.cvtColor(dec, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def _uniform(rng: np.random.Generator, r: list[float], log: bool = False) -> float:
    lo, hi = float(r[0]), float(r[1])
    if log and lo > 0:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def sample_params(cfg: DegradationConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one set of degradation parameters (which operations run, and how strongly)."""
    ops = ("blur", "down", "noise", "jpeg")
    if cfg.single_op_prob and rng.random() < cfg.single_op_prob:
        w = np.asarray(cfg.single_op_weights, float)
        one = ops[int(rng.choice(4, p=w / w.sum()))]
        active = {op: op == one for op in ops}
    else:
        for _ in range(100):
            active = {
                "blur": rng.random() < cfg.blur_prob,
                "down": rng.random() < cfg.down_prob,
                "noise": rng.random() < cfg.noise_prob,
                "jpeg": rng.random() < cfg.jpeg_prob,
            }
            if sum(active.values()) >= cfg.min_ops:
                break
    p: dict[str, Any] = {}
    if active["blur"]:
        sx = _uniform(rng, cfg.blur_sigma, cfg.blur_sigma_log)
        if rng.random() < cfg.blur_aniso_prob:
            sy = _uniform(rng, cfg.blur_sigma, cfg.blur_sigma_log)
            theta = float(rng.uniform(-math.pi, math.pi))
        else:
            sy, theta = sx, 0.0
        p["blur"] = (sx, sy, theta)
    if active["down"]:
        p["down"] = (
            _uniform(rng, cfg.down_factor, cfg.down_factor_log),
            str(rng.choice(cfg.down_interp)),
            str(rng.choice(cfg.up_interp)),
        )
    if active["noise"]:
        p["noise"] = (_uniform(rng, cfg.noise_sigma), bool(rng.random() < cfg.gray_noise_prob))
    if active["jpeg"]:
        p["jpeg"] = _uniform(rng, cfg.jpeg_quality)
    if rng.random() < cfg.color_jitter_prob:
        p["jitter"] = rng.uniform(-cfg.color_jitter_shift, cfg.color_jitter_shift, 3) / 255.0
    p["gray"] = bool(rng.random() < cfg.gray_prob)
    return p


def apply_params(
    img: np.ndarray, p: dict[str, Any], rng: np.random.Generator, cfg: DegradationConfig
) -> np.ndarray:
    """Degrade ``img`` with parameters from :func:`sample_params` (GFPGAN's order)."""
    _check(img)
    h, w = img.shape[:2]
    out = img
    if "blur" in p:
        sx, sy, theta = p["blur"]
        ks = min(cfg.blur_kernel_size, 2 * (min(h, w) // 2) - 1)
        out = cv2.filter2D(
            out, -1, gaussian_kernel(ks, sx, sy, theta), borderType=cv2.BORDER_REFLECT_101
        )
    up_how = None
    if "down" in p:
        factor, down_how, up_how = p["down"]
        lh, lw = max(1, round(h / factor)), max(1, round(w / factor))
        out = _resize(out, lh, lw, down_how)
    if "noise" in p:
        out = add_gaussian_noise(out, p["noise"][0], rng, gray=p["noise"][1])
    if "jpeg" in p:
        out = jpeg(out, p["jpeg"])
    if out.shape[:2] != (h, w):
        out = _resize(out, h, w, up_how or "linear")
    if "jitter" in p:
        out = out + p["jitter"].astype(np.float32)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return quantize(out) if cfg.quantize else out


def to_gray(img: np.ndarray) -> np.ndarray:
    """Luma (BT.601) copied to three channels."""
    g = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(g[..., None], 3, axis=2)


def random_degradation(
    img: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Degrade a clean face at its own size.

    Returns:
        ``(clean, degraded, params)``: ``clean`` is the input, turned gray when the gray option
        fires (GFPGAN converts the ground truth too, so colour is no cue); both (H, W, 3) float32
        in [0, 1].
    """
    p = sample_params(cfg, rng)
    clean = img
    if p["gray"]:
        clean = to_gray(img)
    out = apply_params(clean, p, rng, cfg)
    if p["gray"]:
        out = to_gray(out)
    return clean, out, p
