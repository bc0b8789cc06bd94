"""Degenerate images (ifqa_loss/train/degenerate.py): each kind, seeding, the stream option,
and the validation's degenerate family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifqa_loss.train import degenerate as G
from ifqa_loss.train.config import config_from_dict
from ifqa_loss.train.data import FaceStream
from ifqa_loss.train.validation import evaluate_degenerate, format_degenerate, meets_targets


def _face(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random image with edges: something with texture to blur and posterise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = rng.random((1, 1, 3)) * 0.5 + 0.25 + 0.2 * np.sin(2 * math.pi * 5 * (xx + yy))[..., None]
    img = img + 0.1 * rng.standard_normal((size, size, 3))
    return np.clip(img, 0, 1).astype(np.float32)


def test_constant_and_near_constant():
    x = G.constant(32, (0.2, 0.4, 0.6))
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert (x == x[0, 0]).all() and np.allclose(x[0, 0], (0.2, 0.4, 0.6))
    y = G.near_constant(32, (0.5, 0.5, 0.5), 2.0, np.random.default_rng(0))
    assert 0 < y.std() < 4 / 255 and abs(y.mean() - 0.5) < 1 / 255
    with pytest.raises(ValueError, match="3 numbers in"):
        G.constant(8, (1.5, 0, 0))
    with pytest.raises(ValueError, match="size must be"):
        G.constant(0, (0, 0, 0))


def test_gradients_run_between_their_colours():
    lin = G.linear_gradient(64, (0, 0, 0), (1, 1, 1), 0.0)  # left to right
    assert lin[:, 0].max() < 0.02 and lin[:, -1].min() > 0.98
    assert np.all(np.diff(lin[10, :, 0]) >= 0)  # monotone along the direction
    rad = G.radial_gradient(64, (1, 0, 0), (0, 0, 1), (0.5, 0.5), 0.4)
    assert rad[32, 32, 0] > 0.95 and rad[0, 0, 2] == pytest.approx(1.0)


def test_noise_and_patterns():
    rng = np.random.default_rng(1)
    u = G.uniform_noise(64, rng)
    assert 0.25 < u.std() < 0.32 and not np.array_equal(u[..., 0], u[..., 1])
    g = G.uniform_noise(64, rng, gray=True)
    assert np.array_equal(g[..., 0], g[..., 2])
    b = G.blurred_noise(64, 3.0, rng)
    assert b.min() == pytest.approx(0, abs=1e-6) and b.max() == pytest.approx(1, abs=1e-6)
    # blurred: neighbours are much more alike than in white noise
    assert np.abs(np.diff(b, axis=1)).mean() < 0.5 * np.abs(np.diff(u, axis=1)).mean()
    s = G.stripes(64, 8, 0.0, (0, 0, 0), (1, 1, 1))
    assert set(np.unique(s)) == {0.0, 1.0} and np.array_equal(s[0], s[40])  # vertical stripes
    c = G.checker(8, 2, (0, 0, 0), (1, 1, 1))
    assert c[0, 0, 0] == 0 and c[0, 2, 0] == 1 and c[2, 0, 0] == 1 and c[2, 2, 0] == 0
    with pytest.raises(ValueError, match="period must be >= 1"):
        G.checker(8, 0, (0, 0, 0), (1, 1, 1))


def test_corner_crop_takes_the_corner_of_the_photograph():
    photo = np.zeros((100, 200, 3), np.float32)
    photo[:25, -25:] = 1.0  # only the top-right corner is white
    tr = G.corner_crop(photo, "top_right", 0.25, 32)
    tl = G.corner_crop(photo, "top_left", 0.25, 32)
    assert tr.shape == (32, 32, 3) and tr.min() > 0.99 and tl.max() < 0.01
    with pytest.raises(ValueError, match="unknown corner"):
        G.corner_crop(photo, "middle", 0.25, 32)


def test_patch_shuffle_keeps_the_tiles_and_moves_them():
    face = _face(64)
    out = G.patch_shuffle(face, 4, np.random.default_rng(0))

    def tiles(x: np.ndarray) -> list[bytes]:
        cells = [(i, j) for i in range(0, 64, 16) for j in range(0, 64, 16)]
        return sorted(x[i : i + 16, j : j + 16].tobytes() for i, j in cells)

    assert tiles(out) == tiles(face) and not np.array_equal(out, face)
    with pytest.raises(ValueError, match="grid"):
        G.patch_shuffle(face, 5, np.random.default_rng(0))


def test_smoothing_and_posterising():
    face = _face(64)
    sm = G.smooth_face(face, 0.05)
    assert np.abs(np.diff(sm, axis=1)).mean() < 0.2 * np.abs(np.diff(face, axis=1)).mean()
    po = G.posterise(face, 3)
    assert set(np.round(np.unique(po), 6)) <= {0.0, 0.5, 1.0}
    with pytest.raises(ValueError, match=">= 2 levels"):
        G.posterise(face, 1)


@pytest.mark.parametrize("k", range(len(G.KINDS)))
def test_random_degenerate_draws_each_kind_seeded(k):
    face = _face(64)
    w = [0.0] * len(G.KINDS)
    w[k] = 1.0
    photos = [np.random.default_rng(5).random((80, 120, 3), dtype=np.float32)]
    a, pa = G.random_degenerate(face, w, np.random.default_rng(7), photos)
    b, pb = G.random_degenerate(face, w, np.random.default_rng(7), photos)
    assert pa == pb and np.array_equal(a, b) and pa["kind"] == G.KINDS[k]
    assert a.shape == face.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, np.round(a * 255) / 255)  # on the 8-bit grid
    assert not np.array_equal(a, face)


def test_random_degenerate_rejects_bad_weights():
    with pytest.raises(ValueError, match="7 non-negative"):
        G.random_degenerate(_face(32), [1.0, 1.0], np.random.default_rng(0))


def test_test_set_is_fixed_and_covers_kinds_and_sizes():
    a = G.degenerate_test_set(sizes=(32, 64))
    b = G.degenerate_test_set(sizes=(32, 64))
    assert [n for n, _ in a] == [n for n, _ in b]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
    assert {img.shape[0] for _, img in a} == {32, 64}
    names = " ".join(n for n, _ in a)
    for kind in ("constant", "near_constant", "gradient", "noise", "stripes", "checker"):
        assert kind in names
    faces = [_face(64, i) for i in range(3)]
    photos = [np.random.default_rng(5).random((80, 120, 3), dtype=np.float32)]
    full = " ".join(n for n, _ in G.degenerate_test_set(faces, photos, sizes=(32, 64)))
    assert "posterised_face" in full and "background_top_left" in full
    assert "smooth_face" not in full  # a blurred face is a face of low quality, not degenerate
    assert "shuffled_face" not in full  # the photographs' corners are the non-face kind
    assert "shuffled_face" in " ".join(n for n, _ in G.degenerate_test_set(faces, sizes=(32,)))


def test_stream_option_makes_degenerate_fakes_and_is_off_by_default():
    faces = [torch.from_numpy((_face(128) * 255).round().astype(np.uint8).transpose(2, 0, 1))]
    base = {
        "model": {"width": 0.05, "native_size": 96},
        "data": {"base_size": 128, "train": ["*.png"], "hflip": False},
        "degradation": {"sizes": [128], "max_psnr": None, "gray_prob": 0.0},
    }
    off = config_from_dict(base)
    on = config_from_dict({**base, "degradation": {**base["degradation"], "degenerate_prob": 1.0}})
    s_off = FaceStream(faces, off.data, off.degradation, 96, seed=0)
    s_on = FaceStream(faces, on.data, on.degradation, 96, seed=0)
    assert off.degradation.degenerate_prob == 0.0  # off unless asked for
    items = [s_on[i] for i in range(12)]
    assert all(torch.equal(it["real"], s_off[i]["real"]) for i, it in enumerate(items))
    assert all(not torch.equal(it["degraded"], s_off[i]["degraded"]) for i, it in enumerate(items))
    assert all(it["degraded"].shape == (3, 96, 96) for it in items)
    # some constant fakes among 12 draws of 7 kinds is not guaranteed; the spread is:
    spreads = [float(it["degraded"].std()) for it in items]
    assert max(spreads) > 0.05 and len({round(s, 4) for s in spreads}) > 3
    with pytest.raises(ValueError, match="degenerate_prob must be in"):
        config_from_dict({"degradation": {"degenerate_prob": 1.5}})
    with pytest.raises(ValueError, match="degenerate_weights must be 7"):
        config_from_dict({"degradation": {"degenerate_weights": [1.0]}})


class _FixedScores:
    """A stand-in metric: the score of an image is its mean value (scores what it is shown)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(1, 2, 3))


def test_degenerate_family_fails_when_one_image_reaches_the_lowest_clean_face():
    dark = [
        ("constant_0_32", G.constant(32, (0.1, 0.1, 0.1))),
        ("noise_64", G.constant(64, (0.2,) * 3)),
    ]
    ok = evaluate_degenerate(_FixedScores(), dark, [0.5, 0.3, 0.9])
    assert ok["passed"] and ok["above"] == 0 and ok["min_clean"] == 0.3
    assert ok["worst"] == "noise_64" and ok["worst_margin"] == pytest.approx(0.2 - 0.3, abs=1e-6)
    assert meets_targets({"families": {}, "degenerate": ok})
    bright = [*dark, ("constant_1_32", G.constant(32, (0.8,) * 3))]
    bad = evaluate_degenerate(_FixedScores(), bright, [0.5, 0.3, 0.9])
    assert not bad["passed"] and bad["above"] == 1 and bad["worst"] == "constant_1_32"
    assert bad["worst_margin"] == pytest.approx(0.5, abs=1e-6)
    assert bad["by_kind"]["constant"] == pytest.approx(0.8, abs=1e-6)
    assert not meets_targets({"families": {}, "degenerate": bad})
    assert "FAILED: 1/3" in format_degenerate(bad)
    with pytest.raises(ValueError, match="at least one image"):
        evaluate_degenerate(_FixedScores(), [], [0.5])


@pytest.mark.slow
def test_training_with_degenerate_fakes_and_backgrounds_reports_the_family(tmp_path):
    """A tiny run: photographs are read from data.backgrounds under the data root, and the
    final validation carries the degenerate family."""
    import cv2

    from ifqa_loss.train.trainer import load_backgrounds, train

    (tmp_path / "photos").mkdir()
    for i in range(2):
        img = (np.random.default_rng(i).random((90, 150, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "photos" / f"p{i}.png"), img)
    cfg = config_from_dict(
        {
            "model": {"width": 0.05, "native_size": 64},
            "generator": {"channels": 8, "blocks": 1, "unshuffle": 2},
            "data": {"base_size": 64, "train": ["*.png"], "backgrounds": ["photos/*.png"]},
            "degradation": {"sizes": [64], "degenerate_prob": 0.5},
            "loss": {"mix_fraction": 0.0, "fake_degraded_fraction": 1.0},
            "run": {"steps": 2, "batch_size": 2, "threads": 1, "progress": False},
        }
    )
    assert len(load_backgrounds(cfg, tmp_path)) == 2
    faces = [torch.from_numpy((_face(64, i) * 255).round().astype(np.uint8).transpose(2, 0, 1))]
    val = [torch.from_numpy(_face(64, 9).transpose(2, 0, 1).copy())]
    summary = train(cfg, tmp_path / "run", data_root=tmp_path, faces=faces, val_faces=val)
    deg = summary["validation"]["degenerate"]
    assert deg["n"] > 20 and 0 <= deg["above"] <= deg["n"] and len(deg["clean_scores"]) == 1
    cfg.data.backgrounds = ["nothing/*.png"]
    with pytest.raises(FileNotFoundError, match="no background photographs"):
        load_backgrounds(cfg, tmp_path)
