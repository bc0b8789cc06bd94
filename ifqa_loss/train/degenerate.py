"""Degenerate images: inputs that are not faces at all (numpy, HWC, float32 RGB in [0, 1]).

A discriminator trained only on clean faces against degraded faces has never seen a flat
colour, a gradient, noise or a wall: it may score a black square above every real face. These
generators make such images so that the trainer can show them as fakes
(``degradation.degenerate_prob``) and the validation can check that they score below every
clean face (:func:`degenerate_test_set`). Kinds (the order of ``degenerate_weights``):

- ``constant``: one colour;
- ``near_constant``: one colour plus tiny Gaussian noise (0.5-4/255);
- ``gradient``: a linear or radial ramp between two colours;
- ``noise``: uniform noise, blurred noise, stripes or a checkerboard;
- ``nonface``: a crop from a corner of a whole photograph (away from the face; 3 in 4 draws
  when photographs are given), else the face's own tiles shuffled (face textures, no face);
- ``smooth``: the face under a very large Gaussian blur;
- ``posterise``: the face with 2-4 levels per channel.

Every function is deterministic given its arguments (random ones take a seeded
``numpy.random.Generator``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..faces.degrade import check_rgb, gaussian_blur, quantize

KINDS = ("constant", "near_constant", "gradient", "noise", "nonface", "smooth", "posterise")
# Fixed colours for the test set and for half of the training draws (RGB in [0, 1]).
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (1.0, 1.0, 1.0),
    (0.5, 0.5, 0.5),
    (0.25, 0.25, 0.25),
    (0.87, 0.72, 0.62),  # a skin tone
    (0.8, 0.1, 0.1),
    (0.1, 0.6, 0.2),
    (0.15, 0.25, 0.75),
)
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _rgb(colour: Sequence[float]) -> np.ndarray:
    c = np.asarray(colour, dtype=np.float32).reshape(-1)
    if c.shape != (3,) or not np.all((c >= 0) & (c <= 1)):
        raise ValueError(f"a colour is 3 numbers in [0, 1], got {list(colour)}")
    return c


def _size(size: int) -> int:
    if int(size) < 1:
        raise ValueError(f"image size must be >= 1, got {size}")
    return int(size)


def constant(size: int, colour: Sequence[float]) -> np.ndarray:
    """A (size, size, 3) image of one colour."""
    return np.broadcast_to(_rgb(colour), (_size(size), size, 3)).astype(np.float32)


def near_constant(
    size: int, colour: Sequence[float], sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """One colour plus Gaussian noise of ``sigma``/255 per channel, clipped."""
    base = constant(size, colour)
    noise = rng.standard_normal(base.shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return np.clip(base + noise, 0.0, 1.0).astype(np.float32)


def linear_gradient(
    size: int, c0: Sequence[float], c1: Sequence[float], angle: float
) -> np.ndarray:
    """A ramp from ``c0`` to ``c1`` along the direction ``angle`` (radians, 0 = left to right)."""
    n = _size(size)
    ax = (np.arange(n, dtype=np.float32) + 0.5) / n - 0.5
    xx, yy = np.meshgrid(ax, ax)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    return _mix(c0, c1, t)


def radial_gradient(
    size: int, c0: Sequence[float], c1: Sequence[float], centre: Sequence[float], radius: float
) -> np.ndarray:
    """``c0`` at ``centre`` (fractions of the size) fading to ``c1`` at ``radius`` (fraction)."""
    n = _size(size)
    ax = (np.arange(n, dtype=np.float32) + 0.5) / n
    xx, yy = np.meshgrid(ax, ax)
    d = np.sqrt((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2)
    return _mix(c0, c1, np.clip(d / max(float(radius), 1e-6), 0.0, 1.0))


def _mix(c0: Sequence[float], c1: Sequence[float], t: np.ndarray) -> np.ndarray:
    a, b = _rgb(c0), _rgb(c1)
    return (a + (b - a) * t[..., None]).astype(np.float32)


def uniform_noise(size: int, rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """Uniform noise in [0, 1], per channel or the same in all three (``gray``)."""
    n = _size(size)
    x = rng.random((n, n, 1 if gray else 3), dtype=np.float32)
    return np.ascontiguousarray(np.broadcast_to(x, (n, n, 3)))


def blurred_noise(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise blurred by a Gaussian of ``sigma`` px, stretched back to [0, 1]."""
    x = gaussian_blur(uniform_noise(size, rng), sigma)
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    return ((x - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)


def stripes(
    size: int, period: float, angle: float, c0: Sequence[float], c1: Sequence[float]
) -> np.ndarray:
    """Hard-edged stripes of ``period`` px (half ``c0``, half ``c1``) along ``angle`` radians."""
    n = _size(size)
    ax = np.arange(n, dtype=np.float32)
    xx, yy = np.meshgrid(ax, ax)
    t = (xx * math.cos(angle) + yy * math.sin(angle)) / max(float(period), 1e-6)
    return _mix(c0, c1, (np.floor(t * 2.0) % 2).astype(np.float32))


def checker(size: int, period: int, c0: Sequence[float], c1: Sequence[float]) -> np.ndarray:
    """A checkerboard of ``period`` px cells in ``c0`` and ``c1``."""
    n, p = _size(size), int(period)
    if p < 1:
        raise ValueError(f"checker period must be >= 1, got {period}")
    yy, xx = np.mgrid[0:n, 0:n]
    return _mix(c0, c1, ((yy // p + xx // p) % 2).astype(np.float32))


def corner_crop(photo: np.ndarray, corner: str, fraction: float, size: int) -> np.ndarray:
    """A square crop of side ``fraction`` x the short side from a corner, resized to ``size``.

    In a whole photograph (a person with the face near the middle), the corners are the
    background: walls, sky, clothes, furniture.
    """
    check_rgb(photo)
    if corner not in CORNERS:
        raise ValueError(f"unknown corner {corner!r}; use one of {CORNERS}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"corner crop fraction must be in (0, 1], got {fraction}")
    h, w = photo.shape[:2]
    s = max(1, round(min(h, w) * fraction))
    y = 0 if corner.startswith("top") else h - s
    x = 0 if corner.endswith("left") else w - s
    crop = np.ascontiguousarray(photo[y : y + s, x : x + s])
    n = _size(size)
    interp = cv2.INTER_AREA if s > n else cv2.INTER_CUBIC
    return np.clip(cv2.resize(crop, (n, n), interpolation=interp), 0.0, 1.0).astype(np.float32)


def patch_shuffle(img: np.ndarray, grid: int, rng: np.random.Generator) -> np.ndarray:
    """The image cut into ``grid`` x ``grid`` tiles, shuffled (face textures without a face).

    The image side must be a multiple of ``grid``.
    """
    check_rgb(img)
    h, w = img.shape[:2]
    g = int(grid)
    if g < 2 or h % g or w % g:
        raise ValueError(f"patch_shuffle: grid must be >= 2 and divide {h}x{w}, got {grid}")
    th, tw = h // g, w // g
    tiles = img.reshape(g, th, g, tw, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, th, tw, 3)
    tiles = tiles[rng.permutation(g * g)]
    return np.ascontiguousarray(
        tiles.reshape(g, g, th, tw, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, 3)
    )


def smooth_face(img: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """A Gaussian blur of ``sigma_fraction`` x the image side (0.02 = sigma 10 px at 512)."""
    check_rgb(img)
    return gaussian_blur(img, float(sigma_fraction) * img.shape[0])


def posterise(img: np.ndarray, levels: int) -> np.ndarray:
    """Each channel rounded to ``levels`` evenly spaced values (2 = pure colours)."""
    check_rgb(img)
    n = int(levels)
    if n < 2:
        raise ValueError(f"posterise needs >= 2 levels, got {levels}")
    return (np.round(np.clip(img, 0, 1) * (n - 1)) / (n - 1)).astype(np.float32)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """Half the time a palette colour, else a uniform random colour."""
    if rng.random() < 0.5:
        return np.asarray(PALETTE[int(rng.integers(len(PALETTE)))], dtype=np.float32)
    return rng.random(3, dtype=np.float32)


def _random_noise(size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    sub = ("uniform", "blurred", "stripes", "checker")[int(rng.integers(4))]
    p: dict[str, Any] = {"pattern": sub}
    if sub == "uniform":
        p["gray"] = bool(rng.random() < 0.3)
        return uniform_noise(size, rng, p["gray"]), p
    if sub == "blurred":
        p["sigma"] = float(size * rng.uniform(0.005, 0.05))
        return blurred_noise(size, p["sigma"], rng), p
    c0, c1 = _colour(rng), _colour(rng)
    if sub == "stripes":
        p["period"] = float(size * rng.uniform(0.01, 0.2))
        p["angle"] = float(rng.uniform(0, math.pi))
        return stripes(size, p["period"], p["angle"], c0, c1), p
    p["period"] = max(1, round(size * rng.uniform(0.004, 0.1)))
    return checker(size, p["period"], c0, c1), p


def _random_nonface(
    img: np.ndarray, backgrounds: Sequence[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    size = img.shape[0]
    if backgrounds and rng.random() < 0.75:
        i = int(rng.integers(len(backgrounds)))
        corner = CORNERS[int(rng.integers(4))]
        frac = float(rng.uniform(0.15, 0.35))
        p = {"source": "background", "photo": i, "corner": corner, "fraction": frac}
        return corner_crop(backgrounds[i], corner, frac, size), p
    grid = next((g for g in (8, 4, 2) if size % g == 0), None)
    if grid is None:
        raise ValueError(f"patch_shuffle needs an even image side, got {size}")
    return patch_shuffle(img, grid, rng), {"source": "patch_shuffle", "grid": grid}


def random_degenerate(
    img: np.ndarray,
    weights: Sequence[float],
    rng: np.random.Generator,
    backgrounds: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """One degenerate image the size of the face ``img``, of a kind drawn by ``weights``.

    Args:
        img: the clean face, (S, S, 3) float32 in [0, 1] (used by nonface, smooth, posterise).
        weights: relative odds of :data:`KINDS` (7 non-negative numbers).
        backgrounds: whole photographs (H, W, 3) float32 for ``nonface`` crops; without them
            ``nonface`` shuffles the face's tiles.

    Returns:
        ``(out, params)``: (S, S, 3) float32 on the 8-bit grid, e.g. ``{"kind": "constant", ...}``.
    """
    check_rgb(img)
    w = np.asarray(weights, float)
    if w.shape != (len(KINDS),) or w.min() < 0 or not w.sum():
        raise ValueError(
            f"degenerate weights: {len(KINDS)} non-negative numbers {KINDS}, not all 0; got {w}"
        )
    kind = KINDS[int(rng.choice(len(KINDS), p=w / w.sum()))]
    size = img.shape[0]
    p: dict[str, Any] = {"kind": kind}
    if kind == "constant":
        out = constant(size, _colour(rng))
    elif kind == "near_constant":
        p["sigma"] = float(rng.uniform(0.5, 4.0))
        out = near_constant(size, _colour(rng), p["sigma"], rng)
    elif kind == "gradient":
        c0, c1 = _colour(rng), _colour(rng)
        if rng.random() < 0.5:
            out = linear_gradient(size, c0, c1, float(rng.uniform(0, 2 * math.pi)))
        else:
            out = radial_gradient(size, c0, c1, rng.uniform(0.2, 0.8, 2), rng.uniform(0.3, 1.0))
    elif kind == "noise":
        out, sub = _random_noise(size, rng)
        p.update(sub)
    elif kind == "nonface":
        out, sub = _random_nonface(img, backgrounds, rng)
        p.update(sub)
    elif kind == "smooth":
        p["sigma_fraction"] = float(rng.uniform(0.015, 0.06))
        out = smooth_face(img, p["sigma_fraction"])
    else:
        p["levels"] = int(rng.integers(2, 5))
        out = posterise(img, p["levels"])
    return quantize(out), p


def degenerate_test_set(
    faces: Sequence[np.ndarray] = (),
    backgrounds: Sequence[np.ndarray] = (),
    sizes: Sequence[int] = (128, 256, 512),
    seed: int = 0,
) -> list[tuple[str, np.ndarray]]:
    """The fixed degenerate set of the validation: ``[(name, (S, S, 3) float32), ...]``.

    Without faces or backgrounds it holds the synthetic kinds only (constant, near-constant,
    gradients, noise patterns), each at every size in ``sizes``; with ``faces`` it adds their
    3-level posterisation (not their blur: a blurred face is a face of low quality, which the
    validation's blur family judges); with ``backgrounds`` the four
    corner crops (a quarter of the short side) of each photograph as the non-face kind, else
    the faces' shuffled tiles (8 x 8) stand in for it.
    Face- and photo-based images are made at the sizes in turn (image ``i`` at
    ``sizes[i % len(sizes)]``), so the set stays small. Same arguments, same set.
    """
    rng = np.random.default_rng([seed, 23])
    out: list[tuple[str, np.ndarray]] = []
    for n in sizes:
        for i, c in enumerate(PALETTE):
            out.append((f"constant_{i}_{n}", constant(n, c)))
        for i, c in enumerate(PALETTE[:4]):
            out.append((f"near_constant_{i}_{n}", near_constant(n, c, 2.0, rng)))
        out.append((f"linear_gradient_{n}", linear_gradient(n, PALETTE[0], PALETTE[1], 0.3)))
        out.append(
            (f"radial_gradient_{n}", radial_gradient(n, PALETTE[4], PALETTE[3], (0.5, 0.45), 0.7))
        )
        out.append((f"uniform_noise_{n}", uniform_noise(n, rng)))
        out.append((f"gray_noise_{n}", uniform_noise(n, rng, gray=True)))
        out.append((f"blurred_noise_{n}", blurred_noise(n, 0.02 * n, rng)))
        out.append((f"stripes_{n}", stripes(n, 0.08 * n, 0.5, PALETTE[5], PALETTE[1])))
        out.append((f"checker_{n}", checker(n, max(1, n // 32), PALETTE[0], PALETTE[1])))
    k = 0
    for i, face in enumerate(faces):
        n = sizes[k % len(sizes)]
        k += 1
        f = _resized(face, n)
        out.append((f"posterised_face_{i}_{n}", posterise(f, 3)))
        if not backgrounds:
            grid = 8 if n % 8 == 0 else 2
            out.append((f"shuffled_face_{i}_{n}", patch_shuffle(f, grid, rng)))
    for i, photo in enumerate(backgrounds):
        for corner in CORNERS:
            n = sizes[k % len(sizes)]
            k += 1
            out.append((f"background_{corner}_{i}_{n}", corner_crop(photo, corner, 0.25, n)))
    return [(name, quantize(img)) for name, img in out]


def _resized(img: np.ndarray, size: int) -> np.ndarray:
    check_rgb(img)
    if img.shape[:2] == (size, size):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(img, (size, size), interpolation=interp), 0, 1).astype(np.float32)


def load_photo(path: Any, max_side: int = 1024) -> np.ndarray:
    """Read a whole photograph as (H, W, 3) float32 RGB in [0, 1], shrunk to ``max_side``."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    h, w = bgr.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
