import math
import shutil

import pytest
import torch

from ifqa_loss.masks import (
    FFHQ_TEMPLATE_512,
    REGIONS,
    FaceRegionMasks,
    face_region_masks,
    similarity_from_points,
    template_landmarks,
)

S = 256
CENTRE = torch.tensor([S / 2, S / 2])


def argmax_xy(mask: torch.Tensor) -> torch.Tensor:
    """(x, y) of the largest pixel of an (H, W) mask."""
    i = int(mask.flatten().argmax())
    return torch.tensor([i % mask.shape[-1], i // mask.shape[-1]], dtype=torch.float32)


def principal_angle(mask: torch.Tensor) -> tuple[float, float]:
    """Orientation (degrees) and major/minor std ratio of an (H, W) mask's second moments."""
    h, w = mask.shape
    ys, xs = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    m = mask / mask.sum()
    mx, my = (m * xs).sum(), (m * ys).sum()
    cxx = (m * (xs - mx) ** 2).sum()
    cyy = (m * (ys - my) ** 2).sum()
    cxy = (m * (xs - mx) * (ys - my)).sum()
    evals = torch.linalg.eigvalsh(torch.stack([torch.stack([cxx, cxy]), torch.stack([cxy, cyy])]))
    angle = 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy))
    return angle, math.sqrt(evals[1] / evals[0])


def synthetic_68(size: int = S, dtype=torch.float32) -> torch.Tensor:
    """iBUG-68-like face laid out around the scaled FFHQ template, shape (1, 68, 2)."""
    le, re, tip, ml, mr = (template_landmarks(size, dtype=torch.float64)[0]).unbind(0)
    iod = float((re - le).norm())

    def arc(c, rx, ry, t0, t1, n):
        t = torch.linspace(t0, t1, n, dtype=torch.float64)
        return torch.stack([c[0] + rx * torch.cos(t), c[1] + ry * torch.sin(t)], -1)

    mid = (le + re) / 2
    mouth_c = (ml + mr) / 2
    half_mouth = float((mr - ml).norm()) / 2
    brow_up = torch.tensor([0.0, -0.2 * iod], dtype=torch.float64)
    pts = [
        arc(mid, 1.0 * iod, 1.6 * iod, math.pi, 0.0, 17),  # 0-16 jaw: ear, chin, ear
        arc(le + brow_up, 0.3 * iod, 0.12 * iod, math.pi, 2 * math.pi, 5),  # 17-21 brow
        arc(re + brow_up, 0.3 * iod, 0.12 * iod, math.pi, 2 * math.pi, 5),  # 22-26 brow
        torch.stack([mid + (tip - mid) * f for f in (0.15, 0.4, 0.65, 0.9)]),  # 27-30 bridge
        arc(tip, 0.18 * iod, 0.05 * iod, math.pi, 0.0, 5),  # 31-35 nostrils
        arc(le, 0.2 * iod, 0.07 * iod, math.pi, 3 * math.pi - math.pi / 3, 6),  # 36-41
        arc(re, 0.2 * iod, 0.07 * iod, math.pi, 3 * math.pi - math.pi / 3, 6),  # 42-47
        arc(mouth_c, half_mouth, 0.2 * iod, math.pi, 3 * math.pi - math.pi / 6, 12),  # 48-59 outer
        arc(mouth_c, 0.7 * half_mouth, 0.05 * iod, math.pi, 3 * math.pi - math.pi / 4, 8),  # 60-67
    ]
    lm = torch.cat(pts, 0)
    assert lm.shape == (68, 2)
    return lm.unsqueeze(0).to(dtype)


def rotate(points: torch.Tensor, degrees: float, centre: torch.Tensor = CENTRE) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    rot = torch.tensor([[c, -s], [s, c]], dtype=points.dtype)
    return (points - centre.to(points)) @ rot.T + centre.to(points)


# --------------------------------------------------------------------------- shapes and types


@pytest.mark.parametrize("kind", ["none", "five", "sixty_eight"])
def test_shape_range_dtype_device(kind):
    regions = ("left_eye", "rest", "face")
    if kind == "none":
        out = face_region_masks(None, (48, 64), regions, batch_size=3, dtype=torch.float64)
        assert out.shape == (3, 3, 48, 64) and out.dtype == torch.float64
    else:
        lm = template_landmarks(64, 2) if kind == "five" else synthetic_68(64).expand(2, 68, 2)
        out = face_region_masks(lm.to(torch.float64), 64, regions)
        assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float64
    assert out.device.type == "cpu"
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.isfinite(out).all()
    assert out.amax(dim=(-2, -1)).min() > 0.9  # every region is actually present


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_follows_cuda_device():
    lm = template_landmarks(64, 2, device="cuda") + 1.0
    out = face_region_masks(lm, 64, REGIONS)
    assert out.device == lm.device
    torch.testing.assert_close(out.cpu(), face_region_masks(lm.cpu(), 64, REGIONS))
    assert face_region_masks(None, 32, device="cuda").device.type == "cuda"


def test_half_precision_is_finite():
    lm = template_landmarks(S, dtype=torch.float16)
    out = face_region_masks(lm, S, REGIONS)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(
        out.float(), face_region_masks(lm.float(), S, REGIONS), atol=2e-3, rtol=0
    )


def test_default_dtype_and_regions():
    out = face_region_masks(None, 32)
    assert out.shape == (1, 3, 32, 32) and out.dtype == torch.float32


def test_template_constants():
    assert FFHQ_TEMPLATE_512.shape == (5, 2)
    assert REGIONS == ("left_eye", "right_eye", "eyes", "nose", "mouth", "face", "rest")
    t = template_landmarks((128, 256), batch_size=2, dtype=torch.float64)
    assert t.shape == (2, 5, 2) and t.dtype == torch.float64
    expected = FFHQ_TEMPLATE_512.double() * torch.tensor([0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(t[1], expected)


def test_module_matches_function():
    module = FaceRegionMasks(40, ("nose", "rest"), softness=1.5)
    lm = template_landmarks(40, 2) + torch.randn(2, 5, 2)
    torch.testing.assert_close(
        module(lm), face_region_masks(lm, 40, ("nose", "rest"), softness=1.5)
    )
    assert module(batch_size=2).shape == (2, 2, 40, 40)
    assert "nose" in repr(module)


# --------------------------------------------------------------------------- geometry


def test_template_peaks_at_landmarks():
    out = face_region_masks(None, S, ("left_eye", "right_eye", "eyes", "nose", "mouth"))[0]
    le, re, tip, ml, mr = template_landmarks(S)[0]
    assert (argmax_xy(out[0]) - le).abs().max() <= 1.0
    assert (argmax_xy(out[1]) - re).abs().max() <= 1.0
    assert (argmax_xy(out[2][:, : S // 2]) - le).abs().max() <= 1.0  # union peaks at both eyes
    assert (argmax_xy(out[2][:, S // 2 :]) + torch.tensor([S // 2, 0]) - re).abs().max() <= 1.0
    assert (argmax_xy(out[4]) - (ml + mr) / 2).abs().max() <= 1.0
    # nose: on the segment from the tip towards the eye midpoint, closer to the tip
    peak, mid = argmax_xy(out[3]), (le + re) / 2
    seg = mid - tip
    t = float((peak - tip) @ seg / (seg @ seg))
    assert -0.05 <= t <= 0.5
    assert (peak - (tip + t * seg)).norm() <= 1.5
    assert out.amax(dim=(-2, -1)).min() > 0.99


def test_translation_moves_peaks():
    lm = template_landmarks(S)
    shift = torch.tensor([10.0, 5.0])
    a = face_region_masks(lm, S, REGIONS)[0]
    b = face_region_masks(lm + shift, S, REGIONS)[0]
    for i in (0, 1, 3, 4):
        torch.testing.assert_close(argmax_xy(b[i]), argmax_xy(a[i]) + shift)
    # the whole mask is shifted (compare where both are inside the image)
    torch.testing.assert_close(b[:, 5:, 10:], a[:, :-5, :-10], atol=1e-4, rtol=0)


def test_rotation_follows_eye_line():
    lm = template_landmarks(S)
    rot = rotate(lm, 30.0)
    a = face_region_masks(lm, S, ("left_eye", "nose"))[0]
    b = face_region_masks(rot, S, ("left_eye", "nose"))[0]
    angle_a, ratio_a = principal_angle(a[0])
    angle_b, ratio_b = principal_angle(b[0])
    assert abs(angle_a) < 2.0 and ratio_a > 1.4
    assert abs(angle_b - 30.0) < 2.0 and ratio_b > 1.4
    # the nose is elongated along the rotated vertical axis (90 + 30 degrees == -60 degrees)
    angle_n, _ = principal_angle(b[1])
    assert abs(angle_n + 60.0) < 2.0
    assert (argmax_xy(b[0]) - rot[0, 0]).abs().max() <= 1.0


def test_larger_face_larger_masks():
    lm = (template_landmarks(S) - CENTRE) * 0.5 + CENTRE  # small enough to stay in the image
    big = (lm - CENTRE) * 2 + CENTRE
    a = face_region_masks(lm, S, REGIONS).sum((-2, -1))
    b = face_region_masks(big, S, REGIONS).sum((-2, -1))
    assert (b / a > 3.0).all()  # area grows ~4x


def test_softness_scales_spread():
    a = face_region_masks(None, 64, ("eyes", "face"), softness=0.5).sum((-2, -1))
    b = face_region_masks(None, 64, ("eyes", "face"), softness=2.0).sum((-2, -1))
    assert b[0, 0] > 4 * a[0, 0]
    assert b[0, 1] > a[0, 1]


def test_rest_excludes_features_and_background():
    out = face_region_masks(None, S, ("rest", "face"))[0]
    rest, face = out
    for x, y in template_landmarks(S)[0, :2].round().long().tolist():
        assert rest[y, x] < 0.01
    cheek = (87, 160)  # below the left eye, beside the nose, above the mouth
    assert rest[cheek[1], cheek[0]] > 0.5
    assert face[160, 128] > 0.95 and face[228, 128] > 0.3  # chin area is in the face
    for y, x in ((0, 0), (0, S - 1), (S - 1, 0), (S - 1, S - 1)):
        assert face[y, x] < 1e-6 and rest[y, x] < 1e-6


def test_sixty_eight_points_peak_at_region_means():
    lm = synthetic_68(S, torch.float64)
    regions = ("left_eye", "right_eye", "nose", "mouth", "face")
    out = face_region_masks(lm, S, regions)[0]
    groups = (range(36, 42), range(42, 48), range(27, 36), range(48, 68), range(27))
    for mask, idx in zip(out, groups, strict=True):
        mean = lm[0, list(idx)].mean(0).float()
        assert (argmax_xy(mask) - mean).abs().max() <= 1.0
        assert mask.max() > 0.99
    rest = face_region_masks(lm, S, ("rest",))[0, 0]
    assert rest[160, 87] > 0.5 and rest[0, 0] < 1e-6


def test_sixty_eight_degenerate_points_still_valid():
    lm = torch.full((1, 68, 2), 20.0)
    out = face_region_masks(lm, 40, REGIONS)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert (argmax_xy(out[0, 0]) == torch.tensor([20.0, 20.0])).all()


def test_batch_equals_stacked_single():
    lm = torch.cat([template_landmarks(S), rotate(template_landmarks(S), -15.0) + 3.0])
    batch = face_region_masks(lm, S, REGIONS)
    single = torch.cat([face_region_masks(lm[i : i + 1], S, REGIONS) for i in range(2)])
    torch.testing.assert_close(batch, single)
    assert not torch.allclose(batch[0], batch[1])
    lm68 = torch.cat([synthetic_68(S), synthetic_68(S) * 0.9 + 5.0])
    batch = face_region_masks(lm68, S, ("nose", "face"))
    single = torch.cat([face_region_masks(lm68[i : i + 1], S, ("nose", "face")) for i in range(2)])
    torch.testing.assert_close(batch, single)


def test_similarity_from_points_recovers_transform():
    src = torch.rand(3, 5, 2, dtype=torch.float64) * 100
    ang = torch.tensor([0.3, -1.0, 2.5], dtype=torch.float64)
    scale = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    cos, sin = ang.cos(), ang.sin()
    rot = scale[:, None, None] * torch.stack(
        [torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2
    )
    t = torch.tensor([[1.0, 2.0], [-5.0, 0.0], [10.0, 20.0]], dtype=torch.float64)
    dst = src @ rot.transpose(1, 2) + t[:, None]
    m = similarity_from_points(src, dst)
    assert m.shape == (3, 2, 3)
    torch.testing.assert_close(m[:, :, :2], rot)
    torch.testing.assert_close(m[:, :, 2], t)
    with pytest.raises(ValueError, match="equal N"):
        similarity_from_points(src, dst[:, :4])


# --------------------------------------------------------------------------- autograd / compile


@pytest.mark.slow
def test_gradcheck_five_points():
    lm = (template_landmarks(24, dtype=torch.float64) + 0.3).requires_grad_()

    def fn(x):
        return face_region_masks(x, 24, ("left_eye", "mouth", "rest"))

    assert torch.autograd.gradcheck(fn, (lm,), eps=1e-6, atol=1e-5)


@pytest.mark.slow
def test_gradcheck_sixty_eight_points():
    torch.manual_seed(0)
    lm = synthetic_68(24, torch.float64) + 0.1 * torch.randn(1, 68, 2, dtype=torch.float64)

    def fn(x):
        return face_region_masks(x, 24, ("eyes", "rest"))

    assert torch.autograd.gradcheck(fn, (lm.requires_grad_(),), eps=1e-6, atol=1e-5)


def _compile_available() -> bool:
    # inductor on CPU needs dynamo support and a C++ compiler
    return torch._dynamo.is_dynamo_supported() and shutil.which("c++") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _compile_available(), reason="torch.compile is unavailable")
def test_torch_compile_matches_eager():
    lm = template_landmarks(32, 2) + torch.randn(2, 5, 2)
    compiled = torch.compile(face_region_masks, fullgraph=True)
    expected = face_region_masks(lm, 32, REGIONS)
    torch.testing.assert_close(compiled(lm, 32, REGIONS), expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("landmarks", "size", "regions", "error", "words"),
    [
        ([[1.0, 2.0]] * 5, 32, ("eyes",), TypeError, "torch.Tensor"),
        (torch.zeros(5, 2), 32, ("eyes",), ValueError, "unsqueeze"),
        (torch.zeros(68, 2), 32, ("eyes",), ValueError, "unsqueeze"),
        (torch.zeros(1, 6, 2), 32, ("eyes",), ValueError, "shape"),
        (torch.zeros(1, 5, 3), 32, ("eyes",), ValueError, "shape"),
        (torch.zeros(1, 1, 5, 2), 32, ("eyes",), ValueError, "shape"),
        (torch.zeros(1, 5, 2, dtype=torch.long), 32, ("eyes",), TypeError, "floating"),
        (torch.full((1, 5, 2), float("nan")), 32, ("eyes",), ValueError, "NaN"),
        (torch.full((1, 5, 2), float("inf")), 32, ("eyes",), ValueError, "Inf"),
        (None, 0, ("eyes",), ValueError, "size"),
        (None, (16, -1), ("eyes",), ValueError, "size"),
        (None, 32, (), ValueError, "empty"),
        (None, 32, ("eyes", "ear"), ValueError, "accepted names.*left_eye"),
    ],
)
def test_bad_inputs(landmarks, size, regions, error, words):
    with pytest.raises(error, match=words):
        face_region_masks(landmarks, size, regions)


def test_bad_module_and_options():
    with pytest.raises(ValueError, match="softness"):
        face_region_masks(None, 16, softness=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        face_region_masks(None, 16, batch_size=0)
    with pytest.raises(ValueError, match="accepted names"):
        FaceRegionMasks(16, ("lips",))
    # a bare region name is accepted as a one-element list
    assert face_region_masks(None, 16, "nose").shape == (1, 1, 16, 16)
