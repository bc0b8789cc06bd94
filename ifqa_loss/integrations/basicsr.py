"""IFQA losses and metric for BasicSR-style training (BasicSR, GFPGAN, CodeFormer).

Importing this module:

1. makes PyPI ``basicsr`` 1.4.2 importable on torchvision >= 0.17, which removed
   ``torchvision.transforms.functional_tensor`` (a stand-in module exposing
   ``rgb_to_grayscale`` is put in ``sys.modules``, only when the real one is missing);
2. registers, once, into whichever ``basicsr`` is importable (PyPI, or CodeFormer's vendored
   copy): the losses ``IFQALoss``, ``PixelIFQALoss``, ``IFQAPerceptualLoss`` and
   ``IFQAGANLoss`` in ``LOSS_REGISTRY``, the trainable discriminator ``IFQADiscriminator`` in
   ``ARCH_REGISTRY`` (both from :mod:`ifqa_loss.integrations.basicsr_gan`) and the metric
   ``calculate_ifqa`` in ``METRIC_REGISTRY``. Importing it again, or reloading it, changes
   nothing;
3. adds a small hook to ``BaseModel.reduce_loss_dict`` so the terms of these losses appear in the
   training log (``l_ifqa``, ``l_pix_l1``, ...) next to the model's own entries, even for models
   that log only their slot's total (GFPGAN logs ``l_g_pix``). The terms are averaged over ranks
   with the rest of the loss dict under DDP;
4. makes ``BaseModel.get_optimizer`` pass ``betas`` as floats: GFPGAN 1.3.8 builds its Adam
   optimizers with ``betas=(0**1, 0.99**1)``, an int and a float, which current torch refuses
   ("betas must be either both floats or both Tensors"). Values are unchanged;
5. makes ``basicsr.data.degradations.add_jpg_compression`` pass an int JPEG quality: basicsr
   draws it as a float, which OpenCV 5's ``imencode`` refuses (GFPGAN's FFHQ dataset uses it).

Which slot, which class:

- ``pixel_opt`` (SRModel, GFPGAN, CodeFormer): ``PixelIFQALoss``, a pixel loss (``L1Loss`` by
  default) plus IFQA, each with its weight. Returns a tensor.
- ``perceptual_opt`` of SRModel/GFPGAN (called as ``l_percep, l_style = cri(out, gt)``):
  ``IFQAPerceptualLoss``, which returns ``(loss, None)``. This replaces the VGG loss there.
- ``perceptual_opt`` of CodeFormer (expects one tensor), or any slot that expects a tensor:
  ``IFQALoss``.
- ``network_d`` + ``gan_opt`` (SRGANModel, RealESRGANModel, GFPGAN): ``IFQADiscriminator``, a
  co-trained IFQA discriminator, and ``IFQAGANLoss``, its region-weighted per-pixel GAN loss.
- validation ``metrics``: ``type: calculate_ifqa`` (higher is better).

Example YAML::

    train:
      pixel_opt:
        type: PixelIFQALoss
        pixel_type: L1Loss
        pixel_weight: 0.1
        ifqa_weight: 0.05
        input_range: [-1, 1]        # GFPGAN / CodeFormer tensors
    val:
      metrics:
        ifqa:
          type: calculate_ifqa
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..loss import IFQALoss as _CoreIFQALoss
from ..metric import IFQAMetric
from ._patching import patch as _patch
from .basicsr_gan import IFQADiscriminator, IFQAGANLoss

log = logging.getLogger("ifqa_loss")

_SHIM_NAME = "torchvision.transforms.functional_tensor"


def install_torchvision_shim() -> bool:
    """Register a stand-in ``torchvision.transforms.functional_tensor`` if it is missing.

    BasicSR 1.4.2 imports ``rgb_to_grayscale`` from that module, which torchvision 0.17 removed;
    the stand-in exposes the same function from ``torchvision.transforms.functional``. Nothing
    is done when the real module exists, when a module of that name is already registered, or
    when torchvision is not installed.

    Returns:
        True when the stand-in was installed by this call.
    """
    if _SHIM_NAME in sys.modules:
        return False
    try:
        if importlib.util.find_spec(_SHIM_NAME) is not None:
            return False
        from torchvision.transforms.functional import rgb_to_grayscale
    except ImportError:  # torchvision missing: basicsr's own import error is the clearer one
        return False
    shim = types.ModuleType(_SHIM_NAME)
    shim.__doc__ = (
        "Stand-in registered by ifqa_loss.integrations.basicsr: torchvision >= 0.17 removed "
        "this module, which basicsr 1.4.2 still imports."
    )
    shim.rgb_to_grayscale = rgb_to_grayscale
    sys.modules[_SHIM_NAME] = shim
    return True


def _log_report(message: str) -> None:
    """Where the wrappers' input problems go: BasicSR's log (a run never stops for them)."""
    hint = ""
    if "another convention" in message:
        hint = " (in the YAML: input_range: [-1, 1] for GFPGAN/CodeFormer tensors)"
    log.warning("ifqa_loss: %s%s", message, hint)


class _LogsTerms:
    """Keeps the last value of each term so the BasicSR log hook can report it once."""

    last_terms: dict[str, torch.Tensor]

    def _record(self, terms: Mapping[str, torch.Tensor]) -> None:
        # Detached 0-dim tensors on the loss's device: BasicSR stacks log entries under DDP.
        self.last_terms = {k: v.detach().float().mean() for k, v in terms.items()}
        self._terms_fresh = True

    def pop_log_terms(self) -> dict[str, torch.Tensor]:
        """The terms of the last call, once (empty if the loss was not called since)."""
        if not getattr(self, "_terms_fresh", False):
            return {}
        self._terms_fresh = False
        return dict(self.last_terms)


class BasicSRIFQALoss(_LogsTerms, _CoreIFQALoss):
    """:class:`ifqa_loss.IFQALoss` with BasicSR's constructor (YAML ``type: IFQALoss``).

    ``build_loss`` passes every YAML key to the constructor, so exactly these keys are accepted.
    Returns one tensor.

    Args:
        loss_weight: multiplier of the loss.
        reduction: ``mean`` | ``sum`` over the batch, or ``none`` for a (B,) vector.
        model: ``auto``, ``ifqa``, ``ifqa++``, ``ifqa-lite`` or another registered model.
        weights: checkpoint file or folder for ``model`` (None: search, see docs/metric-and-cli.md).
        input_range: ``[0, 1]`` (BasicSR SR models) or ``[-1, 1]`` (GFPGAN, CodeFormer).
        form: ``one_minus``, ``softplus``, or the full-reference ``features``/``map``, which
            compare with the ground truth BasicSR passes (see :class:`ifqa_loss.IFQALoss`).
        region_weights: e.g. ``{eyes: 2, nose: 1.5, mouth: 2}`` on the FFHQ-aligned template.
        check_inputs: ``warn`` (default): bad values (NaN/Inf, another convention than
            ``input_range``) are logged once and the run goes on; ``true``: they raise, as in
            the core loss; ``false``: values are not checked
            (:class:`~ifqa_loss.preprocess.InputCheck`).

    Logged term: ``l_ifqa`` (the weighted value returned).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        model: str = "auto",
        weights: str | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        form: str = "one_minus",
        region_weights: Mapping[str, float] | None = None,
        check_inputs: bool | str = "warn",
    ) -> None:
        super().__init__(
            model,
            weights,
            input_range=input_range,
            form=form,
            region_weights=dict(region_weights) if region_weights else None,
            reduction=reduction,
            loss_weight=loss_weight,
            check_inputs=check_inputs,
        )
        self.input_check.report = _log_report

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``loss(output, gt)``: ``gt`` is used by the full-reference forms only; see
        :meth:`ifqa_loss.IFQALoss.forward`."""
        out = super().forward(pred, target, weight, **kwargs)
        self._record({"l_ifqa": out})
        return out


class IFQAPerceptualLoss(BasicSRIFQALoss):
    """:class:`BasicSRIFQALoss` for the perceptual slot of SRModel/GFPGAN: returns ``(loss, None)``.

    Those models call ``l_percep, l_style = self.cri_perceptual(output, gt)``; ``None`` tells
    them there is no style term. Same YAML keys as ``type: IFQALoss``, but ``form`` defaults to
    ``features`` (the discriminator's features of the output matched to the ground truth's,
    as a VGG perceptual loss is used): ``ifqa audit`` finds the no-reference ``one_minus``
    gamed with the bundled model and ``features`` not (docs/audit.md).
    """

    def __init__(self, *args: Any, form: str = "features", **kwargs: Any) -> None:
        super().__init__(*args, form=form, **kwargs)

    def forward(  # type: ignore[override]
        self,
        pred: torch.Tensor,
        target: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        return super().forward(pred, target, weight, **kwargs), None


class PixelIFQALoss(_LogsTerms, nn.Module):
    """A BasicSR pixel loss plus IFQA, for the ``pixel_opt`` slot; returns one tensor.

    ``loss = loss_weight * (pixel_weight * Pixel(pred, gt) + ifqa_weight * IFQA(pred, gt))``
    (the no-reference forms ignore ``gt``; ``form: features`` matches its features).

    Args:
        loss_weight: multiplier of the sum.
        reduction: ``mean`` or ``sum``, given to both terms (``none`` is refused: the pixel term
            is element-wise and the IFQA term per image, so they cannot be added unreduced).
        pixel_type: a registered BasicSR loss called as ``loss(pred, target, weight)`` (e.g.
            ``L1Loss``, ``MSELoss``, ``CharbonnierLoss``).
        pixel_weight: weight of the pixel term (its ``loss_weight``).
        pixel_kwargs: further keys for the pixel loss (e.g. ``{eps: 1e-12}`` for Charbonnier).
        ifqa_weight: weight of the IFQA term; 0.5 (half the default pixel weight) is the
            recommended start for ``form: features`` (``ifqa audit``, docs/loss.md).
        form: default ``features`` (matches the discriminator's features of ``gt``): the
            no-reference forms of the bundled model are gamed when trained against (``ifqa
            audit``).
        model, weights, input_range, region_weights, check_inputs: as in
            :class:`BasicSRIFQALoss`.

    ``forward(pred, target, weight=None, **kwargs)``: BasicSR's element-wise ``weight`` goes to
    the pixel term; ``landmarks=``/``masks=`` go to the IFQA term.

    Logged terms: ``l_pix_<type>`` (e.g. ``l_pix_l1``) and ``l_ifqa``, weighted, so they add up to
    the returned value (which the model logs under its own name, e.g. ``l_g_pix``).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: str = "mean",
        pixel_type: str = "L1Loss",
        pixel_weight: float = 1.0,
        pixel_kwargs: Mapping[str, Any] | None = None,
        ifqa_weight: float = 0.5,
        model: str = "auto",
        weights: str | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        form: str = "features",
        region_weights: Mapping[str, float] | None = None,
        check_inputs: bool | str = "warn",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(
                f"PixelIFQALoss reduction must be 'mean' or 'sum', got {reduction!r} (use "
                "IFQALoss with reduction 'none' for per-image values)"
            )
        if pixel_type in _LOSSES:
            raise ValueError(f"pixel_type must be a pixel loss such as L1Loss, got {pixel_type!r}")
        from basicsr.utils.registry import LOSS_REGISTRY

        if not _registered(LOSS_REGISTRY, pixel_type):
            raise ValueError(
                f"pixel_type {pixel_type!r} is not in basicsr's LOSS_REGISTRY; use e.g. L1Loss, "
                "MSELoss or CharbonnierLoss"
            )
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self.pixel_type = pixel_type
        self.pixel_weight = float(pixel_weight)
        self.ifqa_weight = float(ifqa_weight)
        self.pixel_name = "l_pix_" + pixel_type.removesuffix("Loss").lower()
        self.pixel = LOSS_REGISTRY.get(pixel_type)(
            loss_weight=self.pixel_weight, reduction=reduction, **dict(pixel_kwargs or {})
        )
        self.ifqa = _CoreIFQALoss(
            model,
            weights,
            input_range=input_range,
            form=form,
            region_weights=dict(region_weights) if region_weights else None,
            reduction=reduction,
            loss_weight=self.ifqa_weight,
            check_inputs=check_inputs,
        )
        self.ifqa.input_check.report = _log_report

    @property
    def model_name(self) -> str:
        return self.ifqa.model_name

    def extra_repr(self) -> str:
        return (
            f"loss_weight={self.loss_weight}, pixel_weight={self.pixel_weight}, "
            f"ifqa_weight={self.ifqa_weight}"
        )

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if target is None:
            raise ValueError("PixelIFQALoss needs the target for its pixel term: loss(pred, gt)")
        pix = self.pixel(pred, target, weight=weight) * self.loss_weight
        q = self.ifqa(pred, target, **kwargs) * self.loss_weight
        self._record({self.pixel_name: pix, "l_ifqa": q})
        return pix + q


# YAML type name -> class (BasicSR registers by name; the core loss keeps the name IFQALoss).
_LOSSES = {
    "IFQALoss": BasicSRIFQALoss,
    "PixelIFQALoss": PixelIFQALoss,
    "IFQAPerceptualLoss": IFQAPerceptualLoss,
    "IFQAGANLoss": IFQAGANLoss,
}
_ARCHS = {"IFQADiscriminator": IFQADiscriminator}

# ----------------------------------------------------------------------------- metric

_METRICS: dict[tuple[str, str, str], IFQAMetric] = {}


def get_metric(
    model: str = "auto", weights: str | None = None, device: str | torch.device | None = None
) -> IFQAMetric:
    """The cached :class:`IFQAMetric` for these arguments (built on first use)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (str(model), str(weights), str(torch.device(device)))
    metric = _METRICS.get(key)
    if metric is None:
        metric = IFQAMetric(model=model, weights=weights, device=device)
        _METRICS[key] = metric
    return metric


def calculate_ifqa(
    img: np.ndarray,
    img2: np.ndarray | None = None,
    crop_border: int = 0,
    input_order: str = "HWC",
    model: str = "auto",
    weights: str | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> float:
    """IFQA score of one image for BasicSR validation; higher is better, in [0, 1].

    Args:
        img: the restored image as BasicSR's ``tensor2img`` gives it: uint8 (or float in
            [0, 255]) **BGR**, HWC (or CHW with ``input_order='CHW'``), or a gray HW array.
        img2: the ground truth; ignored (IFQA needs no reference).
        crop_border: pixels removed from each side before scoring (0: none).
        model, weights, device: the discriminator (cached across calls), as in
            :class:`ifqa_loss.IFQAMetric`.
        **kwargs: other keys of the metric's YAML entry (``better``, ...), ignored.
    """
    a = np.asarray(img)
    if input_order not in ("HWC", "CHW"):
        raise ValueError(f"input_order must be 'HWC' or 'CHW', got {input_order!r}")
    if a.ndim == 3 and input_order == "CHW":
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(
            f"calculate_ifqa expects an HWC BGR image with 1 or 3 channels, got shape {a.shape}"
        )
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
    a = a.astype(np.float32) / 255.0
    if a.shape[2] == 3:
        a = a[:, :, ::-1]  # BGR -> RGB
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
    metric = get_metric(model, weights, device)
    return float(metric(x.clamp(0.0, 1.0))[0])


# ----------------------------------------------------------------------------- registration


def _registered(registry: Any, name: str) -> bool:
    # Look at the map itself: a registry without __contains__ would make `in` iterate pairs.
    obj_map = getattr(registry, "_obj_map", None)
    if isinstance(obj_map, dict):
        return name in obj_map
    return name in set(registry.keys())


def _collect_terms(model: object) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for attr, obj in sorted(vars(model).items()):
        pop = getattr(obj, "pop_log_terms", None) if isinstance(obj, nn.Module) else None
        if pop is None:
            continue
        for k, v in pop().items():
            out[k if k not in out else f"{k}_{attr}"] = v
    return out


def patch_loss_logging() -> bool:
    """Make ``BaseModel.reduce_loss_dict`` add the terms of the IFQA losses a model holds.

    Idempotent. Entries the model already logs under the same name are left as they are.

    Returns:
        True when the hook was installed by this call.
    """
    from basicsr.models.base_model import BaseModel

    def make(original):
        def reduce_loss_dict(self, loss_dict):
            extra = _collect_terms(self)
            if extra:
                loss_dict = OrderedDict(loss_dict)
                for k, v in extra.items():
                    loss_dict.setdefault(k, v)
            return original(self, loss_dict)

        return reduce_loss_dict

    return _patch(BaseModel, "reduce_loss_dict", make)


def patch_optimizer_betas() -> bool:
    """Make ``BaseModel.get_optimizer`` cast a ``betas`` tuple to floats (idempotent).

    Returns:
        True when the fix was installed by this call.
    """
    from basicsr.models.base_model import BaseModel

    def make(original):
        def get_optimizer(self, optim_type, params, lr, **kwargs):
            betas = kwargs.get("betas")
            if isinstance(betas, (tuple, list)) and not any(torch.is_tensor(b) for b in betas):
                kwargs["betas"] = tuple(float(b) for b in betas)
            return original(self, optim_type, params, lr, **kwargs)

        return get_optimizer

    return _patch(BaseModel, "get_optimizer", make)


def patch_jpeg_quality() -> bool:
    """Make basicsr's ``add_jpg_compression`` round the quality to an int (idempotent).

    Returns:
        True when the fix was installed by this call.
    """
    from basicsr.data import degradations

    def make(original):
        def add_jpg_compression(img, quality=90):
            return original(img, round(float(quality)))

        return add_jpg_compression

    return _patch(degradations, "add_jpg_compression", make)


def register(patch_log: bool = True) -> dict[str, list[str]]:
    """Register the losses, the arch and the metric into the importable ``basicsr`` (idempotent).

    Args:
        patch_log: also install the loss-term log hook (:func:`patch_loss_logging`).

    Returns:
        ``{"LOSS_REGISTRY": [...], "ARCH_REGISTRY": [...], "METRIC_REGISTRY": [...]}``: the
        names added by this call.

    Raises:
        ImportError: basicsr is not importable (with how to install it).
    """
    install_torchvision_shim()
    try:
        from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY
    except ImportError as e:
        raise ImportError(
            "ifqa_loss.integrations.basicsr needs basicsr: install torch and torchvision first, "
            'then `pip install --no-build-isolation "basicsr>=1.4.2"` (or `pip install '
            '--no-build-isolation "ifqa-loss[basicsr]"`); CodeFormer users: run from the '
            f"CodeFormer checkout with its basicsr installed. ({type(e).__name__}: {e})"
        ) from e
    added: dict[str, list[str]] = {"LOSS_REGISTRY": [], "ARCH_REGISTRY": [], "METRIC_REGISTRY": []}
    for key, registry, entries in (
        ("LOSS_REGISTRY", LOSS_REGISTRY, _LOSSES),
        ("ARCH_REGISTRY", ARCH_REGISTRY, _ARCHS),
    ):
        for name, cls in entries.items():
            if _registered(registry, name):
                _warn_if_foreign(registry, name)
                continue
            _register_as(registry, name, cls)
            added[key].append(name)
    if _registered(METRIC_REGISTRY, "calculate_ifqa"):
        _warn_if_foreign(METRIC_REGISTRY, "calculate_ifqa")
    else:
        METRIC_REGISTRY.register(calculate_ifqa)
        added["METRIC_REGISTRY"].append("calculate_ifqa")
    if patch_log:
        patch_loss_logging()
    patch_optimizer_betas()
    patch_jpeg_quality()
    return added


def _register_as(registry: Any, name: str, obj: object) -> None:
    """Register ``obj`` under ``name`` (BasicSR's ``register`` takes the object's own name)."""
    if getattr(obj, "__name__", None) == name:
        registry.register(obj)
    else:
        registry._do_register(name, obj)


def _warn_if_foreign(registry: Any, name: str) -> None:
    obj = getattr(registry, "_obj_map", {}).get(name)
    if obj is not None and not getattr(obj, "__module__", "").startswith(__package__ or __name__):
        log.warning(
            "ifqa_loss: basicsr already has %r from %s; that one is used, not ifqa_loss's",
            name,
            getattr(obj, "__module__", "?"),
        )


REGISTERED = register()
