"""Real faces of the kinds restorers see, for the face gate: which train it, which test it.

The gate must pass every face, whatever its quality, age, colour, pose or framing. These lists
name, by folder under the faces root (``../shared/data/faces`` or ``$IFQA_FACES_DIR``), the real
low-quality, grayscale and old faces that go into the gate's training (:data:`REAL_TRAIN`) and
those kept out of it to test it (:data:`TEST_CROPS`, :data:`TEST_PHOTOS`); no folder is on both
sides. :func:`gate_test_faces` builds the test set: the aligned crops as they are, the faces
that dlib finds in the test photographs (aligned with black padding where a face runs past the
photograph's edge, as restorers' crops of old photographs do), and gray, sepia-tinted and
edge-padded copies of the held-out clean faces.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import list_images
from ..faces.degrade import to_gray
from .degenerate import load_photo

# Real low-quality, grayscale and old-photograph crops the gate trains on.
REAL_TRAIN = (
    "dfdnet/RealVgg_Imgs/*",
    "dmdnet/RealLQs/*",
    "gpen/val_lq/*",
    "pgdiff/testdata/grayscale_faces/*",
    "pgdiff/testdata/op_cropped_faces/*/*",
)
# Aligned crops the gate never trains on, by kind.
TEST_CROPS = {
    "real_lq": (
        "codeformer/cropped_faces/*",
        "pgdiff/testdata/cropped_faces/*",
        "restoreformer/test/*",
        "restoreformerpp/aligned/*",
        "vqfr/cropped_faces/*",
        "gfpgan/cropped_faces/*",
        "diffbir/bfr_aligned/*",
        "ifqa/docs/*",
    ),
    "gray_old": ("codeformer/gray_faces/*", "ddnm/solvay/*", "ddnm/oldphoto/*"),
    # Inpainting inputs (masks painted over the face): reported, not held to the targets.
    "painted_mask": ("codeformer/masked_faces/*", "pgdiff/testdata/masked_faces/*"),
}
# Whole photographs whose faces (found by dlib) the gate never trains on; the last four are the
# validation's test photographs (``validation.TEST_BACKGROUNDS``).
TEST_PHOTOS = (
    "psfrgan/whole_img/*",
    "codeformer/whole_imgs/*",
    "gfpgan/whole_imgs/*",
    "vqfr/whole_imgs/*",
    "facexlib/assets/*",
    "serfiq/data/*",
    "more/openface_whole/*",
    "more/mica_whole/*",
    "more/pulid_whole/*",
    "more/prnet_whole/*",
)
# Kinds held to the targets (every kind but the painted masks).
TARGET_KINDS = ("real_lq", "gray_old", "photo_face", "clean", "gray", "sepia", "padded")
PHOTO_MAX_SIDE = 2048  # photographs are shrunk to this long side before detection
SIDES = ("top", "bottom", "left", "right")
SEPIA = np.array([1.07, 0.95, 0.74], dtype=np.float32)  # an old print's tint, per RGB channel


@dataclass(frozen=True)
class GateFace:
    """One test image: ``name`` (file, and face index or variant), ``kind``, and the
    (H, W, 3) float32 RGB ``image`` in [0, 1]."""

    name: str
    kind: str
    image: np.ndarray


def sepia(img: np.ndarray) -> np.ndarray:
    """A face turned gray and tinted like an old print (or a colourised photograph)."""
    return np.clip(to_gray(img) * SEPIA, 0, 1).astype(np.float32)


def pad_edge(img: np.ndarray, side: str, fraction: float, value: float = 0.0) -> np.ndarray:
    """The crop with a band of ``fraction`` of its side at ``side`` (``top``, ``bottom``,
    ``left``, ``right``) set to ``value``: a crop that ran past its photograph's edge."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    out = img.copy()
    h, w = img.shape[:2]
    n = round(fraction * (h if side in ("top", "bottom") else w))
    rows = {"top": slice(0, n), "bottom": slice(h - n, h)}.get(side, slice(None))
    cols = {"left": slice(0, n), "right": slice(w - n, w)}.get(side, slice(None))
    out[rows, cols] = value
    return out


def variants(name: str, img: np.ndarray) -> list[GateFace]:
    """Gray, sepia and two edge-padded copies of a clean face."""
    return [
        GateFace(f"{name}:gray", "gray", to_gray(img)),
        GateFace(f"{name}:sepia", "sepia", sepia(img)),
        GateFace(f"{name}:pad_top", "padded", pad_edge(img, "top", 0.2)),
        GateFace(f"{name}:pad_left_gray", "padded", pad_edge(img, "left", 0.15, 135 / 255)),
    ]


def aligned_faces(photo: np.ndarray, padding: str = "reflection") -> list[np.ndarray]:
    """The faces dlib finds in an (H, W, 3) float photograph in [0, 1], aligned to the FFHQ
    512 crop, as float32 in [0, 1] (the ``[align]`` extra)."""
    from ..align import align_faces

    img = (np.clip(photo, 0, 1) * 255).round().astype(np.uint8)
    return [a.crop.astype(np.float32) / 255.0 for a in align_faces(img, padding=padding)]


def photo_faces(path: Path, root: Path) -> list[GateFace]:
    """A test photograph's faces, aligned with black padding past its edges."""
    name = path.relative_to(root).as_posix()
    faces = aligned_faces(load_photo(path, PHOTO_MAX_SIDE), padding="zeros")
    return [GateFace(f"{name}#{i}", "photo_face", f) for i, f in enumerate(faces)]


def gate_test_faces(
    root: str | os.PathLike,
    clean: Sequence[str] = (),
    photos: bool = True,
) -> list[GateFace]:
    """The gate's test set under ``root``.

    Args:
        root: the faces folder.
        clean: held-out clean faces (paths relative to ``root``): each is kept as it is
            (kind ``clean``) and as its :func:`variants`.
        photos: also align the faces of :data:`TEST_PHOTOS` (needs the ``[align]`` extra).

    Returns:
        :class:`GateFace` records, crops first, then photographs' faces, then variants.
    """
    root = Path(root)
    out = []
    for kind, patterns in TEST_CROPS.items():
        for p in list_images(root, patterns):
            out.append(GateFace(p.relative_to(root).as_posix(), kind, load_photo(p, 1024)))
    if photos:
        for p in list_images(root, TEST_PHOTOS):
            out += photo_faces(p, root)
    for rel in clean:
        img = load_photo(root / rel, 1024)
        out.append(GateFace(rel, "clean", img))
        out += variants(rel, img)
    return out
