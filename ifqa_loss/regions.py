"""Region weighting: the one rule that turns face-region masks into per-pixel loss weights.

A region weighting is a mapping such as ``{"eyes": 2, "nose": 1.5, "mouth": 2}``: pixels inside
a region weigh its value, pixels outside every region weigh 1. Soft masks blend linearly::

    W = 1 + sum_r (w_r - 1) * m_r        (clamped at 0)

Every user of region weights (:class:`~ifqa_loss.IFQALoss`,
:class:`~ifqa_loss.IFQAAdversarialLoss`, the BasicSR GAN loss, the trainer) goes through
:class:`RegionWeights`, which parses the option once and keeps the template's map per size and
device.

>>> rw = RegionWeights({"eyes": 2.0})
>>> w = rw.template(64, "cpu")
>>> tuple(w.shape), round(float(w.min()), 3), round(float(w.max()), 2)
((1, 1, 64, 64), 1.0, 2.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .masks import REGIONS, check_landmarks, face_region_masks
from .preprocess import resize_map

# A suggested emphasis on the facial primary regions, in the spirit of IFQA's training.
FPR_WEIGHTS = {"eyes": 2.0, "nose": 1.5, "mouth": 2.0}


def parse_region_weights(
    region_weights: Mapping[str, float] | None,
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """``{"eyes": 2, ...}`` -> ``(names, weights)``, checked; None or ``{}`` -> ``((), ())``.

    Raises:
        ValueError: a name not in :data:`ifqa_loss.masks.REGIONS`, or a negative weight.

    >>> parse_region_weights({"eyes": 2, "mouth": 1.5})
    (('eyes', 'mouth'), (2.0, 1.5))
    """
    if not region_weights:
        return (), ()
    if not isinstance(region_weights, Mapping):
        raise TypeError(
            f"region_weights must be a mapping such as {{'eyes': 2.0}}, got "
            f"{type(region_weights).__name__}"
        )
    unknown = [k for k in region_weights if k not in REGIONS]
    if unknown:
        raise ValueError(f"unknown regions {unknown} in region_weights; known: {REGIONS}")
    values = tuple(float(v) for v in region_weights.values())
    if any(v < 0 for v in values):
        raise ValueError(f"region_weights must be >= 0, got {dict(region_weights)}")
    return tuple(region_weights), values


def region_weight_map(masks: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Combine soft region masks into one weight map: ``1 + sum_r (w_r - 1) * m_r``, >= 0.

    The weights stay Python numbers (a tensor made from them on a GPU would be a
    host-to-device copy that waits for the device, at every call).

    Shape:
        masks (B, R, H, W), weights R values -> (B, 1, H, W).

    Raises:
        ValueError: not one weight per mask.

    >>> region_weight_map(torch.tensor([[[[0.0, 1.0]]]]), [3.0]).tolist()
    [[[[1.0, 3.0]]]]
    """
    weights = [float(v) for v in weights]
    if not weights or len(weights) != masks.shape[1]:
        raise ValueError(f"{len(weights)} weights for {masks.shape[1]} masks; give one per mask")
    out = masks[:, :1] * (weights[0] - 1.0) + 1.0
    for r in range(1, len(weights)):
        out = out + masks[:, r : r + 1] * (weights[r] - 1.0)
    return out.clamp_min(0.0)


def weighted_mean(per_pixel: torch.Tensor, wmap: torch.Tensor | None) -> torch.Tensor:
    """(B,) mean of a (B, 1, h, w) map, weighted by ``wmap`` (B or 1, 1, S, S) pooled to h x w.

    ``wmap=None``: the plain mean.
    """
    if wmap is None:
        return per_pixel.mean((1, 2, 3))
    if wmap.shape[-2:] != per_pixel.shape[-2:]:
        wmap = F.adaptive_avg_pool2d(wmap, per_pixel.shape[-2:])
    wmap = wmap.expand_as(per_pixel)
    return (per_pixel * wmap).sum((1, 2, 3)) / wmap.sum((1, 2, 3)).clamp_min(1e-8)


def _check_weight_args(images: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    """``weight``/``masks`` must be (B or 1, C, H, W) tensors matching ``images``' batch."""
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(
                f"{name} must be a (B, R, H, W) tensor of region masks or a (B, 1, H, W) "
                f"weight map, got {getattr(t, 'shape', type(t).__name__)}"
            )
        if t.shape[0] not in (1, images.shape[0]):
            raise ValueError(
                f"{name} batch {t.shape[0]} does not match images batch {images.shape[0]}"
            )


class RegionWeights:
    """A parsed ``region_weights`` option and the per-pixel weights it gives.

    Args:
        region_weights: ``{region: weight}`` (names from :data:`ifqa_loss.masks.REGIONS`);
            None or ``{}``: uniform (every method returns None).

    Raises:
        ValueError, TypeError: as :func:`parse_region_weights`.
    """

    def __init__(self, region_weights: Mapping[str, float] | None) -> None:
        self.names, self.values = parse_region_weights(region_weights)
        self._templates: dict[tuple, torch.Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.names)

    def as_dict(self) -> dict[str, float] | None:
        """The weighting as a dict (None when uniform), for reprs and logs."""
        return dict(zip(self.names, self.values, strict=True)) or None

    def from_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, R, H, W) masks of :attr:`names`, in order -> (B, 1, H, W) weights."""
        return region_weight_map(masks, self.values)

    def template(
        self, size: int | tuple[int, int], device: str | torch.device
    ) -> torch.Tensor | None:
        """The (1, 1, H, W) weights on the FFHQ-aligned template (right for aligned crops),
        made once per size and device; None when uniform."""
        if not self.names:
            return None
        key = (size, str(torch.device(device)))
        if key not in self._templates:
            m = face_region_masks(None, size, self.names, device=device)
            self._templates[key] = self.from_masks(m)
        return self._templates[key]

    def from_landmarks(
        self, landmarks: torch.Tensor, image_size: tuple[int, int], size: int, *, finite: bool
    ) -> torch.Tensor:
        """(B, K, 2) pixel landmarks of images of ``image_size`` (H, W) -> (B, 1, size, size)."""
        check_landmarks(landmarks, finite=finite)
        h, w = image_size
        # (x, y) scaled with Python numbers: no tensor made from host data.
        lm = torch.stack((landmarks[..., 0] * (size / w), landmarks[..., 1] * (size / h)), -1)
        m = face_region_masks(lm, size, self.names, check_finite=finite)
        return self.from_masks(m.float())

    def for_images(
        self,
        images: torch.Tensor,
        size: int,
        *,
        landmarks: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        check_finite: bool = True,
    ) -> torch.Tensor | None:
        """The (B or 1, 1, size, size) per-pixel weights for ``images``, or None (uniform).

        Precedence: ``weight`` (a weight map), ``masks`` (one mask per region of
        :attr:`names`; a 1-channel tensor is a weight map unless exactly one region is
        weighted), ``landmarks`` ((B, 5 or 68, 2) pixel coordinates in ``images``), the
        template, uniform. ``check_finite``: refuse NaN/Inf landmarks (one device
        synchronisation).

        Raises:
            ValueError: tensors of the wrong rank, batch or channel count; bad landmarks.
        """
        _check_weight_args(images, weight=weight, masks=masks)
        if weight is not None:
            w = weight.to(images.device, torch.float32).mean(1, keepdim=True)
            return resize_map(w, (size, size))
        if masks is not None:
            m = resize_map(masks.to(images.device, torch.float32), (size, size))
            if m.shape[1] == len(self.names):
                return self.from_masks(m)
            if m.shape[1] == 1:
                return m.clamp_min(0.0)
            raise ValueError(
                f"masks has {m.shape[1]} channels but region_weights names {len(self.names)} "
                f"regions {self.names}; pass one mask per region in that order, or a "
                "(B, 1, H, W) weight map"
            )
        if not self.names:
            return None
        if landmarks is not None:
            if landmarks.dim() == 3 and landmarks.shape[0] != images.shape[0]:
                raise ValueError(
                    f"landmarks batch {landmarks.shape[0]} does not match images batch "
                    f"{images.shape[0]}"
                )
            wmap = self.from_landmarks(
                landmarks, tuple(images.shape[-2:]), size, finite=check_finite
            )
            return wmap.to(images.device)
        return self.template(size, images.device)
