"""The face gate on real faces it never trained on: low quality, grayscale, old, padded.

The test set is :mod:`ifqa_loss.train.gate_faces` (by folder, under the shared faces); the
gate must pass at least 98% of it, and ``score_files``' flags, ``--check-face`` and ``ifqa
compare``'s flagged counts must say the same of the same files.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch

from ifqa_loss import IFQAMetric
from ifqa_loss._io import list_images
from ifqa_loss.compare.comparison import compare
from ifqa_loss.faces.images import split_faces
from ifqa_loss.files.flags import NEAR_CONSTANT, NO_FACE
from ifqa_loss.gate import FACE_THRESHOLD
from ifqa_loss.train.config import load_config
from ifqa_loss.train.face_gate import face_files
from ifqa_loss.train.gate_faces import (
    REAL_TRAIN,
    TARGET_KINDS,
    TEST_CROPS,
    TEST_PHOTOS,
    gate_test_faces,
    pad_edge,
    sepia,
)
from ifqa_loss.weights import bundled_gate_path

# Real low-quality crops the first bundled gate called non-faces (P(face) under 0.01).
ONCE_REJECTED = (
    "codeformer/cropped_faces/0342.png",
    "pgdiff/testdata/cropped_faces/0128.png",
    "restoreformerpp/aligned/046_00022_00_org.png",
)
SHARE = 0.98  # of the test faces that must get P(face) >= FACE_THRESHOLD


@pytest.fixture(scope="module")
def gate():
    """The metric with the bundled gate (ifqa-lite's input path)."""
    if not bundled_gate_path().is_file():
        pytest.skip(f"no bundled gate at {bundled_gate_path()}")
    return IFQAMetric("ifqa-lite", device="cpu")


def _rejected(gate, faces) -> list[tuple[str, float]]:
    """``(name, P(face))`` of the faces under the threshold."""
    p = [
        float(gate.p_face(torch.from_numpy(f.image.transpose(2, 0, 1).copy())[None])[0])
        for f in faces
    ]
    return [
        (f.name, round(float(q), 3)) for f, q in zip(faces, p, strict=True) if q < FACE_THRESHOLD
    ]


def test_variants_are_gray_sepia_and_padded():
    img = np.random.default_rng(0).random((40, 30, 3)).astype(np.float32)
    s = sepia(img)
    assert s.shape == img.shape and (s[..., 0] >= s[..., 2]).all()  # warm, no blue cast
    top = pad_edge(img, "top", 0.25)
    assert (top[:10] == 0).all() and np.array_equal(top[10:], img[10:])
    right = pad_edge(img, "right", 0.1, 0.5)
    assert (right[:, 27:] == 0.5).all() and np.array_equal(right[:, :27], img[:, :27])
    with pytest.raises(ValueError, match="side must be one of"):
        pad_edge(img, "middle", 0.1)


def test_test_set_stays_out_of_the_gates_training(faces_dir):
    cfg = load_config("lite_degenerate_cpu")
    _, val = split_faces(faces_dir, cfg.data)
    trained = set(face_files(faces_dir)) | set(list_images(faces_dir, cfg.data.backgrounds))
    tested = set(list_images(faces_dir, [p for v in TEST_CROPS.values() for p in v]))
    tested |= set(list_images(faces_dir, TEST_PHOTOS)) | set(val)
    assert len(tested) > 100 and len(list_images(faces_dir, REAL_TRAIN)) > 40
    assert not trained & tested, sorted(trained & tested)[:5]


@pytest.mark.slow
def test_gate_passes_real_low_quality_gray_old_and_padded_faces(gate, faces_dir):
    cfg = load_config("lite_degenerate_cpu")
    faces = gate_test_faces(faces_dir, cfg.data.val, photos=False)
    held = [f for f in faces if f.kind in TARGET_KINDS]
    assert {f.kind for f in held} >= {"real_lq", "gray_old", "clean", "gray", "sepia", "padded"}
    low = _rejected(gate, held)
    assert len(low) <= (1 - SHARE) * len(held), low


@pytest.mark.slow
def test_gate_passes_the_faces_of_test_photographs(gate, faces_dir):
    """Faces aligned from whole photographs (the Solvay 1927 photograph among them), with
    black padding where a face runs past the edge."""
    from ifqa_loss.align import require

    try:
        require()
    except ImportError as e:
        pytest.skip(str(e))
    faces = [f for f in gate_test_faces(faces_dir) if f.kind == "photo_face"]
    assert len(faces) > 50
    low = _rejected(gate, faces)
    assert len(low) <= (1 - SHARE) * len(faces), low


def test_flags_check_face_and_compare_agree(tmp_path, faces_dir):
    """The same files through ``score_files`` (the gate's flag), ``check_face=True`` (dlib)
    and ``compare`` (flagged counts): real faces that the first gate rejected are faces to
    all three; noise is no face and black is near-constant."""
    metric = IFQAMetric("ifqa-lite", device="cpu")
    if metric.face_gate is None:
        pytest.skip(f"no bundled gate at {bundled_gate_path()}")
    folder = tmp_path / "method"
    folder.mkdir()
    names = []
    for i, rel in enumerate(ONCE_REJECTED):
        shutil.copy(faces_dir / rel, folder / f"{i}_face.png")
        names.append(f"{i}_face.png")
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
    cv2.imwrite(str(folder / "8_noise.png"), noise)
    cv2.imwrite(str(folder / "9_black.png"), np.zeros((256, 256, 3), np.uint8))
    files = sorted(folder.iterdir())
    expected = [None] * len(ONCE_REJECTED) + [NO_FACE, NEAR_CONSTANT]
    recs = metric.score_files(files)
    assert [r["flag"] for r in recs] == expected, [(r["path"], r["p_face"]) for r in recs]
    assert all(r["p_face"] >= FACE_THRESHOLD for r in recs[: len(ONCE_REJECTED)])
    ungated = _ungated(files)
    n = len(ONCE_REJECTED)
    assert all(r["score"] >= 0.5 * u for r, u in zip(recs[:n], ungated[:n], strict=True))
    summary = compare([folder], out=tmp_path / "report", metric=metric, bootstrap=0, quiet=True)
    row = summary["ranking"][0]
    assert (row["no_face"], row["near_constant"]) == (1, 1)
    try:
        from ifqa_loss.align import require

        require()
    except ImportError as e:
        pytest.skip(f"--check-face needs dlib: {e}")
    checked = metric.score_files(files, check_face=True)
    assert [r["flag"] for r in checked] == expected


def _ungated(files) -> list[float]:
    plain = IFQAMetric("ifqa-lite", device="cpu", face_gate=False)
    return [r["score"] for r in plain.score_files(files)]
