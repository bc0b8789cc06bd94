"""Over-restoration artefacts: each operation, the random draw, and their use as fakes.

Small synthetic images only; the whole file runs in about a second on 2 cores.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from ifqa_loss.faces.degrade import gaussian_blur, quantize, unsharp
from ifqa_loss.train import data as data_module
from ifqa_loss.train.artefacts import (
    ARTEFACTS,
    checkerboard,
    colour_cast,
    oversmooth,
    random_artefact,
    ringing,
)
from ifqa_loss.train.config import DataConfig, DegradationConfig, config_from_dict
from ifqa_loss.train.data import FaceStream, psnr


def textured(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random colour image with a diagonal texture, (size, size, 3) float32."""
    rng = np.random.default_rng(seed)
    low = rng.random((6, 6, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = img + 0.1 * np.sin(2 * math.pi * 9 * (xx + yy))[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def step(h: int = 16, w: int = 128, lo: float = 0.3, hi: float = 0.7) -> np.ndarray:
    """A vertical step edge at ``x = w // 2``."""
    img = np.full((h, w, 3), lo, np.float32)
    img[:, w // 2 :] = hi
    return img


def hf_energy(img: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(img, cv2.CV_32F)).mean())


# ----------------------------------------------------------------------------- the operations


def test_unsharp_overshoots_at_an_edge_and_amount_zero_is_identity():
    img = textured()
    assert np.array_equal(unsharp(img, 2.0, 0.0), img)
    s = step()
    out = unsharp(s, 2.0, 1.5)
    assert out.max() > 0.7 + 0.05 and out.min() < 0.3 - 0.05  # halos on both sides
    assert np.allclose(out[:, :40], 0.3) and np.allclose(out[:, 90:], 0.7)  # far away: same
    grads = [hf_energy(unsharp(img, 2.0, a)) for a in (0.0, 1.0, 2.0)]
    assert grads == sorted(grads) and grads[2] > 1.5 * grads[0]


def test_ringing_oscillates_beyond_an_edge_where_a_gaussian_blur_does_not():
    s = step()
    row = ringing(s, 0.3)[8, :, 0]
    bright = row[66:100] - 0.7  # the plateau beyond the edge at x = 64
    crossings = int(np.sum(np.diff(np.sign(bright)) != 0))
    assert bright.max() > 0.02 and bright.min() < -0.005 and crossings >= 3
    assert row[:64].min() < 0.3 - 0.02  # undershoot on the dark side too
    blurred = gaussian_blur(s, 2.0)[8, :, 0]
    assert blurred.max() <= 0.7 + 1e-6 and blurred.min() >= 0.3 - 1e-6
    assert np.all(np.diff(blurred) >= -1e-6)  # monotone: no ringing
    # a pass band that keeps every frequency leaves the image as it was (no wrap-around edges)
    img = textured()
    assert np.abs(ringing(img, 2.0) - img).max() < 1e-5


def test_colour_cast_shifts_channel_means_more_in_the_dark():
    flat = np.full((32, 32, 3), 0.5, np.float32)
    shift = (10.0, -10.0, 5.0)
    moved = (colour_cast(flat, shift, 0.0) - flat).mean(axis=(0, 1)) * 255
    assert np.allclose(moved, shift, atol=1e-3)
    img = np.full((32, 32, 3), 0.9, np.float32)
    img[:16] = 0.1  # dark top half, bright bottom half
    d = (colour_cast(img, shift, 1.0) - img) * 255
    dark, bright = d[:16].mean(axis=(0, 1)), d[16:].mean(axis=(0, 1))
    assert np.allclose(dark, np.array(shift) * 0.9**2, atol=1e-3)  # weight (1 - luma)^2
    assert np.all(np.abs(dark) > 10 * np.abs(bright))


def test_oversmooth_flattens_texture_but_keeps_a_strong_edge():
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 0.1, np.float32)
    img[:, 32:] = 0.9
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32)

    def noise(o):  # texture left in a flat region
        return float(o[:, 4:24].std())

    def contrast(o):  # across the edge at x = 32
        return float(o[:, 33].mean() - o[:, 30].mean())

    smooth = oversmooth(img, 0.1, 3.0)
    gauss = gaussian_blur(img, 1.0)
    assert noise(smooth) < noise(img) / 3
    assert noise(gauss) >= noise(smooth)  # the Gaussian smooths no more ...
    assert contrast(smooth) > contrast(gauss) + 0.05  # ... yet softens the edge more
    assert contrast(smooth) > 0.95 * contrast(img)


def test_checkerboard_adds_energy_at_nyquist():
    img = 0.25 + 0.5 * textured(64)  # away from 0 and 1: nothing is clipped
    colour = (1.0, -1.0, 1.0)
    out = checkerboard(img, 1, 4.0, colour)
    diff = (out - img) * 255
    assert np.allclose(np.abs(diff), 4.0, atol=1e-3)
    assert np.all(np.sign(diff[0, 0]) == colour) and np.all(
        np.sign(diff[0, 1]) == -np.array(colour)
    )

    def nyquist(x):
        return float(np.abs(np.fft.fft2(x[..., 0]))[32, 32])

    assert nyquist(out) > 100 * max(nyquist(img), 1e-3)
    assert nyquist(out - img) == pytest.approx(64 * 64 * 4.0 / 255, rel=1e-3)  # all of it
    # period 2: the pattern sits at half the Nyquist frequency, none of it at Nyquist
    out2 = checkerboard(img, 2, 4.0, colour)
    assert nyquist(out2) < 1e-2 * nyquist(out)
    with pytest.raises(ValueError, match="period"):
        checkerboard(img, 0, 4.0, colour)


# ----------------------------------------------------------------------------- the random draw


def test_random_artefact_is_seeded_and_follows_the_config():
    img = quantize(textured())
    cfg = DegradationConfig(artefact_prob=1.0)
    a, pa = random_artefact(img, cfg, np.random.default_rng(3))
    b, pb = random_artefact(img, cfg, np.random.default_rng(3))
    assert np.array_equal(a, b) and pa == pb
    assert np.array_equal(quantize(a), a)  # on the 8-bit grid
    seen = {random_artefact(img, cfg, np.random.default_rng(s))[1]["artefact"] for s in range(60)}
    assert seen == set(ARTEFACTS)

    def draws(name, **over):
        w = [float(n == name) for n in ARTEFACTS]
        c = DegradationConfig(artefact_weights=w, **over)
        return [random_artefact(img, c, np.random.default_rng(s)) for s in range(20)]

    for out, p in draws("cast", cast_shift=[5.0, 6.0]):
        assert p["artefact"] == "cast" and all(5.0 <= abs(v) <= 6.0 for v in p["shift"])
        assert 0.0 <= p["dark_weight"] <= 1.0 and not np.array_equal(out, img)
    for _, p in draws("unsharp", unsharp_sigma=[1.5, 2.0], unsharp_amount=[0.7, 0.8]):
        assert 1.5 <= p["sigma"] <= 2.0 and 0.7 <= p["amount"] <= 0.8
    for _, p in draws("ringing", ringing_cutoff=[0.2, 0.25]):
        assert 0.2 <= p["cutoff"] <= 0.25
    for _, p in draws("smooth", smooth_sigma_color=[0.1, 0.12], smooth_sigma_space=[2.0, 3.0]):
        assert 0.1 <= p["sigma_color"] <= 0.12 and 2.0 <= p["sigma_space"] <= 3.0
    checks = draws("checker", checker_amplitude=[3.0, 4.0], checker_period=[1, 2])
    assert {p["period"] for _, p in checks} == {1, 2}
    assert all(3.0 <= p["amplitude"] <= 4.0 for _, p in checks)
    raw, _ = random_artefact(img, DegradationConfig(quantize=False), np.random.default_rng(0))
    assert raw.dtype == np.float32 and raw.min() >= 0 and raw.max() <= 1


# ----------------------------------------------------------------------------- the stream


def stream_faces(n: int = 4, size: int = 64) -> list[torch.Tensor]:
    return [
        torch.from_numpy((textured(size, i) * 255).round().astype(np.uint8).transpose(2, 0, 1))
        for i in range(n)
    ]


def stream_degradation(**over) -> DegradationConfig:
    values = {
        "sizes": [64, 48],
        "size_probs": [0.7, 0.3],
        "min_ops": 1,
        "blur_prob": 0.5,
        "down_prob": 0.5,
        "noise_prob": 0.5,
        "jpeg_prob": 0.5,
        "max_psnr": 40.0,
    }
    return DegradationConfig(**{**values, **over})


def test_stream_without_artefacts_is_unchanged(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("random_artefact called with artefact_prob 0")

    monkeypatch.setattr(data_module, "random_artefact", never)
    faces, dcfg = stream_faces(), DataConfig(base_size=64, aug_prob=0.5)
    old = FaceStream(faces, dcfg, stream_degradation(), 64, seed=5)
    new = FaceStream(faces, dcfg, stream_degradation(artefact_prob=0.0), 64, seed=5)
    for pos in range(6):
        a, b = old[pos], new[pos]
        assert torch.equal(a["real"], b["real"]) and torch.equal(a["degraded"], b["degraded"])
    # Values of this stream recorded before artefacts existed: an extra random draw when
    # artefacts are off would change which degradation each position gets (and break resumes).
    before = [
        (3, 0.11228, 0.184),
        (1, 0.13003, 0.16878),
        (0, -0.0531, 0.21485),
        (2, -0.03393, 0.26125),
        (1, 0.00789, 0.23958),
        (3, 0.08529, 0.26872),
    ]
    for pos, (index, mean, gap) in enumerate(before):
        it = new[pos]
        assert it["index"] == index
        assert float(it["degraded"].mean()) == pytest.approx(mean, abs=2e-4)
        assert float((it["degraded"] - it["real"]).abs().mean()) == pytest.approx(gap, abs=2e-4)


def test_stream_with_artefacts_makes_visible_artefact_fakes(monkeypatch):
    calls = []

    def spy(img, cfg, rng):
        out, p = random_artefact(img, cfg, rng)
        calls.append(p["artefact"])
        return out, p

    def never(*args, **kwargs):
        raise AssertionError("random_degradation called with artefact_prob 1")

    monkeypatch.setattr(data_module, "random_artefact", spy)
    monkeypatch.setattr(data_module, "random_degradation", never)
    faces, dcfg = stream_faces(), DataConfig(base_size=64, hflip=False)
    deg = stream_degradation(artefact_prob=1.0, sizes=[64], size_probs=None, max_psnr=None)
    s = FaceStream(faces, dcfg, deg, 64, seed=1)
    items = [s[p] for p in range(12)]
    assert len(calls) == 12 and len(set(calls)) >= 3
    for it in items:
        clean = faces[it["index"]].float() / 255 * 2 - 1  # no flip, no augmentation, same size
        assert torch.allclose(it["real"], clean, atol=1e-6)  # the real sample stays the clean face
        assert not torch.equal(it["real"], it["degraded"])
        assert it["degraded"].min() >= -1 and it["degraded"].max() <= 1
    a, b = s[5], s[5]
    assert torch.equal(a["degraded"], b["degraded"])


def test_max_psnr_redraws_invisible_artefacts():
    faces, dcfg = stream_faces(3), DataConfig(base_size=64)
    cast = {"artefact_prob": 1.0, "artefact_weights": [0, 0, 1, 0, 0], "cast_shift": [0.0, 20.0]}

    def values(deg):
        s = FaceStream(faces, dcfg, deg, 64, seed=2)
        return [
            psnr(it["real"] / 2 + 0.5, it["degraded"] / 2 + 0.5)
            for it in map(s.__getitem__, range(20))
        ]

    loose = values(stream_degradation(max_psnr=None, **cast))
    strict = values(stream_degradation(max_psnr=35.0, max_tries=50, **cast))
    assert max(loose) > 35.0 and max(strict) <= 35.0


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"artefact_prob": 1.5}, "artefact_prob"),
        ({"artefact_prob": -0.1}, "artefact_prob"),
        ({"artefact_weights": [1.0, 1.0]}, "artefact_weights"),
        ({"artefact_weights": [0, 0, 0, 0, 0]}, "artefact_weights"),
        ({"artefact_weights": [1, -1, 1, 1, 1]}, "artefact_weights"),
        ({"unsharp_amount": [3.0, 1.0]}, "unsharp_amount"),
        ({"ringing_cutoff": [-0.1, 0.5]}, "ringing_cutoff"),
        ({"cast_shift": [20.0]}, "cast_shift"),
        ({"checker_period": [0, 2]}, "checker_period"),
        ({"checker_period": [1.5, 2]}, "checker_period"),
    ],
)
def test_config_rejects_bad_artefact_settings(values, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict({"degradation": values})


def test_config_accepts_artefact_settings():
    cfg = config_from_dict(
        {"degradation": {"artefact_prob": 0.3, "artefact_weights": [2, 1, 1, 0, 1]}}
    )
    assert cfg.degradation.artefact_prob == 0.3
    assert DegradationConfig().artefact_prob == 0.0  # off by default
