"""Faces in photographs: dlib detection and landmarks, FFHQ alignment, pasting back, and
``ifqa score --align`` (one row per face, photos without faces, exit codes)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ifqa_loss import align
from ifqa_loss.cli import EXIT_ALL_FAILED, EXIT_NO_FACE, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main
from ifqa_loss.masks import template_landmarks

LITE = ["--model", "ifqa-lite", "--device", "cpu", "--workers", "0"]
WHOLE = {"00.jpg": 2, "10045.png": 3, "Blake_Lively.jpg": 2}  # faces dlib's HOG finds
HAS_EXTRA = (
    importlib.util.find_spec("dlib") is not None
    and importlib.util.find_spec("face_recognition_models") is not None
)
needs_extra = pytest.mark.skipif(
    not HAS_EXTRA,
    reason='dlib or face_recognition_models not installed: pip install "ifqa-loss[align]"',
)


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def similarity_params(m: np.ndarray) -> tuple[float, float]:
    """(scale, angle in degrees) of a (2, 3) similarity."""
    return math.hypot(m[0, 0], m[1, 0]), math.degrees(math.atan2(m[1, 0], m[0, 0]))


def smooth_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A low-frequency RGB image: resampling it at slightly wrong places changes little."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def ffhq512(faces_dir) -> np.ndarray:
    """FFHQ image 00000 (an FFHQ-aligned face) at 512 px, RGB."""
    img = rgb(faces_dir / "gpen" / "ffhq-10" / "00000.png")
    return cv2.resize(img, (512, 512), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def ffhq_face(ffhq512) -> align.Face:
    if not HAS_EXTRA:
        pytest.skip('the [align] extra is not installed: pip install "ifqa-loss[align]"')
    faces = align.detect_faces(ffhq512)
    assert len(faces) == 1
    return faces[0]


# --- without the extra -------------------------------------------------------------------


def test_missing_extra_names_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    hint = 'pip install "ifqa-loss[align]"'
    with pytest.raises(ImportError, match=hint.replace("[", r"\[").replace("]", r"\]")):
        align.detect_faces(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ImportError, match="ifqa-loss"):
        align.detect_landmarks(torch.zeros(1, 3, 64, 64))
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), smooth_photo(64, 64))
    assert main(["score", str(img), "--align", *LITE]) == EXIT_USAGE
    assert hint in capsys.readouterr().err


def test_invert_and_paste_back_undo_the_crop():
    photo = smooth_photo(300, 400)
    a = 0.8 * np.array([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]])
    m = np.concatenate([a, [[-60.0], [40.0]]], 1)  # photo -> crop
    inv = align.invert_affine(m)
    np.testing.assert_allclose(align.invert_affine(inv), m, atol=1e-12)
    np.testing.assert_allclose((np.vstack([m, [0, 0, 1]]) @ np.vstack([inv, [0, 0, 1]]))[:2],
                               [[1, 0, 0], [0, 1, 0]], atol=1e-12)  # fmt: skip
    crop = align._warp(photo, m, 200, "zeros")
    back = align.paste_back(np.zeros_like(photo), crop, m)
    cover = align.paste_back(np.zeros((300, 400), np.float32), np.ones((200, 200), np.float32), m)
    inside = cover > 0.999
    assert inside.sum() > 20_000
    diff = np.abs(back.astype(int) - photo.astype(int))[inside]
    assert diff.mean() < 1.5, diff.mean()  # pixel-centre conventions agree both ways
    # a 100 px picture of the 200 px crop (a realness map at half size) lands at the same place
    ramp = np.tile(np.arange(200, dtype=np.float32), (200, 1))
    half = np.tile((np.arange(100, dtype=np.float32) + 0.5) * 2 - 0.5, (100, 1))
    zeros = np.zeros((300, 400), np.float32)
    full = align.paste_back(zeros, ramp, m)
    small = align.paste_back(zeros, half, m, crop_size=200)
    inner = cv2.erode(inside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert np.abs(full - small)[inner].max() < 0.05


def test_large_faces_are_shrunk_first_without_moving():
    """A face many times the crop's size is area-averaged first (as FFHQ's recipe does); the
    crop must still show the same place as a direct warp does."""
    from kornia.geometry.transform import warp_affine

    photo = smooth_photo(1200, 1000)
    m = np.array([[0.2, 0.0, -30.0], [0.0, 0.2, -20.0]])  # shrink factor 5
    crop = align._warp(photo, m, 128, "border").astype(float)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    mt = torch.from_numpy(m).float()[None]
    direct = warp_affine(x, mt, (128, 128), padding_mode="border", align_corners=True)
    direct = direct[0].permute(1, 2, 0).numpy()
    assert np.abs(crop - direct)[8:-8, 8:-8].mean() < 0.5


def test_alignment_matrix_and_options_check_their_inputs():
    with pytest.raises(ValueError, match="accepted: ffhq, template"):
        align.alignment_matrix(np.zeros((68, 2)), 512, recipe="arcface")
    with pytest.raises(ValueError, match=r"\(\.\.\., 68, 2\)"):
        align.alignment_matrix(np.zeros((5, 2)), 512)
    with pytest.raises(ValueError, match="upsample must be >= 0"):
        align.AlignOptions(upsample=-1)
    with pytest.raises(TypeError, match="uint8"):
        align.align_faces(np.zeros((64, 64, 3), np.float32))


# --- with the extra ----------------------------------------------------------------------


@needs_extra
@pytest.mark.slow
def test_whole_photos_faces_and_landmarks(faces_dir):
    for name, count in WHOLE.items():
        faces = align.detect_faces(rgb(faces_dir / "gfpgan" / "whole_imgs" / name))
        assert len(faces) == count, name
        centres = [(f.box[0] + f.box[2]) / 2 for f in faces]
        assert centres == sorted(centres)  # left to right
        for f in faces:
            x0, y0, x1, y1 = f.box
            w = x1 - x0
            lm = f.landmarks68
            assert lm.shape == (68, 2) and f.landmarks5.shape == (5, 2)
            np.testing.assert_allclose(f.landmarks5, align.five_points(lm))
            pad = 0.25 * w
            inside = (lm[:, 0] > x0 - pad) & (lm[:, 0] < x1 + pad)
            inside &= (lm[:, 1] > y0 - pad) & (lm[:, 1] < y1 + pad)
            assert inside.all(), name  # the points belong to this face
            le, re, nose, ml, mr = f.landmarks5
            iod = np.hypot(*(re - le))
            assert 0.25 * w < iod < 0.6 * w
            assert le[0] < re[0] and ml[0] < mr[0]  # image-left first, as the template
            assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])  # upright faces


@needs_extra
def test_ffhq_face_landmarks_fall_on_the_template(ffhq_face):
    """FFHQ was aligned from dlib's 68 points: on one of its faces the eyes lie on the 5-point
    template and the FFHQ recipe gives the identity (up to the data set's own resampling)."""
    got = ffhq_face.landmarks5
    tpl = template_landmarks(512)[0].numpy()
    iod = np.hypot(*(tpl[1] - tpl[0]))
    assert np.hypot(*(got[:2] - tpl[:2]).T).max() < 0.08 * iod  # eyes
    mouth = 0.5 * (got[3] + got[4]) - 0.5 * (tpl[3] + tpl[4])
    assert np.hypot(*mouth) < 0.15 * iod  # mouth midpoint (the nose follows the pose)
    m = align.alignment_matrix(ffhq_face.landmarks68, 512, "ffhq")
    scale, angle = similarity_params(m)
    assert abs(scale - 1) < 0.02 and abs(angle) < 1.0
    assert np.abs(m[:, 2]).max() < 0.01 * 512


@needs_extra
@pytest.mark.parametrize(("angle", "scale"), [(20.0, 0.7), (-30.0, 0.8)])
def test_alignment_recovers_a_known_similarity(ffhq512, ffhq_face, angle, scale):
    """Rotate and scale an aligned face by a known similarity T: the new alignment must be
    the old one composed with T^-1. Tolerance: 3% in scale, 1.5 degrees, and the crop's
    corners within 3% of the crop's side (measured: 1.1%, 0.4 degrees, 1.3%)."""
    c, s = scale * math.cos(math.radians(angle)), scale * math.sin(math.radians(angle))
    t = np.array([[c, -s, 0.0], [s, c, 0.0]])
    t[:, 2] = 399.5 - t[:, :2] @ [255.5, 255.5]  # the face's centre to the canvas's centre
    photo = cv2.warpAffine(ffhq512, t, (800, 800), borderValue=(128, 128, 128))
    faces = align.detect_faces(photo)
    assert len(faces) == 1
    m0 = align.alignment_matrix(ffhq_face.landmarks68, 512)
    m = align.alignment_matrix(faces[0].landmarks68, 512)
    s0, a0 = similarity_params(m0)
    s1, a1 = similarity_params(m)
    assert abs(s1 * scale / s0 - 1) < 0.03
    assert abs((a1 - a0) + angle) < 1.5
    expect = (np.vstack([t, [0, 0, 1]]) @ np.vstack([align.invert_affine(m0), [0, 0, 1]]))[:2]
    got = align.invert_affine(m)
    corners = np.array([[0, 0], [511, 0], [0, 511], [511, 511]], float)
    err = corners @ (expect - got)[:, :2].T + (expect - got)[:, 2]
    assert np.abs(err).max() < 0.03 * 512 * scale
    crop = align.align_faces(photo, faces)[0]
    assert crop.crop.shape == (512, 512, 3) and crop.crop.dtype == np.uint8
    np.testing.assert_allclose(crop.matrix, m)


@needs_extra
def test_template_recipe_is_the_samples_alignment(ffhq512, ffhq_face):
    out = align.align_faces(ffhq512, [ffhq_face], size=256, recipe="template", padding="border")
    x = torch.from_numpy(ffhq512).permute(2, 0, 1)[None].float()
    ref = align.align_face(x, torch.from_numpy(ffhq_face.landmarks5)[None], 256)[0]
    ref = ref.permute(1, 2, 0).round().clamp(0, 255).numpy()
    assert np.abs(out[0].crop.astype(float) - ref).max() <= 1.0
    on_crop = out[0].landmarks68
    np.testing.assert_allclose(
        align.five_points(on_crop), template_landmarks(256)[0].numpy(), atol=0.12 * 256
    )


@needs_extra
def test_detect_landmarks_for_the_loss(ffhq512, ffhq_face):
    from ifqa_loss import FPR_WEIGHTS, IFQALoss

    face = torch.from_numpy(ffhq512).permute(2, 0, 1).float() / 255
    flat = torch.full_like(face, 0.5)
    with pytest.raises(ValueError, match=r"no face detected in image\(s\) \[1\]"):
        align.detect_landmarks(torch.stack([face, flat]))
    lm = align.detect_landmarks(torch.stack([face, flat]), on_missing="image")
    assert lm.shape == (2, 68, 2) and lm.dtype == torch.float32
    np.testing.assert_allclose(lm[0].numpy(), ffhq_face.landmarks68, atol=1.0)
    lm2 = align.detect_landmarks(face[None] * 2 - 1, input_range=(-1, 1))
    np.testing.assert_allclose(lm2[0].numpy(), ffhq_face.landmarks68, atol=1.0)
    # a non-aligned crop: the loss's regions follow the detected landmarks
    crop = face[:, 30:480, 50:490][None].clone().requires_grad_(True)
    lm_crop = align.detect_landmarks(crop.detach())
    moved = ffhq_face.landmarks68[17:] - [50, 30]  # brows, eyes, nose, mouth: moved with it
    dist = np.hypot(*(lm_crop[0, 17:].numpy() - moved).T)  # IOD here: about 126 px
    assert dist.mean() < 3.0 and dist.max() < 10.0, (dist.mean(), dist.max())
    criterion = IFQALoss(model="ifqa-lite", region_weights=FPR_WEIGHTS)
    loss = criterion(crop, landmarks=lm_crop)
    loss.backward()
    assert torch.isfinite(loss) and crop.grad.abs().sum() > 0
    assert not torch.allclose(loss, criterion(crop.detach()))  # the landmarks were used


@needs_extra
def test_score_align_rows_and_exit_codes(faces_dir, tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(faces_dir / "gfpgan" / "whole_imgs" / "Blake_Lively.jpg", d / "group.jpg")
    cv2.imwrite(str(d / "noface.png"), smooth_photo(200, 240))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out_csv, out_json, heat = tmp_path / "s.csv", tmp_path / "s.json", tmp_path / "heat"
    argv = ["score", str(d), "--align", *LITE, "--csv", str(out_csv), "--json", str(out_json)]
    assert main([*argv, "--heatmaps", str(heat)]) == EXIT_SOME_FAILED  # unreadable wins
    out = capsys.readouterr().out
    assert "noface.png\tNO FACE" in out and "corrupt.jpg\tERROR" in out
    assert "scored 2 face(s) in 1 of 3 photos (no face 1, failed 1)" in out
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:9] == ["path", "face", "faces", "x0", "y0", "x1", "y1", "score", "error"]
    assert [(Path(r["path"]).name, r["face"], r["faces"]) for r in rows] == [
        ("corrupt.jpg", "", ""),
        ("group.jpg", "0", "2"),
        ("group.jpg", "1", "2"),
        ("noface.png", "", "0"),
    ]
    assert "cannot decode" in rows[0]["error"] and rows[0]["score"] == ""
    assert rows[3]["error"] == "no face found" and rows[3]["score"] == ""
    photo = cv2.imread(str(d / "group.jpg"))
    for r in rows[1:3]:
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= photo.shape[1] and 0 <= y0 < y1 <= photo.shape[0]
        assert 0 < float(r["score"]) < 1 and float(r["eyes"]) > 0 and r["error"] == ""
        assert cv2.imread(r["heatmap"]).shape == photo.shape  # the whole photo, maps pasted
        assert (heat / f"group_face{r['face']}_map.png").is_file()
    assert int(rows[1]["x1"]) < int(rows[2]["x1"])  # left to right
    doc = json.loads(out_json.read_text())
    assert doc["meta"]["align"]["recipe"] == "ffhq" and doc["meta"]["align"]["size"] == 512
    assert doc["summary"]["faces"] == 2
    assert (doc["summary"]["no_face"], doc["summary"]["failed"]) == (1, 1)
    rec = next(r for r in doc["records"] if r.get("face") == 1)
    assert np.asarray(rec["matrix"]).shape == (2, 3) and np.asarray(rec["landmarks"]).shape == (
        5,
        2,
    )

    (d / "corrupt.jpg").unlink()
    assert main(["score", str(d), "--align", *LITE]) == EXIT_NO_FACE
    assert main(["score", str(d / "group.jpg"), "--align", *LITE]) == EXIT_OK
    assert main(["score", str(d / "noface.png"), "--align", *LITE]) == EXIT_ALL_FAILED


@needs_extra
def test_a_face_scores_as_its_aligned_crop_file(faces_dir, tmp_path):
    from ifqa_loss import IFQAMetric

    photo = faces_dir / "gfpgan" / "whole_imgs" / "Blake_Lively.jpg"
    metric = IFQAMetric(model="ifqa-lite", device="cpu")
    recs = metric.score_files([photo], align=True, regions=True)
    crops = align.align_faces(rgb(photo))
    assert len(recs) == len(crops) == 2
    for rec, face in zip(recs, crops, strict=True):
        np.testing.assert_allclose(rec["matrix"], face.matrix)
        path = tmp_path / f"face{rec['face']}.png"
        cv2.imwrite(str(path), cv2.cvtColor(face.crop, cv2.COLOR_RGB2BGR))
        assert metric.score_files([path])[0]["score"] == pytest.approx(rec["score"], abs=1e-6)
        assert set(rec) >= {"eyes", "nose", "mouth", "rest"}


@needs_extra
def test_missing_predictor_and_tiny_photos(tmp_path, monkeypatch):
    from ifqa_loss import IFQAMetric

    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), smooth_photo(10, 12))
    metric = IFQAMetric(model="ifqa-lite", device="cpu")
    (rec,) = metric.score_files([tiny], align=True)  # one error record, the run goes on
    assert rec["score"] is None and rec["faces"] is None and "16x16" in rec["error"]
    monkeypatch.setattr(align, "models_dir", lambda: tmp_path)  # no predictor file there
    with pytest.raises(ImportError, match=r"68-point predictor is missing.*ifqa-loss\[align\]"):
        metric.score_files([tiny], align=True)
