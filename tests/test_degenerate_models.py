"""The bundled models score degenerate images below every clean face.

Degenerate images: constant colours, near-constant images, gradients, noise and patterns (made
here, without data), and, from the shared faces, the held-out faces heavily blurred and
posterised and the corners of whole photographs (``validation.TEST_BACKGROUNDS``, never trained
on). The bar is the lowest score of the 16 held-out clean faces of ``lite_cpu`` (the validation
split), scored as ``ifqa validate`` does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ifqa_loss import IFQAMetric
from ifqa_loss._io import list_images
from ifqa_loss.faces.images import load_face, split_faces
from ifqa_loss.train.config import load_config
from ifqa_loss.train.degenerate import PALETTE, degenerate_test_set, load_photo
from ifqa_loss.train.validation import TEST_BACKGROUNDS, evaluate, format_degenerate

# The bundled discriminators alone score many degenerate images above the lowest clean face;
# the metric's face gate (on by default for them) brings every one below it
# (weights/MODEL_CARD.md, "Face gate"). Without the gate these tests fail.


@pytest.fixture(scope="module")
def heldout(faces_dir):
    _, val = split_faces(faces_dir, load_config("lite_cpu").data)
    faces = [load_face(p, 512) for p in val]
    photos = [load_photo(p) for p in list_images(faces_dir, TEST_BACKGROUNDS)]
    if not photos:
        pytest.skip(f"no background photographs under {faces_dir} match {TEST_BACKGROUNDS}")
    return faces, photos


@pytest.mark.parametrize("model", ["ifqa-lite", "ifqa-judge"])
@pytest.mark.slow
def test_degenerate_images_score_below_the_lowest_clean_face(model, heldout):
    faces, photos = heldout
    hwc = [f.numpy().transpose(1, 2, 0).copy() for f in faces]
    images = degenerate_test_set(hwc, photos, sizes=(128, 256, 512))
    names = " ".join(n for n, _ in images)
    for kind in ("constant", "near_constant", "gradient", "noise", "stripes", "checker"):
        assert kind in names
    for kind in ("background", "posterised_face"):
        assert kind in names
    assert "smooth_face" not in names  # blurred faces are judged by the blur family
    # the set holds the inputs: black, mid-grey and white at 128, 256 and 512
    assert sum(n.startswith("constant_") for n in names.split()) == 3 * len(PALETTE)
    metric = IFQAMetric(model=model, device="cpu", batch_size=8)
    assert metric.face_gate is not None  # the default for the bundled models
    res = evaluate(metric, faces, families=(), degenerate=images)
    deg = res["degenerate"]
    assert len(deg["clean_scores"]) == 16
    assert deg["passed"], format_degenerate(deg)
    assert deg["max_degenerate"] < deg["min_clean"]


@pytest.mark.parametrize("model", ["ifqa-lite", "ifqa-judge"])
def test_black_grey_white_and_noise_score_low_without_faces(model):
    """No data needed: the issue's four inputs at 256 px score below 0.05, under every clean
    held-out face of both models' cards (the lowest: 0.095 and 0.212; the bar of the test
    above needs the faces)."""
    metric = IFQAMetric(model=model, device="cpu", batch_size=8)
    ungated = IFQAMetric(model=model, device="cpu", batch_size=8, face_gate=False)
    rng = np.random.default_rng(0)
    x = np.stack(
        [
            np.zeros((256, 256, 3), np.float32),
            np.full((256, 256, 3), 0.5, np.float32),
            np.ones((256, 256, 3), np.float32),
            rng.random((256, 256, 3), dtype=np.float32),
        ]
    )
    batch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    scores = metric(batch).numpy()
    assert (scores < 0.05).all(), scores
    # the discriminator alone does not: the gate is what brings them down
    assert (ungated(batch).numpy()[:3] > 0.3).all()
