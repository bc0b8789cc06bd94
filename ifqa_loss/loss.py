"""``IFQALoss``: a frozen IFQA discriminator as a region-weighted, differentiable loss."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from ._holder import HoldsDiscriminator, WeightsArg, compile_kwargs, resolve_model
from .masks import REGIONS, check_landmarks, face_region_masks
from .models.lean import lean_logits, supports_lean
from .preprocess import check_images, check_range, resize_map, to_model_input

FORMS = ("one_minus", "softplus", "features", "map")
# Forms that compare the output with the target (full-reference); the others need no target.
FULL_REFERENCE = ("features", "map")
REDUCTIONS = ("none", "mean", "sum")
# The value check reads numbers back from the device (one synchronisation): by default it runs
# on the first call and then on every CHECK_EVERY-th call, not at every training step.
CHECK_EVERY = 100
# A suggested emphasis on the facial primary regions, in the spirit of IFQA's training.
FPR_WEIGHTS = {"eyes": 2.0, "nose": 1.5, "mouth": 2.0}


def region_weight_map(
    masks: torch.Tensor, weights: Sequence[float], base: float = 1.0
) -> torch.Tensor:
    """Combine soft region masks into one weight map.

    ``W = base + sum_r (w_r - base) * m_r``, clamped at 0: ``base`` outside every region,
    ``w_r`` inside region ``r``. The weights stay Python numbers (a tensor made from them on a
    GPU would be a host-to-device copy that waits for the device, at every call).

    Shape:
        masks (B, R, H, W), weights R values -> (B, 1, H, W).
    """
    weights = [float(v) for v in weights]
    if not weights or len(weights) != masks.shape[1]:
        raise ValueError(f"{len(weights)} weights for {masks.shape[1]} masks; give one per mask")
    out = masks[:, :1] * (weights[0] - base) + base
    for r in range(1, len(weights)):
        out = out + masks[:, r : r + 1] * (weights[r] - base)
    return out.clamp_min(0.0)


def weighted_mean(per_pixel: torch.Tensor, wmap: torch.Tensor | None) -> torch.Tensor:
    """(B,) mean of a (B, 1, h, w) map, weighted by ``wmap`` (B or 1, 1, S, S) pooled to h x w."""
    if wmap is None:
        return per_pixel.mean((1, 2, 3))
    if wmap.shape[-2:] != per_pixel.shape[-2:]:
        wmap = F.adaptive_avg_pool2d(wmap, per_pixel.shape[-2:])
    wmap = wmap.expand_as(per_pixel)
    return (per_pixel * wmap).sum((1, 2, 3)) / wmap.sum((1, 2, 3)).clamp_min(1e-8)


def parse_region_weights(
    region_weights: Mapping[str, float] | None,
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """``{"eyes": 2, ...}`` -> (names, weights), checked; None or {} -> ((), ()) (uniform)."""
    if not region_weights:
        return (), ()
    unknown = [k for k in region_weights if k not in REGIONS]
    if unknown:
        raise ValueError(f"unknown regions {unknown} in region_weights; known: {REGIONS}")
    values = tuple(float(v) for v in region_weights.values())
    if any(v < 0 for v in values):
        raise ValueError(f"region_weights must be >= 0, got {dict(region_weights)}")
    return tuple(region_weights), values


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


def _landmark_weights(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    size: int,
    names: Sequence[str],
    values: Sequence[float],
    check_finite: bool,
) -> torch.Tensor:
    """Region weights from (B, K, 2) pixel landmarks of ``images``, at ``size`` x ``size``."""
    check_landmarks(landmarks, finite=check_finite)
    if landmarks.dim() == 3 and landmarks.shape[0] != images.shape[0]:
        raise ValueError(
            f"landmarks batch {landmarks.shape[0]} does not match images batch {images.shape[0]}"
        )
    h, w = images.shape[-2:]
    # (x, y) scaled with Python numbers: no tensor made from host data.
    lm = torch.stack((landmarks[..., 0] * (size / w), landmarks[..., 1] * (size / h)), -1)
    m = face_region_masks(lm, size, names, check_finite=check_finite)
    return region_weight_map(m.to(images.device, torch.float32), values)


def pixel_weights(
    images: torch.Tensor,
    size: int,
    names: Sequence[str],
    values: Sequence[float],
    template: torch.Tensor | None,
    *,
    landmarks: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    check_finite: bool = True,
) -> torch.Tensor | None:
    """The (B or 1, 1, size, size) per-pixel weights for ``images``, or None (uniform).

    Precedence: ``weight`` (a weight map), ``masks`` (one mask per region of ``names``; a
    1-channel tensor is a weight map unless exactly one region is weighted), ``landmarks``,
    ``template`` (the template regions' map, or None), uniform. ``values``: one weight per
    region of ``names``. ``check_finite``: refuse NaN/Inf landmarks (one device
    synchronisation).
    """
    _check_weight_args(images, weight=weight, masks=masks)
    if weight is not None:
        w = weight.to(images.device, torch.float32).mean(1, keepdim=True)
        return resize_map(w, (size, size))
    if masks is not None:
        m = resize_map(masks.to(images.device, torch.float32), (size, size))
        if m.shape[1] == len(names):
            return region_weight_map(m, values)
        if m.shape[1] == 1:
            return m.clamp_min(0.0)
        raise ValueError(
            f"masks has {m.shape[1]} channels but region_weights names {len(names)} regions "
            f"{tuple(names)}; pass one mask per region in that order, or a (B, 1, H, W) weight map"
        )
    if landmarks is not None and names:
        return _landmark_weights(images, landmarks, size, names, values, check_finite)
    return template


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
    """IFQA realness as a loss to minimise (lower = more real).

    ``criterion = IFQALoss(); loss = criterion(output)``. The discriminator is frozen: gradients
    reach ``output`` only. It is not a registered submodule, so an optimizer built over a model
    that owns the loss never sees its weights, and the model's ``state_dict()`` does not include
    them; ``.to(device)`` moves it.

    Args:
        model: ``"auto"`` (the original ``ifqa`` weights if found, else the bundled model), a
            registered name (see :func:`ifqa_loss.list_models`), or a ``Discriminator``.
        weights: checkpoint path / folder / state dict for ``model`` (None: search).
        input_range: value range of the images: ``(0, 1)`` (default) or ``(-1, 1)`` for
            GFPGAN/CodeFormer tensors.
        form: ``"one_minus"``: weighted mean of ``1 - realness`` (in [0, 1]; equals
            ``1 - IFQAMetric`` score under uniform weights); ``"softplus"``: weighted mean of
            ``softplus(-logit) = -log(realness)``, the non-saturating GAN generator loss.
            Full-reference forms, which need ``target``: ``"features"``: the discriminator's
            features of the output matched to those of the target (seven encoder/decoder
            levels, each an L1 distance over the mean absolute target feature, averaged), as
            a perceptual loss is used; ``"map"``: the mean absolute difference of the two
            realness maps. Neither rewards "more real than the target".
        region_weights: per-region multipliers, e.g. ``{"eyes": 2, "nose": 1.5, "mouth": 2}``
            (:data:`FPR_WEIGHTS`); pixels outside the regions weigh 1. Regions come from
            ``landmarks`` given to ``forward``, else from the FFHQ-aligned template (right for
            aligned face crops). None: uniform weights.
        reduction: ``"mean"`` | ``"sum"`` over the batch of per-image losses, or ``"none"``
            for the (B,) vector (BasicSR semantics).
        loss_weight: multiplier applied to the result (BasicSR convention).
        check_inputs: validate the inputs. Type, rank, channels and size (metadata only) are
            checked at every call. The values are checked on the first call and then on every
            ``check_every``-th call (calls 1, 1 + N, 1 + 2N, ... of this loss object), because
            reading them back from the device waits for it (one synchronisation): NaN/Inf
            raise ``ValueError``, as do NaN/Inf ``landmarks`` and, until a checked call has
            passed, images in another convention (0-255, or [-1, 1] declared as [0, 1]). After
            that the convention is settled: an unclamped restorer output outside
            ``input_range``, however far, is used as it is, with one warning per loss object
            (:func:`ifqa_loss.preprocess.check_images`). A call whose check raised is not
            counted, so the next call is checked again. The calls in between read nothing back
            from the device (``tests/test_sync.py``); a NaN input there shows as a NaN loss.
        check_every: N above (default 100); 1 checks the values at every call.
        compile: compile the computation after the checks (resize, network, weighting,
            reduction) with ``torch.compile``: ``True``, a mode (``"reduce-overhead"``: CUDA
            graphs; ``"max-autotune"``), or a dict of ``torch.compile`` keyword arguments. The
            checks stay outside, in eager Python, on their schedule. One compile per input
            shape (tens of seconds for the ``ifqa`` CNN). ``torch.compile(criterion)`` works
            too (with ``fullgraph=True``), but leaves the value checks out of the graph: they
            never run.
        device: where to put the discriminator (default CPU; ``.to()`` moves it later).
        memory_lean: for the ``ifqa`` CNN in fp32 eager mode, a custom backward that saves
            the fewest activations (``ifqa_loss.models.lean``). Not recommended: the default
            fused path of a frozen CNN is faster and its CPU peak is lower (1.47 s and 464 MiB
            of step memory against 1.92 s and 686 MiB, B=2 at 512, ``benchmarks/RESULTS.md``).

    Shape:
        output (B, C, H, W), C in {1, 3}, any H, W >= 16 -> 0-dim tensor ((B,) with ``"none"``).

    Example:
        >>> criterion = IFQALoss(model="ifqa", weights="weights/IFQA_Metric.pth")  # doctest: +SKIP
        >>> loss = criterion(restored)  # restored: (B,3,H,W) in [0,1]            # doctest: +SKIP
        >>> loss.backward()                                                        # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | torch.nn.Module = "auto",
        weights: WeightsArg = None,
        *,
        input_range: Sequence[float] = (0.0, 1.0),
        form: str = "one_minus",
        region_weights: Mapping[str, float] | None = None,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        check_inputs: bool = True,
        check_every: int = CHECK_EVERY,
        compile: bool | str | Mapping[str, object] = False,
        device: str | torch.device | None = None,
        memory_lean: bool = False,
    ) -> None:
        super().__init__()
        self.memory_lean = bool(memory_lean)
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(
                f"check_every must be an int >= 1 (1: check the values at every call), got "
                f"{check_every!r}; pass check_inputs=False to never check them"
            )
        self.check_every = check_every
        self._compile_kwargs = compile_kwargs(compile)
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.input_range = check_range(input_range)
        self.form = form
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self.check_inputs = check_inputs
        self._calls = 0  # calls whose checks passed, for the check_every schedule
        self.region_names, self.region_values = parse_region_weights(region_weights)
        net, cfg = resolve_model(model, weights, device)
        self._hold(net, cfg)
        template_map = None
        if self.region_names:
            s = cfg.native_size
            masks = face_region_masks(None, s, self.region_names, device=self.device)
            template_map = region_weight_map(masks, self.region_values)
        self.register_buffer("template_weight_map", template_map, persistent=False)

    def _warn_overshoot_once(self, message: str) -> None:
        """Values outside ``input_range`` (not another convention): one warning per loss."""
        if not self.__dict__.get("_overshoot_warned", False):
            self.__dict__["_overshoot_warned"] = True
            warnings.warn(f"IFQALoss: {message}; warned once per loss object", stacklevel=4)

    def _no_reference(self, inp: torch.Tensor, wmap: torch.Tensor | None) -> torch.Tensor:
        """(B,) weighted mean of ``1 - realness`` or ``softplus(-logit)``."""
        net = self.discriminator
        if self.memory_lean and supports_lean(net, inp):
            logits = lean_logits(net, inp)  # same values; saves under half the activations
        else:
            logits = net.forward_logits(inp).float()
        if self.form == "one_minus":
            return weighted_mean(1.0 - torch.sigmoid(logits), wmap)
        return weighted_mean(F.softplus(-logits), wmap)

    def _checked_target(
        self, target: torch.Tensor | None, x: torch.Tensor, check_values: bool
    ) -> torch.Tensor:
        """The (B, 3, H, W) target of a full-reference form, checked against ``pred``."""
        if target is None:
            raise ValueError(
                f"form={self.form!r} compares the output with its target: call "
                f"criterion(output, target); no-reference forms: 'one_minus', 'softplus'"
            )
        t = check_images(
            target,
            self.input_range,
            name="target",
            check_values=check_values,
            on_overshoot=self._warn_overshoot_once,
            convention=self._calls == 0,
        )
        if t.shape != x.shape:
            raise ValueError(
                f"target shape {tuple(t.shape)} does not match pred shape {tuple(x.shape)}"
            )
        return t

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

    def extra_repr(self) -> str:
        regions = dict(zip(self.region_names, self.region_values, strict=True)) or None
        return (
            f"{super().extra_repr()}, form={self.form!r}, input_range={self.input_range}, "
            f"region_weights={regions}, reduction={self.reduction!r}, "
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

        See :func:`pixel_weights` (``S``: the model's native size).
        """
        return pixel_weights(
            images,
            self.native_size,
            self.region_names,
            self.region_values,
            self.template_weight_map,
            landmarks=landmarks,
            masks=masks,
            weight=weight,
            check_finite=check_finite,
        )

    def _check_due(self) -> bool:
        """Whether this call checks the values (eager only; see ``check_every``)."""
        if not self.check_inputs or torch.compiler.is_compiling():
            return False
        return self._calls % self.check_every == 0

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

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        *,
        landmarks: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        **kwargs: object,
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

        Values are checked on the first call and every ``check_every``-th after it (see the
        class docstring); the other calls never wait for the device.
        """
        due = self._check_due()
        x = check_images(
            pred,
            self.input_range,
            name="pred",
            check_values=due,
            on_overshoot=self._warn_overshoot_once,
            convention=self._calls == 0,
        )
        t = self._checked_target(target, x, due) if self.form in FULL_REFERENCE else None
        if landmarks is not None and self.region_names and weight is None and masks is None:
            check_landmarks(landmarks, finite=due)
        if not torch.compiler.is_compiling():
            self._calls += 1
        return self._core_fn()(x, t, weight, landmarks, masks)
