"""The face gate: the network, its file, its place in IFQAMetric, and its trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifqa_loss import IFQAMetric
from ifqa_loss.gate import GATE_SIZE, FaceGate, flat_statistics
from ifqa_loss.train.face_gate import (
    GateConfig,
    export_gate,
    make_pool,
    summarise,
    to_gate_input,
    train_gate,
)
from ifqa_loss.weights import bundled_gate_path, load_face_gate

LOG3 = math.log(3.0)  # sigmoid(-LOG3) = 0.25


def _gate_file(tmp_path, bias: float) -> str:
    """A gate whose answer is fixed by its last bias (zero weights): sigmoid(bias)."""
    gate = FaceGate(8)
    with torch.no_grad():
        gate.head[-1].weight.zero_()
        gate.head[-1].bias.fill_(bias)
    return str(export_gate(gate, tmp_path / f"gate{bias}.safetensors", GateConfig(width=8)))


def test_gate_gives_one_logit_per_image_at_any_size():
    gate = FaceGate(8)
    for side in (64, 128, 256, 300):
        assert gate(torch.zeros(2, 3, side, side)).shape == (2,)
    small, stats = FaceGate.prepare(torch.zeros(1, 3, 256, 256))
    assert small.shape[-1] == GATE_SIZE and stats.shape == (1, 2)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        gate(torch.zeros(3, 128, 128))


def test_gate_file_round_trip_and_errors(tmp_path):
    gate = FaceGate(8)
    path = export_gate(gate, tmp_path / "g.safetensors", GateConfig(width=8))
    back = load_face_gate(path)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    assert torch.equal(back(x), gate.eval()(x))
    assert not any(p.requires_grad for p in back.parameters())
    with pytest.raises(FileNotFoundError, match="face gate weights not found"):
        load_face_gate(tmp_path / "missing.safetensors")
    (tmp_path / "g.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        load_face_gate(tmp_path / "g.pth")
    wide = export_gate(FaceGate(16), tmp_path / "w.safetensors", GateConfig(width=16))
    meta_says_8 = tmp_path / "lies.safetensors"
    from safetensors.torch import load_file, save_file

    save_file(load_file(wide), meta_says_8, metadata={"width": "8"})
    with pytest.raises(ValueError, match="does not hold a FaceGate of width 8"):
        load_face_gate(meta_says_8)


def test_metric_multiplies_the_map_by_the_gate(tmp_path):
    x = torch.rand(3, 3, 64, 64)
    plain = IFQAMetric(model="ifqa-lite", device="cpu", face_gate=False)
    assert plain.face_gate is None
    shut = IFQAMetric(model="ifqa-lite", device="cpu", face_gate=_gate_file(tmp_path, -30.0))
    half = IFQAMetric(model="ifqa-lite", device="cpu", face_gate=_gate_file(tmp_path, 0.0))
    ref = plain.maps(x)
    assert torch.allclose(half.maps(x), ref * 0.5, atol=1e-6)
    assert torch.allclose(half(x), plain(x) * 0.5, atol=1e-6)
    assert (shut(x) < 1e-10).all() and (plain(x) > 1e-3).all()
    assert torch.allclose(half.region_scores(x)["eyes"], plain.region_scores(x)["eyes"] * 0.5)
    with pytest.raises(TypeError, match="face_gate must be"):
        IFQAMetric(model="ifqa-lite", device="cpu", face_gate=3)


def test_metric_gate_applies_to_files_as_to_tensors(tmp_path):
    import cv2

    img = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    plain = IFQAMetric(model="ifqa-lite", device="cpu", face_gate=False)
    half = IFQAMetric(model="ifqa-lite", device="cpu", face_gate=_gate_file(tmp_path, 0.0))
    quarter = IFQAMetric(model="ifqa-lite", device="cpu", face_gate=_gate_file(tmp_path, -LOG3))
    a, b, c = (m.score_files([path])[0] for m in (plain, half, quarter))
    assert b["score"] == pytest.approx(a["score"] * 0.5, rel=1e-5)
    assert b["p_face"] == pytest.approx(0.5) and b["flag"] is None  # at the threshold: a face
    assert c["score"] == pytest.approx(a["score"] * 0.25, rel=1e-5)
    assert c["p_face"] == pytest.approx(0.25) and c["flag"] == "no_face"
    assert "p_face" not in a and a["flag"] is None


def test_auto_gate_is_for_the_projects_own_models(tiny_cnn):
    if not bundled_gate_path().is_file():
        pytest.skip(f"no bundled gate at {bundled_gate_path()}")
    assert IFQAMetric(model="ifqa-lite", device="cpu").face_gate is not None
    assert IFQAMetric(model="ifqa-judge", device="cpu").face_gate is not None
    # a user's own network, or the architecture with other weights, is scored as it is
    assert IFQAMetric(model=tiny_cnn, device="cpu").face_gate is None
    sd = IFQAMetric(model="ifqa-lite", device="cpu").discriminator.state_dict()
    assert IFQAMetric(model="ifqa-lite", weights=sd, device="cpu").face_gate is None
    assert IFQAMetric(model=tiny_cnn, device="cpu", face_gate=True).face_gate is not None


def test_bundled_gate_passes_the_sample_face_and_shuts_on_flat_images():
    """The package's own sample face (skimage's astronaut, aligned) against flat images and
    noise: no shared data needed."""
    pytest.importorskip("skimage")
    from ifqa_loss.samples import astronaut_face

    if not bundled_gate_path().is_file():
        pytest.skip(f"no bundled gate at {bundled_gate_path()}")
    gate = load_face_gate()
    face = astronaut_face(256) * 2 - 1
    flat = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 3, 256, 256)
    noise = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    p_face = gate.probability(face)
    p_other = gate.probability(torch.cat([flat, noise]))
    assert (p_face > 0.9).all(), p_face
    assert (p_other < 0.05).all(), p_other


@pytest.mark.slow
def test_gate_trainer_learns_faces_from_flat_images():
    """A few steps on a pool made from two synthetic 'faces' (smooth random fields): the loss
    falls and the pool's summary has every kind in it."""
    rng = np.random.default_rng(0)
    faces = []
    for _ in range(2):
        low = rng.random((8, 8, 3)).astype(np.float32)
        faces.append(
            np.asarray(
                torch.nn.functional.interpolate(
                    torch.from_numpy(low).permute(2, 0, 1)[None], size=512, mode="bicubic"
                )[0]
                .permute(1, 2, 0)
                .clamp(0, 1)
            )
        )
    cfg = GateConfig(steps=40, batch=16, width=8, degraded_prob=0.0, artefact_prob=0.0, lr=2e-3)
    pool = make_pool(faces, [], cfg, 48, seed=0)
    assert pool.x.shape == (96, 3, GATE_SIZE, GATE_SIZE) and pool.x.dtype == torch.float16
    assert pool.stats.shape == (96, 2)
    assert pool.y.sum() == 48 and pool.kinds.count("face") == 48
    gate, history = train_gate(pool, cfg, log_every=10)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], history
    summary = summarise(gate, pool)
    assert 0.0 <= summary["faces_min"] <= summary["faces_p1"] <= 1.0
    assert any(k.startswith("max_") for k in summary)


def test_to_gate_input_is_the_gates_view_in_minus_one_one():
    rng = np.random.default_rng(0)
    img = np.full((300, 300, 3), 0.25, np.float32)
    for _ in range(4):  # either resize
        x, stats = to_gate_input(img, rng)
        assert x.shape == (3, GATE_SIZE, GATE_SIZE)
        assert torch.allclose(x, torch.full_like(x, -0.5), atol=1e-5)
        assert stats.tolist() == [1.0, 1.0]  # flat everywhere, one value per channel


def test_flat_statistics_tell_posterised_from_photographic():
    g = torch.Generator().manual_seed(0)
    # a smooth ramp with 1.5 grey levels of noise: nearly no flat neighbourhood, values spread
    ramp = torch.linspace(-1, 1, 96).view(1, 1, 1, 96).expand(1, 3, 96, 96)
    photo = (ramp + 0.012 * torch.randn(1, 3, 96, 96, generator=g)).clamp(-1, 1)
    posterised = torch.round((photo + 1) / 2 * 2) / 2 * 2 - 1  # 3 levels per channel
    (flat_photo, top_photo), (flat_post, top_post) = flat_statistics(
        torch.cat([photo, posterised])
    ).tolist()
    assert flat_photo < 0.05 and top_photo < 0.2
    assert flat_post > 0.8 and top_post == pytest.approx(1.0)


def test_recipe_changes_faces_and_non_face_crops_alike():
    """Fading lowers contrast with a warm cast; occlusion covers part of the face only; the
    non-face crops go through the faces' appearance changes (here: always gray), the flat
    kinds do not."""
    from ifqa_loss.train.face_gate import fade, make_negative, occlude

    rng = np.random.default_rng(0)
    img = rng.random((64, 64, 3)).astype(np.float32)
    faded = fade(img, rng)
    assert faded.std() < 0.85 * img.std()
    assert faded[..., 0].mean() > faded[..., 2].mean()  # warm
    covered = occlude(img, rng)
    changed = np.abs(covered - img).max(2) > 1e-3
    assert 0.0 < changed.mean() < 0.5
    cfg = GateConfig(gray_prob=1.0, sepia_prob=0.0, fade_prob=0.0, degraded_prob=0.0)
    cfg.lowres_prob = cfg.artefact_prob = 0.0
    photo = rng.random((200, 300, 3)).astype(np.float32)
    kinds = set()
    for _ in range(40):
        out, kind = make_negative(img, [photo], cfg, rng)
        kinds.add(kind)
        if kind == "nonface":
            assert np.allclose(out[..., 0], out[..., 1], atol=1e-6)  # gray, like gray faces
    assert "nonface" in kinds and "smooth" not in kinds  # never a blurred face


def test_p_face_is_the_gates_probability_inside_the_metric(tmp_path):
    x = torch.rand(2, 3, 64, 64)
    half = IFQAMetric(model="ifqa-lite", device="cpu", face_gate=_gate_file(tmp_path, 0.0))
    assert torch.allclose(half.p_face(x), torch.full((2,), 0.5))
    assert IFQAMetric(model="ifqa-lite", device="cpu", face_gate=False).p_face(x) is None
