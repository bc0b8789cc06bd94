"""A sample face the package may redistribute: scikit-image's ``astronaut`` (public domain).

NASA portrait of Eileen Collins, shipped inside the scikit-image wheel (``pip install
"ifqa-loss[examples]"``), aligned to the FFHQ template from five landmarks marked by hand
(:func:`ifqa_loss.align.align_face`).
"""

from __future__ import annotations

import numpy as np
import torch

from .align import align_face

# (x, y) in the 512x512 astronaut image: image-left eye, image-right eye, nose tip,
# image-left and image-right mouth corners (marked by hand on a zoomed view).
ASTRONAUT_LANDMARKS = (
    (203.0, 101.0),
    (246.0, 103.0),
    (224.0, 126.0),
    (202.0, 140.0),
    (244.5, 140.5),
)


def astronaut_face(size: int = 512) -> torch.Tensor:
    """The astronaut's face aligned to the FFHQ template: (1, 3, size, size) RGB in [0, 1].

    The source face is small (about 45 px between the eyes, against 126 in FFHQ's 512 crop),
    so the crop is upsampled and soft: good for demonstrations and tests, not a clean reference.

    Raises:
        ImportError: scikit-image is not installed (``pip install "ifqa-loss[examples]"``).
    """
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            'the sample face needs scikit-image: pip install "ifqa-loss[examples]"'
        ) from e
    img = torch.from_numpy(np.ascontiguousarray(data.astronaut())).permute(2, 0, 1)[None]
    lm = torch.tensor([ASTRONAUT_LANDMARKS])
    return align_face(img.float() / 255.0, lm, size).clamp(0, 1)
