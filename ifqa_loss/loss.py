"""``IFQALoss``: a frozen IFQA discriminator as a region-weighted, differentiable loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ._holder import HoldsDiscriminator, compile_kwargs
from .masks import check_landmarks
from .preprocess import CHECK_EVERY, InputCheck, to_model_input
from .regions import FPR_WEIGHTS, RegionWeights, weighted_mean
from .weights import WeightsArg, resolve_model

FORMS = ("one_minus", "softplus", "features", "map")
# Forms that compare the output with the target (full-reference); the others need no target.
FULL_REFERENCE = ("features", "map")
REDUCTIONS = ("none", "mean", "sum")
__all__ = ["FORMS", "FPR_WEIGHTS", "IFQALoss", "feature_distance"]


def feature_distance(
    feats: Sequence[torch.Tensor], refs: Sequence[torch.Tensor], wmap: torch.Tensor | None
) -> torch.Tensor:
    """(B,) mean over levels of the weighted L1 feature distance over the mean |reference|.

    Shape:
        feats, refs: matching lists of (B, C_l, H_l, W_l); wmap (B or 1, 1, S, S) or None.
    """
    terms = []
    for f, r in zip(feats, refs, strict=True):
        dist = (f.float() - r.float()).abs().mean(1, keepdim=True)
        scale = r.float().abs().mean((1, 2, 3)).clamp_min(1e-6)
        terms.append(weighted_mean(dist, wmap) / scale)
    return torch.stack(terms).mean(0)


class IFQALoss(HoldsDiscriminator):
    """IFQA realness as a loss to minimise (lower = more real, or closer to the target).

    The discriminator is frozen: gradients reach the images only. It is not a registered
    submodule, so an optimizer built over a model that owns the loss never sees its weights,
    and the model's ``state_dict()`` does not include them; ``.to(device)`` moves it.

    Args:
        model: ``"auto"`` (the original ``ifqa`` weights if found, else the bundled model), a
            registered name (see :func:`ifqa_loss.list_models`), or a ``Discriminator``.
        weights: checkpoint path / folder / state dict for ``model`` (None: search).
        device: where to put the discriminator (None: CPU, as any new module; ``.to()``
            moves it later).
        input_range: value range of the images: ``(0, 1)`` or ``(-1, 1)`` (GFPGAN/CodeFormer).
        form: ``"features"`` (recommended for training; needs ``target``): the
            discriminator's features of the output matched to those of the target (seven
            encoder/decoder levels, each an L1 distance over the mean absolute target
            feature, averaged); ``"map"``: the mean absolute difference of the two realness
            maps; ``"one_minus"`` (no reference): weighted mean of ``1 - realness``, equal to
            ``1 - IFQAMetric`` score under uniform weights; ``"softplus"`` (no reference):
            weighted mean of ``softplus(-logit)``, the non-saturating GAN generator loss.
        region_weights: ``{region: weight}``, e.g. :data:`FPR_WEIGHTS`; pixels outside every
            region weigh 1 (:mod:`ifqa_loss.regions`). Regions come from ``landmarks`` /
            ``masks`` given to ``forward``, else the FFHQ-aligned template. None: uniform.
        reduction: ``"mean"`` | ``"sum"`` over the batch, or ``"none"`` for the (B,) vector.
        loss_weight: multiplier of the result (BasicSR convention).
        check_inputs: ``True``: bad values raise; ``"warn"``: they are reported once and the
            call goes on; ``False``: values are never checked (:class:`~ifqa_loss.preprocess.
            InputCheck`: structure at every call, values on the first and every
            ``check_every``-th call).
        check_every: the value-check interval (default 100; 1: every call).
        compile: compile the computation after the checks with ``torch.compile``: ``True``, a
            mode (``"reduce-overhead"``, ``"max-autotune"``) or a dict of its keyword
            arguments. One compile per input shape.

    Shape:
        pred, target (B, C, H, W), C in {1, 3}, H, W >= 16 -> 0-dim ((B,) with ``"none"``).

    Raises:
        ValueError: an unknown ``form``, ``reduction`` or region; a bad ``input_range``.

    Example:
        >>> criterion = IFQALoss(form="features")   # the bundled model when no other is found
        >>> out = torch.rand(2, 3, 64, 64, requires_grad=True)
        >>> loss = criterion(out, torch.rand(2, 3, 64, 64))
        >>> loss.backward()
        >>> loss.dim(), out.grad.shape
        (0, torch.Size([2, 3, 64, 64]))
    """

    def __init__(
        self,
        model: str | torch.nn.Module = "auto",
        weights: WeightsArg = None,
        *,
        device: str | torch.device | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        form: str = "one_minus",
        region_weights: Mapping[str, float] | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        check_inputs: bool | str = True,
        check_every: int = CHECK_EVERY,
        compile: bool | str | Mapping[str, object] = False,
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.input_check = InputCheck(
            type(self).__name__, input_range, mode=check_inputs, every=check_every
        )
        self._compile_kwargs = compile_kwargs(compile)
        self.form = form
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self.regions = RegionWeights(region_weights)
        net, cfg = resolve_model(model, weights, device)
        self._hold(net, cfg)
        template = self.regions.template(cfg.native_size, self.device)
        self.register_buffer("template_weight_map", template, persistent=False)

    @property
    def input_range(self) -> tuple[float, float]:
        return self.input_check.input_range

    @property
    def check_every(self) -> int:
        return self.input_check.every

    @property
    def region_names(self) -> tuple[str, ...]:
        return self.regions.names

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, form={self.form!r}, input_range={self.input_range}, "
            f"region_weights={self.regions.as_dict()}, reduction={self.reduction!r}, "
            f"loss_weight={self.loss_weight}"
        )

    def weight_map(
        self,
        images: torch.Tensor,
        *,
        landmarks: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        check_finite: bool = True,
    ) -> torch.Tensor | None:
        """The (B or 1, 1, S, S) per-pixel weights used for ``images``, or None (uniform).

        See :meth:`ifqa_loss.regions.RegionWeights.for_images` (``S``: the native size).
        """
        if landmarks is None and masks is None and weight is None:
            return self.template_weight_map
        return self.regions.for_images(
            images,
            self.native_size,
            landmarks=landmarks,
            masks=masks,
            weight=weight,
            check_finite=check_finite,
        )

    def _no_reference(self, inp: torch.Tensor, wmap: torch.Tensor | None) -> torch.Tensor:
        """(B,) weighted mean of ``1 - realness`` or ``softplus(-logit)``."""
        logits = self.discriminator.forward_logits(inp).float()
        if self.form == "one_minus":
            return weighted_mean(1.0 - torch.sigmoid(logits), wmap)
        return weighted_mean(F.softplus(-logits), wmap)

    def _full_reference(
        self, inp: torch.Tensor, ref: torch.Tensor, wmap: torch.Tensor | None
    ) -> torch.Tensor:
        """(B,) feature-matching or map-matching distance of ``inp`` to ``ref``."""
        net = self.discriminator
        if self.form == "map":
            p = torch.sigmoid(net.forward_logits(inp).float())
            with torch.no_grad():
                q = torch.sigmoid(net.forward_logits(ref).float())
            return weighted_mean((p - q).abs(), wmap)
        feats = net.forward_features(inp)
        with torch.no_grad():
            refs = net.forward_features(ref)
        return feature_distance(feats, refs, wmap)

    def _core_fn(self) -> Callable[..., torch.Tensor]:
        """:meth:`_core`, compiled on first use when ``compile`` was asked for."""
        if self._compile_kwargs is None or torch.compiler.is_compiling():
            return self._core
        fn = self.__dict__.get("_compiled_core")
        if fn is None:
            fn = torch.compile(self._core, **self._compile_kwargs)
            self.__dict__["_compiled_core"] = fn
        return fn

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_compiled_core", None)  # rebuilt on first use (copies, pickles)
        return state

    def _core(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None,
        weight: torch.Tensor | None,
        landmarks: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> torch.Tensor:
        """Everything after the input checks: no value is read back from the device here.

        Shape:
            x, t (B, 3, H, W) checked images (t: target or None) -> 0-dim, or (B,) for "none".
        """
        wmap = self.weight_map(
            x, landmarks=landmarks, masks=masks, weight=weight, check_finite=False
        )
        inp = to_model_input(x, self.config, self.input_range)
        if self.form in FULL_REFERENCE:
            with torch.no_grad():
                ref = to_model_input(t.detach(), self.config, self.input_range)
            per_image = self._full_reference(inp, ref, wmap)
        else:
            per_image = self._no_reference(inp, wmap)
        if self.reduction == "mean":
            out = per_image.mean()
        elif self.reduction == "sum":
            out = per_image.sum()
        else:
            out = per_image
        return out * self.loss_weight

    def _checked_target(self, target: torch.Tensor | None, x: torch.Tensor, due: bool):
        """The (B, 3, H, W) target of a full-reference form, checked against ``pred``."""
        if target is None:
            raise ValueError(
                f"form={self.form!r} compares the output with its target: call "
                f"criterion(output, target); no-reference forms: 'one_minus', 'softplus'"
            )
        t = self.input_check(target, "target", values=due)
        if t.shape != x.shape:
            raise ValueError(
                f"target shape {tuple(t.shape)} does not match pred shape {tuple(x.shape)}"
            )
        return t

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        *,
        landmarks: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``pred`` (lower = better: more real, or closer to ``target``).

        Args:
            pred: (B, C, H, W) images in ``input_range``.
            target: (B, C, H, W) ground truth in ``input_range``, as BasicSR passes it; needed by
                the full-reference forms (``"features"``, ``"map"``), ignored by the others.
            weight: BasicSR's element-wise weight, (B, 1 or C, H, W): used as a weight map.
            landmarks: (B, 5, 2) or (B, 68, 2) (x, y) pixel coordinates in ``pred``, for
                region weighting of non-aligned faces.
            masks: (B, R, H, W) masks of the ``region_weights`` regions, in that order, or a
                (B, 1, H, W) weight map.

        Raises:
            TypeError, ValueError: bad inputs (:class:`~ifqa_loss.preprocess.InputCheck`).
        """
        due = self.input_check.due()
        x = self.input_check(pred, "pred", values=due)
        t = self._checked_target(target, x, due) if self.form in FULL_REFERENCE else None
        if landmarks is not None and self.regions and weight is None and masks is None:
            check_landmarks(landmarks, finite=due)
        self.input_check.passed(due)
        return self._core_fn()(x, t, weight, landmarks, masks)
