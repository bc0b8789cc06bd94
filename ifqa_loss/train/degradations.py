"""Synthetic degradations of clean faces (numpy, HWC, float32 RGB in [0, 1]).

The plain operations with explicit strengths (blur, down-up, noise, JPEG) are in
:mod:`ifqa_loss.faces.degrade`, shared with the validation protocol and the audit; here,
:func:`random_degradation`, the GFPGAN-style random pipeline (blur, downsample, noise, JPEG,
  upsample back) driven by a :class:`~ifqa_loss.train.config.DegradationConfig` and a seeded
  ``numpy.random.Generator`` (same seed, same output).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from ..faces.degrade import add_gaussian_noise, check_rgb, jpeg, quantize, resize_rgb, to_gray
from .config import DegradationConfig


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
    check_rgb(img)
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
        out = resize_rgb(out, lh, lw, down_how)
    if "noise" in p:
        out = add_gaussian_noise(out, p["noise"][0], rng, gray=p["noise"][1])
    if "jpeg" in p:
        out = jpeg(out, p["jpeg"])
    if out.shape[:2] != (h, w):
        out = resize_rgb(out, h, w, up_how or "linear")
    if "jitter" in p:
        out = out + p["jitter"].astype(np.float32)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return quantize(out) if cfg.quantize else out


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
