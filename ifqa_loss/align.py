"""Faces in photographs: detection, 68/5 landmarks, FFHQ alignment, and pasting results back.

IFQA judges FFHQ-aligned face crops. This module finds the faces of a whole photograph with
dlib's HOG face detector and its 68-point landmark predictor (the iBUG 300-W points), aligns
each face to the FFHQ crop, and maps pictures made on the crop (a realness map, a restored face)
back onto the photograph.

Alignment recipes (``recipe=``):

- ``"ffhq"`` (default): the recipe the FFHQ data set was made with (Karras et al., the
  ``ffhq-dataset`` alignment step, from dlib's 68 landmarks): eye centres (means of points
  36-41 and 42-47), mouth corners (48, 54); ``c = eye_mid + 0.1 * eye_to_mouth``; the crop's
  x axis is ``eye_to_eye`` plus ``eye_to_mouth`` turned by -90 degrees, its half-side
  ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``; the square quad so defined becomes the output
  square. Followed here: the quad, and shrinking the photo with area averaging first when the
  face is at least twice the crop's size. Not followed: the reflection padding blurred
  towards the edges (here: kornia's ``padding`` mode, reflection by default) and PIL's
  corner-based pixel convention (a half-pixel shift). On the FFHQ images in the shared test
  data this gives the identity within 2% in scale and 2 degrees.
- ``"template"``: the least-squares similarity from five points (eye centres, nose tip 30,
  mouth corners 48 and 54) to the package's FFHQ 5-point template
  (:func:`~ifqa_loss.masks.template_landmarks`); :func:`align_face` does the same on tensors
  from five known points.
  It puts the five points where the region masks' template expects them, at the price of
  following the nose: turned heads move in the crop.

Coordinates are ``(x, y)`` pixels with pixel ``(i, j)`` centred at ``x = j, y = i`` (as in
:mod:`ifqa_loss.masks`). Affine matrices are ``(2, 3)`` with ``crop = M[:, :2] @ photo + M[:, 2]``
(kornia's ``warp_affine`` and OpenCV's convention); :func:`invert_affine` gives the way back and
:func:`paste_back` uses it.

Needs the optional extra: ``pip install "ifqa-loss[align]"`` (``dlib-bin`` and
``face_recognition_models``, which ships dlib's landmark predictors). Without it every function
that detects raises an ``ImportError`` naming that command; the geometry helpers work without.
Note that the 68-point predictor was trained on the iBUG 300-W data, whose terms exclude
commercial use.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .masks import similarity_from_points, template_landmarks

__all__ = [
    "INSTALL_HINT",
    "RECIPES",
    "AlignOptions",
    "AlignedFace",
    "Face",
    "align_face",
    "align_faces",
    "alignment_matrix",
    "detect_faces",
    "detect_landmarks",
    "ffhq_quad",
    "five_points",
    "invert_affine",
    "paste_back",
    "require",
]

INSTALL_HINT = 'pip install "ifqa-loss[align]"'
RECIPES = ("ffhq", "template")
PADDINGS = ("reflection", "border", "zeros")
PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class AlignOptions:
    """How faces are found and aligned when scoring photographs.

    Args:
        size: side of the aligned crop in pixels (512: the size GFPGAN and CodeFormer write).
        upsample: times dlib's detector doubles the photo before searching (0: faces of about
            80 px and more, fastest; 1: about 40 px and more, dlib's usual setting).
        recipe: ``"ffhq"`` or ``"template"`` (see the module docstring).
        padding: how the crop is filled outside the photo: ``"reflection"``, ``"border"``
            (edge pixels repeated) or ``"zeros"``.
    """

    size: int = 512
    upsample: int = 1
    recipe: str = "ffhq"
    padding: str = "reflection"

    def __post_init__(self) -> None:
        if int(self.size) < 16:
            raise ValueError(f"align size must be >= 16 pixels, got {self.size}")
        if int(self.upsample) < 0:
            raise ValueError(f"upsample must be >= 0 (0: no upsampling), got {self.upsample}")
        _check_choice("recipe", self.recipe, RECIPES)
        _check_choice("padding", self.padding, PADDINGS)


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: detector rectangle ``(x0, y0, x1, y1)`` in pixels (``x1``, ``y1`` exclusive);
            it may reach outside the photo.
        confidence: the HOG detector's score (higher: more face-like; about 0 at its
            threshold).
        landmarks68: (68, 2) float32 iBUG-68 points, ``(x, y)`` pixels in the photo.
        landmarks5: (5, 2) float32: image-left eye centre, image-right eye centre, nose tip,
            image-left and image-right mouth corners (the FFHQ template's order).
    """

    box: tuple[int, int, int, int]
    confidence: float
    landmarks68: np.ndarray
    landmarks5: np.ndarray


@dataclass(frozen=True)
class AlignedFace:
    """A face warped to the FFHQ crop.

    Attributes:
        face: the detection it comes from.
        crop: (S, S, 3) uint8 aligned crop (the photo's channel order, RGB as given).
        matrix: (2, 3) float64 affine, photo pixels -> crop pixels.
        landmarks68: (68, 2) float32 points in crop pixels (``face.landmarks68`` mapped by
            ``matrix``), for region masks on the crop.
    """

    face: Face
    crop: np.ndarray
    matrix: np.ndarray
    landmarks68: np.ndarray


def _check_choice(what: str, value: str, accepted: Sequence[str]) -> None:
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")


def require():
    """Import and return ``dlib`` after checking that its 68-point predictor is installed.

    Raises:
        ImportError: dlib or ``face_recognition_models`` is missing; the message names the
            install command.
    """
    try:
        import dlib
    except ImportError as e:
        raise ImportError(
            "face detection and alignment need dlib and its landmark models: " + INSTALL_HINT
        ) from e
    path = models_dir() / PREDICTOR_68
    if not path.is_file():
        raise ImportError(f"dlib's 68-point predictor is missing at {path}: " + INSTALL_HINT)
    return dlib


def models_dir() -> Path:
    """The ``models/`` folder of ``face_recognition_models``, found without importing it.

    (Importing it needs ``pkg_resources``, which recent setuptools no longer ship.)
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "dlib's landmark predictor comes with face_recognition_models, which is not "
            "installed: " + INSTALL_HINT
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@functools.lru_cache(maxsize=1)
def _detector():
    return require().get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _predictor():
    return require().shape_predictor(str(models_dir() / PREDICTOR_68))


def _as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """A contiguous (H, W, 3) uint8 array; grayscale (H, W) is repeated to 3 channels."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(
            f"{name} must be a uint8 array (H, W, 3), got {arr.dtype}; for tensors use "
            "detect_landmarks"
        )
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be (H, W, 3) RGB or (H, W) gray, got {arr.shape}")
    if min(arr.shape[:2]) < 16:
        raise ValueError(f"{name} is {arr.shape[0]}x{arr.shape[1]}; need at least 16x16 px")
    return np.ascontiguousarray(arr)


def five_points(landmarks68: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The template's five points from iBUG-68 points: (..., 68, 2) -> (..., 5, 2).

    Eye centres are the means of the eye contours (36-41, 42-47), the nose tip is point 30 and
    the mouth corners are 48 and 54, in the order of :data:`~ifqa_loss.masks.FFHQ_TEMPLATE_512`.
    Works on numpy arrays and (differentiably) on tensors.
    """
    lm = landmarks68
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks68 must have shape (..., 68, 2), got {tuple(lm.shape)}")
    parts = [lm[..., 36:42, :].mean(-2), lm[..., 42:48, :].mean(-2)]
    parts += [lm[..., 30, :], lm[..., 48, :], lm[..., 54, :]]
    if isinstance(lm, torch.Tensor):
        return torch.stack(parts, -2)
    return np.stack(parts, -2)


def detect_faces(
    image: np.ndarray, *, upsample: int = 1, min_confidence: float = 0.0
) -> list[Face]:
    """Faces of a photograph with their landmarks, left to right.

    Args:
        image: (H, W, 3) uint8 RGB (or (H, W) gray) photograph.
        upsample: times the detector doubles the image first (see :class:`AlignOptions`).
        min_confidence: drop detections whose HOG score is below this (0: dlib's threshold).

    Returns:
        One :class:`Face` per detection, ordered by the box centre's x, then y.

    Raises:
        ImportError: the ``[align]`` extra is not installed.
    """
    img = _as_rgb_uint8(image)
    if int(upsample) < 0:
        raise ValueError(f"upsample must be >= 0, got {upsample}")
    require()
    rects, scores, _ = _detector().run(img, int(upsample), float(min_confidence))
    predictor = _predictor()
    faces = []
    for rect, score in zip(rects, scores, strict=True):
        shape = predictor(img, rect)
        lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
        faces.append(Face(box, float(score), lm, five_points(lm).astype(np.float32)))
    faces.sort(key=lambda f: (f.box[0] + f.box[2], f.box[1] + f.box[3]))
    return faces


def ffhq_quad(landmarks68: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The FFHQ recipe's crop square: (..., 68, 2) -> (..., 4, 2) float64 corners.

    Corners in the order upper-left, lower-left, lower-right, upper-right of the face.
    """
    lm = torch.as_tensor(np.asarray(landmarks68, dtype=np.float64))
    p = five_points(lm)
    eye_left, eye_right, mouth_left, mouth_right = (
        p[..., 0, :],
        p[..., 1, :],
        p[..., 3, :],
        p[..., 4, :],
    )
    eye_mid = 0.5 * (eye_left + eye_right)
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = 0.5 * (mouth_left + mouth_right) - eye_mid
    turned = torch.stack([eye_to_mouth[..., 1], -eye_to_mouth[..., 0]], -1)  # -90 degrees
    x = eye_to_eye + turned
    half = torch.maximum(2.0 * eye_to_eye.norm(dim=-1), 1.8 * eye_to_mouth.norm(dim=-1))
    x = x / x.norm(dim=-1, keepdim=True) * half.unsqueeze(-1)
    y = torch.stack([-x[..., 1], x[..., 0]], -1)  # x turned by +90 degrees: towards the chin
    c = eye_mid + 0.1 * eye_to_mouth
    return torch.stack([c - x - y, c - x + y, c + x + y, c + x - y], -2)


def alignment_matrix(
    landmarks68: np.ndarray | torch.Tensor, size: int = 512, recipe: str = "ffhq"
) -> np.ndarray:
    """The photo -> crop similarity of a face: (..., 68, 2) -> (..., 2, 3) float64.

    ``"ffhq"`` maps the FFHQ quad's corners onto the crop's outer edges; ``"template"`` maps
    the five points onto the template scaled to ``size`` (least squares, both by
    :func:`~ifqa_loss.masks.similarity_from_points`).
    """
    _check_choice("recipe", recipe, RECIPES)
    lm = torch.as_tensor(np.asarray(landmarks68, dtype=np.float64))
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks68 must have shape (..., 68, 2), got {tuple(lm.shape)}")
    if recipe == "ffhq":
        src = ffhq_quad(lm)
        lo, hi = -0.5, size - 0.5  # pixel centres: the crop's edges lie half a pixel out
        dst = torch.tensor([[lo, lo], [lo, hi], [hi, hi], [hi, lo]], dtype=torch.float64)
        return similarity_from_points(src, dst.expand(*src.shape[:-2], *dst.shape)).numpy()
    return _template_matrix(five_points(lm), size).numpy()


def _template_matrix(points5: torch.Tensor, size: int) -> torch.Tensor:
    """The least-squares similarity taking (..., 5, 2) points onto the template at ``size``."""
    dst = template_landmarks(size, device=points5.device, dtype=points5.dtype)[0]
    return similarity_from_points(points5, dst.expand(*points5.shape[:-2], *dst.shape))


def _warp_tensor(x: torch.Tensor, matrix: torch.Tensor, size: int, padding: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size) through (B, 2, 3) photo -> crop affines (bilinear)."""
    from kornia.geometry.transform import warp_affine

    return warp_affine(
        x, matrix, (size, size), mode="bilinear", padding_mode=padding, align_corners=True
    )


def align_face(image: torch.Tensor, landmarks: torch.Tensor, size: int = 512) -> torch.Tensor:
    """Warp faces of known landmarks to the FFHQ template (the ``"template"`` recipe on tensors).

    Args:
        image: (B, 3, H, W) float images.
        landmarks: (B, 5, 2) (x, y) pixel coordinates in ``image`` (eyes, nose, mouth corners).
        size: side of the aligned output.

    Returns:
        (B, 3, size, size) aligned crops (bilinear; outside the photo: edge pixels repeated).
    """
    return _warp_tensor(image, _template_matrix(landmarks.to(image), size), size, "border")


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of (..., 2, 3) affine matrices (crop -> photo for an alignment matrix)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[-2:] != (2, 3):
        raise ValueError(f"matrix must have shape (..., 2, 3), got {m.shape}")
    a_inv = np.linalg.inv(m[..., :2])
    t = -(a_inv @ m[..., 2:])
    return np.concatenate([a_inv, t], -1)


def _rescale(matrix: np.ndarray, from_size: int, to_size: int) -> np.ndarray:
    """Compose with the pixel-centre rescaling of a square picture from one side to another."""
    k = to_size / from_size
    scale = np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5], [0, 0, 1]])
    full = np.concatenate([np.asarray(matrix, np.float64), [[0.0, 0.0, 1.0]]], 0)
    return (scale @ full)[:2]


def _warp(photo: np.ndarray, matrix: np.ndarray, size: int, padding: str) -> np.ndarray:
    """Warp an (H, W, 3) uint8 photo to the (size, size) crop of ``matrix`` (bilinear)."""
    import cv2

    m = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop px per photo px
    shrink = int(np.floor(1.0 / scale)) if scale > 0 else 1
    img = photo
    if shrink >= 2:  # area-average first, as FFHQ's recipe does, so the warp does not alias
        h, w = photo.shape[:2]
        img = cv2.resize(photo, (w // shrink, h // shrink), interpolation=cv2.INTER_AREA)
        # shrunk pixel x' covers photo pixels shrink * x' .. shrink * x' + shrink - 1
        m = np.concatenate(
            [m[:, :2] * shrink, m[:, :2].sum(1, keepdims=True) * 0.5 * (shrink - 1) + m[:, 2:]], 1
        )
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    mt = torch.from_numpy(m).float()[None]
    out = _warp_tensor(x, mt, size, padding)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def align_faces(
    image: np.ndarray,
    faces: Sequence[Face] | None = None,
    *,
    size: int = 512,
    recipe: str = "ffhq",
    upsample: int = 1,
    padding: str = "reflection",
) -> list[AlignedFace]:
    """Detect (unless ``faces`` are given) and align every face of a photograph.

    Args:
        image: (H, W, 3) uint8 photograph (RGB; the crops keep its channel order).
        faces: detections from :func:`detect_faces`; None: detect them.
        size: side of the aligned crops.
        recipe: ``"ffhq"`` (default) or ``"template"``, see the module docstring.
        upsample: detector upsampling when detecting here.
        padding: ``"reflection"``, ``"border"`` or ``"zeros"`` outside the photo.

    Returns:
        One :class:`AlignedFace` per face, in the order of ``faces``: the (size, size, 3)
        uint8 crop, the photo -> crop matrix and the 68 points in the crop.
    """
    opts = AlignOptions(size=size, upsample=upsample, recipe=recipe, padding=padding)
    img = _as_rgb_uint8(image)
    if faces is None:
        faces = detect_faces(img, upsample=opts.upsample)
    out = []
    for face in faces:
        m = alignment_matrix(face.landmarks68, opts.size, opts.recipe)
        lm = face.landmarks68.astype(np.float64) @ m[:, :2].T + m[:, 2]
        crop = _warp(img, m, opts.size, opts.padding)
        out.append(AlignedFace(face, crop, m, lm.astype(np.float32)))
    return out


def paste_back(
    photo: np.ndarray,
    picture: np.ndarray,
    matrix: np.ndarray,
    *,
    crop_size: int | None = None,
    alpha: float = 1.0,
    feather: float = 0.0,
) -> np.ndarray:
    """Warp a picture made on an aligned crop back onto the photograph and blend it in.

    Args:
        photo: (H, W, C) or (H, W) array (uint8 or float).
        picture: (h, h, C) or (h, h) array on the crop: a restored face, a colour map, ...
        matrix: (2, 3) photo -> crop matrix of the face (from :func:`align_faces`).
        crop_size: side of the crop ``matrix`` was made for, when ``picture`` has another
            size (e.g. a 256 px realness map of a 512 px crop); None: the picture's side.
        alpha: opacity of the picture, in [0, 1].
        feather: width of a linear fade at the picture's edges, as a fraction of its side
            (0: hard edges).

    Returns:
        A new array like ``photo``: ``photo * (1 - a) + warped * a`` where ``a`` is ``alpha``
        times the warped coverage of the picture.
    """
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= feather < 0.5:
        raise ValueError(f"feather must be in [0, 0.5), got {feather}")
    pic = np.asarray(picture)
    dst = np.asarray(photo)
    if pic.ndim != dst.ndim or pic.shape[0] != pic.shape[1] or pic.shape[2:] != dst.shape[2:]:
        raise ValueError(
            f"picture must be square with the photo's channels: photo {dst.shape}, "
            f"picture {pic.shape}"
        )
    h = pic.shape[0]
    m = np.asarray(matrix, np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"matrix must have shape (2, 3), got {m.shape}")
    if crop_size is not None and crop_size != h:
        m = _rescale(m, crop_size, h)
    ramp = np.ones(h, np.float32)
    if feather > 0:
        ramp = np.clip((np.minimum(np.arange(h), np.arange(h)[::-1]) + 0.5) / (feather * h), 0, 1)
    cover = np.outer(ramp, ramp).astype(np.float32)
    size = (dst.shape[1], dst.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(pic.astype(np.float32), m, size, flags=flags)
    a = alpha * cv2.warpAffine(cover, m, size, flags=flags)
    if dst.ndim == 3:
        a = a[:, :, None]
        warped = warped.reshape(dst.shape)
    out = dst.astype(np.float32) * (1.0 - a) + warped * a
    if dst.dtype == np.uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(dst.dtype)


def _tensor_to_uint8(image: torch.Tensor, input_range: tuple[float, float]) -> np.ndarray:
    lo, hi = input_range
    x = ((image.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return (x.permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()


def detect_landmarks(
    images: torch.Tensor,
    *,
    input_range: Sequence[float] = (0.0, 1.0),
    upsample: int = 1,
    on_missing: str = "raise",
) -> torch.Tensor:
    """68 landmarks of the face in each image, for region-weighted losses on unaligned crops.

    Compute them once per training sample, on the ground truth (or the input), and keep them
    with the sample: ``IFQALoss(region_weights=...)(restored, landmarks=lm)``. Do not detect
    on the restorer's output: it is slow (dlib runs on the CPU, one image at a time), not
    differentiable, and a poor output gives poor landmarks exactly where the loss matters.

    Args:
        images: (B, 3, H, W) (or (B, 1, H, W)) RGB tensors in ``input_range``.
        input_range: value range of ``images``, ``(0, 1)`` or ``(-1, 1)``.
        upsample: detector upsampling (1 finds faces down to about 40 px).
        on_missing: when an image has no detected face: ``"raise"`` (a ``ValueError`` listing
            the batch indices) or ``"image"`` (predict the landmarks inside the whole image's
            rectangle: right for tight face crops the detector misses).

    Returns:
        (B, 68, 2) float32 ``(x, y)`` pixel coordinates in the images, on their device. Where
        an image holds several faces, the largest detection is taken.

    Raises:
        ImportError: the ``[align]`` extra is not installed.
        ValueError: an image without a detected face (with ``on_missing="raise"``).
    """
    from .preprocess import check_images, check_range

    _check_choice("on_missing", on_missing, ("raise", "image"))
    rng = check_range(input_range)
    x = check_images(images, rng)
    dlib = require()
    out, missing = [], []
    for b in range(x.shape[0]):
        img = _tensor_to_uint8(x[b], rng)
        rects = _detector()(img, int(upsample))
        if len(rects):
            rect = max(rects, key=lambda r: r.width() * r.height())
        elif on_missing == "image":
            rect = dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1)
        else:
            missing.append(b)
            continue
        shape = _predictor()(img, rect)
        out.append([(p.x, p.y) for p in shape.parts()])
    if missing:
        raise ValueError(
            f"no face detected in image(s) {missing} of the batch of {x.shape[0]}; pass "
            "on_missing='image' to use the whole image as the face box, upsample=2 for small "
            "faces, or give those samples template landmarks"
        )
    return torch.tensor(out, dtype=torch.float32, device=images.device)
