"""Getting images into a discriminator: input checks, differentiable resizing, file decoding.

Two paths, on purpose:
- tensors (loss and ``IFQAMetric.__call__``): any size, resized on the tensor's device with an
  antialiased, differentiable resize;
- files (``IFQAMetric.score_files``): the original release's OpenCV/albumentations pipeline,
  so a file's score is the score the original script prints.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .models.registry import ModelConfig

MIN_SIDE = 16
# Values within this fraction of the range's width outside it pass silently: rounding overshoot
# (``x * 0.5 + 0.5`` giving 1.0000001) and ordinary unclamped restorer outputs.
RANGE_TOLERANCE = 0.1
# An image in another convention (0-255 given as [0, 1], [-1, 1] given as [0, 1]) puts a large
# share of its values far outside: more than FAR_SHARE of them beyond FAR_MARGIN of the width.
# An unclamped restorer output does not, however far a few of its pixels go.
FAR_MARGIN = 0.25
FAR_SHARE = 0.05


def _layout_hint(shape: tuple[int, ...]) -> str:
    """How to turn a tensor of ``shape`` into (B, C, H, W), when that is clear; else "".

    Channels are 1, 3 or 4 (RGBA); a dimension of that size next to two larger ones is taken
    as channels: (C, H, W) wants a batch dimension; (H, W, C) and (B, H, W, C) (channels last,
    as images are read from files) want their channels moved first."""
    ch = (1, 3, 4)
    if len(shape) == 3 and shape[0] in ch:
        return "; add a batch dimension with x.unsqueeze(0)"
    if len(shape) == 3 and shape[2] in ch:
        return (
            f"; this looks like one (H, W, C) image (channels last): "
            f"use x.permute(2, 0, 1).unsqueeze(0) to get (1, {shape[2]}, {shape[0]}, {shape[1]})"
        )
    if len(shape) == 4 and shape[1] not in ch and shape[3] in ch:
        b, h, w, c = shape
        return (
            f"; this looks like (B, H, W, C) images (channels last): "
            f"use x.permute(0, 3, 1, 2) to get ({b}, {c}, {h}, {w})"
        )
    return ""


def check_images(
    x: object,
    input_range: tuple[float, float] = (0.0, 1.0),
    *,
    name: str = "images",
    check_values: bool = True,
    on_overshoot: Callable[[str], None] | None = None,
    convention: bool = True,
) -> torch.Tensor:
    """Validate a batch of images and return it with 3 channels.

    Args:
        x: (B, C, H, W) floating tensor, C = 1 (repeated to 3) or 3 (RGB).
        input_range: the declared (low, high) value range.
        name: how error messages call the tensor.
        check_values: also check for NaN/Inf and the value range (one device
            synchronisation). The range rule: an error when more than 5% of the values lie
            more than a quarter of the range's width outside it (another convention: 0-255,
            or [-1, 1] declared as [0, 1]); otherwise values up to 10% of the width outside
            pass silently, and values further out (an unclamped restorer output) are used as
            they are, with a message to ``on_overshoot`` (default: ``warnings.warn``).
        on_overshoot: called with the message when values lie outside the range but not in
            another convention.
        convention: apply the "another convention" error. A loss passes False once a checked
            call has passed: the convention is settled by then, and far-out values mid-training
            are a restorer's overshoot, which goes to ``on_overshoot`` and never stops a run.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: wrong rank, channels, empty batch, smaller than 16 px, NaN/Inf, or values
            in another convention than ``input_range``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (got {x.dtype}); "
            f"for uint8 images use x.float() / 255 with input_range=(0, 1)"
        )
    hint = _layout_hint(tuple(x.shape))
    if x.dim() != 4 or hint:
        what = "4-D (B, C, H, W)" if x.dim() != 4 else "channels first, (B, C, H, W)"
        raise ValueError(f"{name} must be {what}, got shape {tuple(x.shape)}{hint}")
    b, c, h, w = x.shape
    if b == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if c == 4:
        raise ValueError(
            f"{name} has 4 channels; IFQA takes RGB: drop the alpha channel with x[:, :3] "
            f"(or composite it onto a background first)"
        )
    if c not in (1, 3):
        raise ValueError(
            f"{name} must have 1 or 3 channels (RGB), got {c} in shape {tuple(x.shape)}"
        )
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"{name} is {h}x{w}; IFQA needs images of at least {MIN_SIDE}x{MIN_SIDE} px"
        )
    if check_values and not torch.compiler.is_compiling():
        _check_values(x, input_range, name, on_overshoot, convention)
    if c == 1:
        x = x.expand(b, 3, h, w)
    return x


def _check_values(
    x: torch.Tensor,
    input_range: tuple[float, float],
    name: str,
    on_overshoot: Callable[[str], None] | None,
    convention: bool = True,
) -> None:
    """The value rule of :func:`check_images` (one device synchronisation)."""
    lo, hi = float(input_range[0]), float(input_range[1])
    width = hi - lo
    v = x.detach().float()
    vmin, vmax = torch.aminmax(v)
    far = ((v < lo - FAR_MARGIN * width) | (v > hi + FAR_MARGIN * width)).float().mean()
    vmin, vmax, far = torch.stack([vmin, vmax, far]).tolist()
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if far > FAR_SHARE and convention:
        raise ValueError(
            f"{name} values span [{vmin:.4g}, {vmax:.4g}] with {far:.0%} of them far outside "
            f"the declared input_range ({lo:g}, {hi:g}), which looks like another convention: "
            f"pass input_range=(-1, 1) for [-1, 1] tensors, or scale [0, 255] images by 1/255 "
            f"(accepted: at most {FAR_SHARE:.0%} of the values more than {FAR_MARGIN:g} of the "
            f"range's width outside it)"
        )
    tol = RANGE_TOLERANCE * width
    if vmin < lo - tol or vmax > hi + tol:
        msg = (
            f"{name} values span [{vmin:.4g}, {vmax:.4g}], outside the declared input_range "
            f"({lo:g}, {hi:g}); they are used as they are (an unclamped restorer output is "
            f"fine; clamp it to silence this)"
        )
        if on_overshoot is None:
            warnings.warn(msg, stacklevel=4)
        else:
            on_overshoot(msg)


# The value check reads numbers back from the device (one synchronisation): a loss runs it on
# its first call and then on every CHECK_EVERY-th call, not at every training step.
CHECK_EVERY = 100


class InputCheck:
    """The input-check policy of a loss: what is checked, when, and what a problem does.

    Structure (type, rank, channels, size; metadata only) is checked at every call. Values
    (NaN/Inf, the range) are read back from the device, so they are checked on the first call
    and then on every ``every``-th call (calls 1, 1 + N, 1 + 2N, ... that passed; a call whose
    check raised is not counted, so the next one is checked again). Until a checked call has
    passed, images in another convention (0-255, or [-1, 1] declared as [0, 1]) are a problem;
    after that the convention is *settled* and far-out values are an unclamped restorer's
    overshoot: used as they are, with one warning per owner.

    Args:
        owner: how messages name the loss (``"IFQALoss"``).
        input_range: the declared value range, checked by :func:`check_range`.
        mode: ``True``: problems with the values raise ``ValueError``; ``"warn"``: they are
            reported once each to ``report`` and the call goes on (a long training run that
            must not stop); ``False``: values are never checked.
        every: N above; 1 checks the values at every call.
        report: where ``"warn"`` problems and overshoot go (default: ``warnings.warn``).

    Raises:
        ValueError: a bad ``mode`` or ``every``.

    >>> check = InputCheck("demo", (0, 1))
    >>> due = check.due()                                 # the first call checks the values
    >>> x = check(torch.rand(2, 1, 32, 32), "pred", values=due)
    >>> check.passed(due)                                 # every input of the call passed
    >>> x.shape, check.calls, check.settled, check.due()  # gray is repeated to RGB
    (torch.Size([2, 3, 32, 32]), 1, True, False)
    """

    def __init__(
        self,
        owner: str,
        input_range: Sequence[float] = (0.0, 1.0),
        *,
        mode: bool | str = True,
        every: int = CHECK_EVERY,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if not (mode is True or mode is False or mode == "warn"):
            raise ValueError(f"check_inputs must be True, 'warn' or False, got {mode!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"check_every must be an int >= 1 (1: check the values at every call), got "
                f"{every!r}; pass check_inputs=False to never check them"
            )
        self.owner = owner
        self.input_range = check_range(input_range)
        self.mode = mode
        self.every = every
        self.report = report
        self.calls = 0  # calls whose checks passed, for the schedule
        self.settled = False  # a checked call passed: far-out values are overshoot from now
        self._reported: set[str] = set()

    def due(self) -> bool:
        """Whether the next call checks the values (never inside ``torch.compile``)."""
        if self.mode is False or torch.compiler.is_compiling():
            return False
        return self.calls % self.every == 0

    def _once(self, kind: str, message: str) -> None:
        if kind in self._reported:
            return
        self._reported.add(kind)
        text = f"{self.owner}: {message}; warned once per loss object"
        if self.report is None:
            warnings.warn(text, stacklevel=5)
        else:
            self.report(text)

    def __call__(self, x: object, name: str, *, values: bool | None = None) -> torch.Tensor:
        """Check one input (``values``: None follows the schedule) and return it as RGB.

        Raises:
            TypeError, ValueError: as :func:`check_images`.
        """
        x = check_images(x, self.input_range, name=name, check_values=False)
        if values is None:
            values = self.due()
        if values and not torch.compiler.is_compiling():
            overshoot = functools.partial(self._once, "overshoot")
            try:
                _check_values(x, self.input_range, name, overshoot, not self.settled)
            except ValueError as e:
                if self.mode != "warn":
                    raise
                self._once("nan" if "NaN" in str(e) else "convention", str(e))
        return x

    def passed(self, values_checked: bool) -> None:
        """Count a call whose inputs all passed (``values_checked``: this call read them)."""
        if torch.compiler.is_compiling():
            return
        self.calls += 1
        self.settled = self.settled or values_checked

    def state(self) -> dict[str, object]:
        """What a resumed run needs (the convention stays settled)."""
        return {"settled": self.settled}

    def load_state(self, state: dict[str, object]) -> None:
        self.settled = bool(state.get("settled", False))


def check_range(input_range: Sequence[float]) -> tuple[float, float]:
    """Validate an ``input_range`` argument and return it as two floats."""
    try:
        lo, hi = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_range must be two numbers (low, high), got {input_range!r}"
        ) from None
    if not hi > lo:
        raise ValueError(f"input_range must have high > low, got {input_range!r}")
    return lo, hi


def to_model_input(
    x: torch.Tensor,
    cfg: ModelConfig,
    input_range: tuple[float, float] = (0.0, 1.0),
    *,
    resize: bool = True,
) -> torch.Tensor:
    """Map checked images to what the network takes: resized to the native size, normalised.

    The resize is antialiased (``F.interpolate(..., antialias=True)``), differentiable, and
    skipped when the image already has the native size (or ``resize=False``: a fully
    convolutional network run at the image's own size). No tensor is made from host data here:
    ``torch.tensor(values, device="cuda")`` copies from pageable memory and waits for the
    device, so the normalisation uses Python scalars (per channel only when they differ).

    Shape:
        x (B, 3, H, W) in ``input_range`` -> (B, 3, S, S) normalised (S: ``cfg.native_size``).

    >>> from ifqa_loss.models import get_model_config
    >>> y = to_model_input(torch.ones(1, 3, 64, 64), get_model_config("ifqa-lite"))
    >>> tuple(y.shape), float(y.max())
    ((1, 3, 256, 256), 1.0)
    """
    lo, hi = input_range
    s = cfg.native_size
    if resize and x.shape[-2:] != (s, s):
        x = F.interpolate(
            x, size=(s, s), mode=cfg.interpolation, antialias=True, align_corners=False
        )
    if (lo, hi) != (0.0, 1.0):
        x = (x - lo) / (hi - lo)
    mean, std = tuple(cfg.mean), tuple(cfg.std)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return (x - mean[0]) / std[0]
    return torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], 1)


def from_model_input(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The inverse of :func:`to_model_input`'s normalisation: network input -> [0, 1] RGB.

    Shape:
        (B, 3, S, S) -> (B, 3, S, S).
    """
    mean, std = tuple(cfg.mean), tuple(cfg.std)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return x.float() * std[0] + mean[0]
    return torch.stack([x[:, c].float() * std[c] + mean[c] for c in range(3)], 1)


def resize_map(m: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize maps, masks or images, (B, C, H, W) or (C, H, W), to ``size`` (an int: square)
    with the metric's resize: bilinear, antialiased, ``align_corners=False``."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if m.shape[-2:] == size:
        return m
    one = m.dim() == 3
    out = F.interpolate(
        m[None] if one else m, size=size, mode="bilinear", antialias=True, align_corners=False
    )
    return out[0] if one else out


LUMA = (0.299, 0.587, 0.114)  # BT.601 weights of R, G, B


def luma(x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """BT.601 luma of RGB images: a tensor's channels are its dim -3, (..., 3, H, W) ->
    (..., 1, H, W); an array's are its last axis, (..., 3) -> (...)."""
    if isinstance(x, torch.Tensor):
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True)
    return x @ np.asarray(LUMA, dtype=np.float32)


# Files above this many pixels (width x height, read from the header) are refused before any
# decoding: a 1 MB PNG can hold 30000 x 30000 pixels, 2.7 GB once decoded (docs/robustness.md).
DEFAULT_MAX_PIXELS = 100_000_000
# OpenCV's own limit on what ``cv2.imread`` decodes, read once per process, when cv2 is first
# imported; its default (2^30 pixels) lets the bomb above through.
OPENCV_LIMIT_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
_opencv_limit_ours = False  # whether this module set OPENCV_LIMIT_ENV (else the user did)


def check_max_pixels(max_pixels: object) -> int:
    """Validate a ``max_pixels`` argument (a positive int) and return it."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer):
        raise TypeError(f"max_pixels must be an int (pixels), got {max_pixels!r}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    return int(max_pixels)


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header, without decoding a pixel; None when the
    format is unknown to Pillow or its header cannot be read.

    Pillow's ``Image.open`` reads the header only (PNG, JPEG, WebP, TIFF, BMP and most
    others). Its own bomb check (above 2 x ``Image.MAX_IMAGE_PIXELS``) is read back as a size.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, format hints
            with Image.open(os.fspath(path)) as im:
                w, h = im.size
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(m.group(1)) if m else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        return pixels, 1
    except Exception:  # unknown format, or a header Pillow cannot parse: OpenCV may still
        return None
    return int(w), int(h)


def limit_opencv(max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Set OpenCV's own decoding limit to ``max(max_pixels, DEFAULT_MAX_PIXELS)`` pixels.

    OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when ``cv2`` is imported: this does
    nothing once ``cv2`` is loaded, nor when the user set the variable. Called when this module
    is imported and before each decode, so in a process where ifqa-loss imports ``cv2`` first
    (``ifqa score``, its workers) ``cv2.imread`` alone refuses larger images too.
    """
    global _opencv_limit_ours
    if "cv2" in sys.modules or (OPENCV_LIMIT_ENV in os.environ and not _opencv_limit_ours):
        return
    os.environ[OPENCV_LIMIT_ENV] = str(max(max_pixels, DEFAULT_MAX_PIXELS))
    _opencv_limit_ours = True


limit_opencv()


def read_image_bgr(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file as the original script does: ``cv2.imread`` (8-bit BGR, alpha dropped).

    The image size is read from the header first (:func:`header_size`): an image of more than
    ``max_pixels`` pixels is refused before it is decoded. A file whose header Pillow cannot
    read is decoded by OpenCV under its own limit (:func:`limit_opencv`) and refused
    afterwards if larger than ``max_pixels``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file exists but cannot be decoded as an image, or holds more than
            ``max_pixels`` pixels.
    """
    max_pixels = check_max_pixels(max_pixels)
    limit_opencv(max_pixels)
    import cv2

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"no such image file: {p}")
    size = header_size(p)
    if size is not None and size[0] * size[1] > max_pixels:
        _refuse_size(p, size, max_pixels, "its header says")
    try:
        img = cv2.imread(p, cv2.IMREAD_COLOR)
    except cv2.error as e:  # OpenCV's own size limit, or a decoder's assertion
        raise ValueError(
            f"cannot decode {p} as an image: OpenCV refused it ({_last_line(e)}); if the "
            f"image is larger than OpenCV's own limit, set {OPENCV_LIMIT_ENV} (pixels) in the "
            f"environment before starting (now {os.environ.get(OPENCV_LIMIT_ENV, 'unset')})"
        ) from None
    if img is None:
        raise ValueError(f"cannot decode {p} as an image (corrupt, truncated or not an image)")
    if img.shape[0] * img.shape[1] > max_pixels:
        _refuse_size(p, (img.shape[1], img.shape[0]), max_pixels, "it decoded to")
    return img


def _refuse_size(p: str, size: tuple[int, int], max_pixels: int, how: str) -> None:
    w, h = size
    dims = f"{w} x {h} = " if h > 1 else ""
    raise ValueError(
        f"cannot decode {p}: {how} {dims}{w * h:,} pixels, above the limit of "
        f"{max_pixels:,} (raise it with max_pixels= or --max-pixels)"
    )


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def official_file_tensor(
    path: str | os.PathLike, cfg: ModelConfig, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """The original release's preprocessing of one file: (3, S, S) float32 in [-1, 1].

    ``ifqa``: RGB uint8 -> albumentations ``Resize(S, S, INTER_LINEAR)`` -> ``Normalize(0.5, 0.5)``.
    ``ifqa++``: RGB uint8 -> ``Normalize(0.5, 0.5)`` -> ``Resize(S, S, INTER_CUBIC)`` on floats.
    """
    import cv2

    rgb = cv2.cvtColor(read_image_bgr(path, max_pixels), cv2.COLOR_BGR2RGB)
    return official_array_tensor(rgb, cfg)


def official_array_tensor(rgb: np.ndarray, cfg: ModelConfig) -> torch.Tensor:
    """:func:`official_file_tensor` for an already decoded (H, W, 3) uint8 RGB array."""
    pipeline = _official_pipeline(
        cfg.native_size, cfg.interpolation, cfg.mean, cfg.std, cfg.file_pipeline
    )
    out = pipeline(image=rgb)["image"]
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32))


@functools.lru_cache(maxsize=8)
def _official_pipeline(
    size: int, interpolation: str, mean: tuple, std: tuple, order: str
) -> Callable[..., dict]:
    # albumentations otherwise checks PyPI for a newer release on import.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2

    interp = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[interpolation]
    resize = A.Resize(size, size, interpolation=interp)
    norm = A.Normalize(mean=mean, std=std)
    if order == "resize_then_normalize":
        return A.Compose([resize, norm])
    if order == "normalize_then_resize":
        return A.Compose([norm, resize])
    raise ValueError(f"unknown file_pipeline {order!r}")  # pragma: no cover - registry values
