"""Over-restoration artefacts of clean faces (numpy, HWC, float32 RGB in [0, 1]).

The degradations of :mod:`ifqa_loss.train.degradations` remove detail; restorers fail the other
way too: halos, ringing, colour casts, plastic skin, GAN checkerboards. Showing these to the
discriminator as fakes teaches it that "sharper" or "smoother than real" is not "more real".

Two layers, as in the degradations module:
- plain operations with explicit strengths (:func:`unsharp`, :func:`ringing`,
  :func:`colour_cast`, :func:`oversmooth`, :func:`checkerboard`);
- :func:`random_artefact`, one operation drawn by
  :attr:`~ifqa_loss.train.config.DegradationConfig.artefact_weights` at a strength drawn from
  the config's ranges with a seeded ``numpy.random.Generator`` (same seed, same output).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..faces.degrade import check_rgb, clip01, quantize, unsharp
from ..preprocess import luma
from .config import DegradationConfig
from .degradations import _uniform

ARTEFACTS = ("unsharp", "ringing", "cast", "smooth", "checker")  # order of artefact_weights


def ringing(img: np.ndarray, cutoff: float) -> np.ndarray:
    """Ideal (sharp circular) low-pass in the Fourier domain: Gibbs ringing around edges.

    ``cutoff``: the pass radius as a fraction of the Nyquist frequency (0.15-0.6 is visible
    ringing; sqrt(2) keeps every frequency). Per channel with numpy's FFT, on the image
    mirrored to twice its size (symmetric padding, as a DCT does), so that the periodic
    wrap-around adds no edges of its own; cropped back afterwards.
    """
    check_rgb(img)
    h, w = img.shape[:2]
    pad = np.pad(img, ((0, h), (0, w), (0, 0)), mode="symmetric")
    fy = np.fft.fftfreq(2 * h)[:, None] / 0.5  # in units of Nyquist
    fx = np.fft.rfftfreq(2 * w)[None, :] / 0.5
    keep = (fy**2 + fx**2) <= float(cutoff) ** 2
    spec = np.fft.rfft2(pad, axes=(0, 1)) * keep[..., None]
    out = np.fft.irfft2(spec, s=(2 * h, 2 * w), axes=(0, 1))
    return clip01(out[:h, :w])


def colour_cast(img: np.ndarray, shift: Sequence[float], dark_weight: float) -> np.ndarray:
    """Add a per-channel offset ``shift`` (3 signed values, 1/255 units), clipped.

    ``dark_weight`` in [0, 1] moves the offset towards dark regions: the per-pixel weight is
    ``(1 - dark_weight) + dark_weight * (1 - luma) ** 2`` (BT.601 luma), so 0 is a uniform cast
    and 1 a cast that fades out in highlights, like the magenta/green casts in dark hair.
    """
    check_rgb(img)
    d = float(dark_weight)
    weight = (1.0 - d) + d * (1.0 - luma(img)) ** 2
    offset = np.asarray(shift, dtype=np.float32).reshape(3) / np.float32(255.0)
    return clip01(img + weight[..., None].astype(np.float32) * offset)


def oversmooth(img: np.ndarray, sigma_color: float, sigma_space: float) -> np.ndarray:
    """Edge-preserving bilateral smoothing (plastic skin): flat regions lose texture, edges stay.

    ``sigma_color`` in intensity units of the [0, 1] image; ``sigma_space`` in pixels; the
    filter diameter is ``2 * ceil(1.5 * sigma_space) + 1``; reflected borders.
    """
    check_rgb(img)
    d = 2 * math.ceil(1.5 * float(sigma_space)) + 1
    out = cv2.bilateralFilter(
        np.ascontiguousarray(img),
        d,
        float(sigma_color),
        float(sigma_space),
        borderType=cv2.BORDER_REFLECT_101,
    )
    return clip01(out)


def checkerboard(
    img: np.ndarray, period: int, amplitude: float, colour: Sequence[float]
) -> np.ndarray:
    """Add a ``+-amplitude/255`` checkerboard of ``period`` px cells (GAN upsampling texture).

    The sign at ``(y, x)`` is that of ``(y // period + x // period) % 2``, scaled per channel by
    ``colour`` (3 values, e.g. signs: ``(1, -1, 1)`` is a magenta/green pattern); clipped.
    Period 1 puts all of the pattern's energy at the Nyquist frequency.
    """
    check_rgb(img)
    p = int(period)
    if p < 1:
        raise ValueError(f"checkerboard period must be >= 1, got {period}")
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    sign = np.where((yy // p + xx // p) % 2 == 0, 1.0, -1.0).astype(np.float32)
    scale = np.asarray(colour, dtype=np.float32).reshape(3) * np.float32(amplitude / 255.0)
    return clip01(img + sign[..., None] * scale)


def random_artefact(
    img: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """One artefact drawn by ``cfg.artefact_weights`` at a strength from the config's ranges.

    Returns:
        ``(out, params)``: the (H, W, 3) float32 result (on the 8-bit grid when
        ``cfg.quantize``) and e.g. ``{"artefact": "unsharp", "sigma": 2.1, "amount": 1.4}``.
    """
    check_rgb(img)
    w = np.asarray(cfg.artefact_weights, float)
    name = ARTEFACTS[int(rng.choice(len(ARTEFACTS), p=w / w.sum()))]
    p: dict[str, Any] = {"artefact": name}
    if name == "unsharp":
        p["sigma"] = _uniform(rng, cfg.unsharp_sigma)
        p["amount"] = _uniform(rng, cfg.unsharp_amount)
        out = unsharp(img, p["sigma"], p["amount"])
    elif name == "ringing":
        p["cutoff"] = _uniform(rng, cfg.ringing_cutoff)
        out = ringing(img, p["cutoff"])
    elif name == "cast":
        mag = rng.uniform(cfg.cast_shift[0], cfg.cast_shift[1], 3)
        p["shift"] = [float(v) for v in mag * rng.choice([-1.0, 1.0], 3)]
        p["dark_weight"] = float(rng.uniform(0.0, 1.0))
        out = colour_cast(img, p["shift"], p["dark_weight"])
    elif name == "smooth":
        p["sigma_color"] = _uniform(rng, cfg.smooth_sigma_color)
        p["sigma_space"] = _uniform(rng, cfg.smooth_sigma_space)
        out = oversmooth(img, p["sigma_color"], p["sigma_space"])
    else:
        lo, hi = cfg.checker_period
        p["period"] = int(rng.integers(int(lo), int(hi) + 1))
        p["amplitude"] = _uniform(rng, cfg.checker_amplitude)
        p["colour"] = [float(v) for v in rng.choice([-1.0, 1.0], 3)]
        out = checkerboard(img, p["period"], p["amplitude"], p["colour"])
    return (quantize(out) if cfg.quantize else out), p
