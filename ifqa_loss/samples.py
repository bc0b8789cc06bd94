"""A sample face the package may redistribute: scikit-image's ``astronaut`` (public domain).

NASA portrait of Eileen Collins, shipped inside the scikit-image wheel (``pip install
"ifqa-loss[examples]"``). :func:`align_face` warps any photo to the FFHQ 512 template from five
landmarks with a least-squares similarity and kornia's ``warp_affine``.
"""

from __future__ import annotations

import numpy as np
import torch

from .masks import similarity_from_points, template_landmarks

# (x, y) in the 512x512 astronaut image: image-left eye, image-right eye, nose tip,
# image-left and image-right mouth corners (marked by hand on a zoomed view).
ASTRONAUT_LANDMARKS = (
    (203.0, 101.0),
    (246.0, 103.0),
    (224.0, 126.0),
    (202.0, 140.0),
    (244.5, 140.5),
)


def align_face(image: torch.Tensor, landmarks: torch.Tensor, size: int = 512) -> torch.Tensor:
    """Warp faces to the FFHQ-aligned template.

    Args:
        image: (B, 3, H, W) float images.
        landmarks: (B, 5, 2) (x, y) pixel coordinates in ``image`` (eyes, nose, mouth corners).
        size: side of the aligned output.

    Returns:
        (B, 3, size, size) aligned crops (bilinear; outside the photo: edge pixels repeated).
    """
    from kornia.geometry.transform import warp_affine

    dst = template_landmarks(
        size, batch_size=image.shape[0], device=image.device, dtype=image.dtype
    )
    m = similarity_from_points(landmarks.to(image), dst)
    return warp_affine(
        image, m, (size, size), mode="bilinear", padding_mode="border", align_corners=True
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
