"""Identity distance between a result and its clean face, with dlib's face descriptor.

Optional: needs the ``align`` extra (``pip install "ifqa-loss[align]"``: dlib-bin and
face_recognition_models, which ships dlib's 5-point landmark model and its face-descriptor
ResNet). The distance is the Euclidean distance of the two 128-d descriptors; dlib's own
convention calls faces under 0.6 the same person. Both descriptors are computed with the
landmarks found on the clean face, so the crop is the same and only the pixels differ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def identity_note() -> str:
    """Why the identity column is missing."""
    from ..align import INSTALL_HINT

    return f"identity: not measured (dlib's face descriptor needs the align extra: {INSTALL_HINT})"


def _uint8(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(
        (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    )


def identity_distance() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``(images, clean) -> (B,)`` descriptor distances, or None without dlib.

    Images are (B, 3, H, W) aligned faces in [0, 1]. The face box is dlib's detection on the
    clean face, or the central box of an FFHQ-aligned crop when nothing is detected.
    """
    from ..align import models_dir, require

    try:
        dlib = require()
    except ImportError:
        return None
    models = models_dir()
    detect = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    describe = dlib.face_recognition_model_v1(
        str(models / "dlib_face_recognition_resnet_model_v1.dat")
    )

    def box(img: np.ndarray):
        found = detect(img, 1)
        if len(found):
            return max(found, key=lambda r: r.area())
        s = img.shape[0]
        return dlib.rectangle(int(0.22 * s), int(0.3 * s), int(0.78 * s), int(0.86 * s))

    def distance(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        out = []
        for x, c in zip(images, clean, strict=True):
            ci, xi = _uint8(c), _uint8(x)
            landmarks = shape(ci, box(ci))
            dc = np.array(describe.compute_face_descriptor(ci, landmarks))
            dx = np.array(describe.compute_face_descriptor(xi, landmarks))
            out.append(float(np.linalg.norm(dx - dc)))
        return torch.tensor(out, dtype=torch.float64)

    return distance
