"""``IFQAAdversarialLoss``: an IFQA discriminator that keeps learning against the restorer.

``IFQALoss`` holds a *frozen* discriminator; a restorer trained against a frozen network learns to
fool it (``ifqa audit``: its input gradient points to the clean face no more often than a coin).
Face-restoration pipelines (GFPGAN, Real-ESRGAN, CodeFormer) instead train their discriminator
beside the restorer. This module does that with IFQA's per-pixel U-Net as the warm start::

    adv = IFQAAdversarialLoss(lr=opt_g)             # a trainable copy of the bundled model
    loss = F.l1_loss(out, gt) + adv(out, gt)        # zero for the first ``warmup`` steps
    loss.backward(); opt_g.step()
    stats = adv.discriminator_step(gt, out.detach())  # one discriminator update

The defaults are the recipe of docs/adversarial.md where the loss can hold it: the discriminator
learns alone for ``warmup`` steps before the restorer feels it, and ``lr=opt_g`` keeps its
learning rate at the restorer's. What it cannot hold, the restorer's side does: validate and ship
a moving average of the restorer's weights (``torch.optim.swa_utils.AveragedModel``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .loss import feature_distance
from .models.base import Discriminator
from .models.registry import ModelConfig, get_model_config
from .preprocess import CHECK_EVERY, InputCheck, to_model_input
from .regions import RegionWeights, weighted_mean
from .weights import WeightsArg, create_model, export_discriminator, resolve_model

# The restorer term's default weight beside an L1 loss of weight 1 (see docs/adversarial.md).
DEFAULT_WEIGHT = 0.01
# Discriminator steps before the restorer's term starts (the recipe's warm-up).
DEFAULT_WARMUP = 200


def trainable_discriminator(
    model: str | Discriminator = "auto",
    weights: WeightsArg = None,
    *,
    pretrained: bool = True,
    device: str | torch.device | None = None,
) -> tuple[Discriminator, ModelConfig]:
    """A trainable IFQA discriminator and its config: loaded (``pretrained``) or random.

    Model names and ``weights`` resolve as in :class:`ifqa_loss.IFQALoss`; a ``Discriminator``
    instance is copied, so the caller's module stays as it was.
    """
    if pretrained or isinstance(model, Discriminator):
        return resolve_model(model, weights, device, trainable=True)
    name = "ifqa-lite" if model == "auto" else model
    net = create_model(name, pretrained=False, weights=weights, device=device)
    return net, get_model_config(name)


class DiscriminatorAugment(nn.Module):
    """Differentiable augmentation of the discriminator's inputs (kornia), for small data sets.

    A horizontal flip, a translation/zoom (reflection padding) and a colour jiggle, each
    applied with probability ``p`` and drawn independently per image. Differentiable, so the
    gradient stays defined whatever follows.

    Shape:
        (B, 3, H, W) in [0, 1] -> same.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        import kornia.augmentation as K

        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augment probability must be in [0, 1], got {p}")
        self.p = p
        self.ops = nn.Sequential(
            K.RandomHorizontalFlip(p=p),
            K.RandomAffine(
                degrees=0.0, translate=(0.08, 0.08), scale=(0.92, 1.08), padding_mode=2, p=p
            ),
            K.ColorJiggle(brightness=0.1, contrast=0.1, saturation=0.1, p=p),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        return self.ops(x)


class IFQAAdversarialLoss(nn.Module):
    """An IFQA discriminator trained against the restorer, and the restorer's GAN term.

    Unlike :class:`ifqa_loss.IFQALoss`, the discriminator is a registered submodule that learns:
    ``adv.parameters()`` are the discriminator's (never put them in the restorer's optimizer),
    ``adv.optimizer`` updates them in :meth:`discriminator_step`, and ``state_dict()`` holds
    the weights, the optimizer state and the step counter, so a resumed run continues exactly.

    Each training iteration: the restorer's loss with ``adv(pred, target)``, its backward and
    optimizer step, then ``adv.discriminator_step(target, pred.detach())`` (in that order: the
    discriminator step changes the weights the restorer's backward needs). Until the
    discriminator has taken ``warmup`` steps, ``adv(pred)`` is zero (with a graph, so the
    restorer's backward is unchanged): a warm-started discriminator first learns what this
    restorer's outputs look like, and does not push it with what it learnt elsewhere.

    Args:
        model: ``"auto"`` (the original ``ifqa`` weights if found, else the bundled
            ``ifqa-lite``), a registered CNN-family name (``"ifqa"``, ``"ifqa-lite"``), or a
            ``Discriminator`` (copied).
        weights: checkpoint for ``model`` (None: search, as ``IFQALoss`` does).
        device: where to put the discriminator (None: CPU; ``.to()`` moves it later).
        input_range: value range of the images, ``(0, 1)`` or ``(-1, 1)``.
        region_weights: ``{region: weight}`` of the restorer's per-pixel term, as in
            :class:`~ifqa_loss.IFQALoss` (e.g. :data:`ifqa_loss.FPR_WEIGHTS`); None: uniform.
        pretrained: start from the model's weights (the warm start); False: random weights of
            the same architecture (the ablation).
        loss_weight: weight of the restorer's term (default :data:`DEFAULT_WEIGHT`, the
            recommended weight beside an L1 loss of weight 1).
        feature_weight: with a ``target``, add this weight times the matching of the *current*
            discriminator's features of the output to those of the target (0: off).
        resize: run the discriminator at its native size (as ``IFQALoss`` does); False runs it at
            the image's own size (fully convolutional; sides must be multiples of 32).
        lr: the discriminator's Adam learning rate: a number, or the restorer's optimizer,
            whose first parameter group's rate it then follows at every step (schedulers
            included): the recipe ties the two.
        betas: Adam's betas for the discriminator.
        warmup: discriminator steps before the restorer's term starts (0: from the first
            call); :attr:`d_steps` counts them, and a resumed run keeps the count.
        r1_weight, r1_every: lazy R1 penalty on real images, ``r1_weight / 2 * |grad|^2`` with
            the gradient of each image's mean logit with respect to the network's input,
            applied every ``r1_every`` discriminator steps and scaled by ``r1_every``; off
            (0) by default (docs/adversarial.md says why).
        augment: probability of each differentiable augmentation of both sides in the
            discriminator step (:class:`DiscriminatorAugment`; 0 turns it off).
        check_inputs, check_every: as in :class:`~ifqa_loss.IFQALoss`.

    Shape:
        pred, target (B, 3, H, W) in ``input_range`` -> 0-dim loss.

    Raises:
        ValueError: negative weights or ``lr``, a bad ``r1_every`` or ``warmup``, an unknown
            region or model.
        TypeError: ``lr`` neither a number nor a ``torch.optim.Optimizer``.

    Example:
        >>> adv = IFQAAdversarialLoss("ifqa-lite", resize=False, warmup=1)
        >>> out = torch.rand(1, 3, 64, 64, requires_grad=True)
        >>> float(adv(out))                         # the discriminator has not stepped yet
        0.0
        >>> stats = adv.discriminator_step(torch.rand(1, 3, 64, 64), out.detach())
        >>> sorted(stats), adv.d_steps
        (['acc_fake', 'acc_real', 'd_loss'], 1)
        >>> adv(out).backward()                     # the restorer's step (gradients to out)
        >>> bool(out.grad.abs().sum() > 0)
        True
    """

    def __init__(
        self,
        model: str | Discriminator = "auto",
        weights: WeightsArg = None,
        *,
        device: str | torch.device | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        region_weights: Mapping[str, float] | None = None,
        pretrained: bool = True,
        loss_weight: float = DEFAULT_WEIGHT,
        feature_weight: float = 0.0,
        resize: bool = True,
        lr: float | torch.optim.Optimizer = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup: int = DEFAULT_WARMUP,
        r1_weight: float = 0.0,
        r1_every: int = 16,
        augment: float = 0.5,
        check_inputs: bool | str = True,
        check_every: int = CHECK_EVERY,
    ) -> None:
        super().__init__()
        if loss_weight < 0 or feature_weight < 0 or r1_weight < 0:
            raise ValueError(
                f"loss_weight, feature_weight and r1_weight must be >= 0, got {loss_weight}, "
                f"{feature_weight}, {r1_weight}"
            )
        if isinstance(r1_every, bool) or not isinstance(r1_every, int) or r1_every < 1:
            raise ValueError(f"r1_every must be an int >= 1, got {r1_every!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an int >= 0 (discriminator steps), got {warmup!r}")
        self.lr_source, lr = _learning_rate(lr)
        self.input_check = InputCheck(
            type(self).__name__, input_range, mode=check_inputs, every=check_every
        )
        self.regions = RegionWeights(region_weights)
        self.net, self.config = trainable_discriminator(
            model, weights, pretrained=pretrained, device=device
        )
        self.loss_weight = float(loss_weight)
        self.feature_weight = float(feature_weight)
        self.resize = bool(resize)
        self.r1_weight = float(r1_weight)
        self.r1_every = r1_every
        self.augment = DiscriminatorAugment(augment)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, betas=betas)
        self.warmup = warmup
        self.d_steps = 0
        self.last_d_stats: dict[str, float] = {}

    @property
    def model_name(self) -> str:
        return self.config.name

    @property
    def warming_up(self) -> bool:
        """True until the discriminator has taken ``warmup`` steps (the restorer's term is 0)."""
        return self.d_steps < self.warmup

    @property
    def weights_origin(self) -> str:
        return getattr(self.net, "weights_origin", "unknown")

    @property
    def input_range(self) -> tuple[float, float]:
        return self.input_check.input_range

    @property
    def region_names(self) -> tuple[str, ...]:
        return self.regions.names

    def __repr__(self) -> str:
        # One line, as a loss prints in a log (the network's layers: ``print(adv.net)``).
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return (
            f"model={self.model_name!r}, start={self.weights_origin!r}, "
            f"loss_weight={self.loss_weight}, feature_weight={self.feature_weight}, "
            f"region_weights={self.regions.as_dict()}, resize={self.resize}, "
            f"r1_weight={self.r1_weight}, r1_every={self.r1_every}, warmup={self.warmup}"
        )

    # -- the discriminator's input -------------------------------------------------------------

    def _checked(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Checked images (values on the schedule of :class:`~ifqa_loss.preprocess.InputCheck`;
        a refused call is not counted, so the next one is checked again)."""
        due = self.input_check.due()
        x = self.input_check(x, name, values=due)
        if not self.resize and (x.shape[-1] % 32 or x.shape[-2] % 32):
            raise ValueError(
                f"{name} is {tuple(x.shape[-2:])}: with resize=False the discriminator runs at "
                "the image's own size, whose sides must be multiples of 32; pass resize=True"
            )
        if not self.resize and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"resize=False needs square images, got {tuple(x.shape[-2:])}")
        self.input_check.passed(due)
        return x

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """Images in ``input_range`` -> [0, 1] (what the augmentation takes)."""
        lo, hi = self.input_range
        return x if (lo, hi) == (0.0, 1.0) else (x - lo) / (hi - lo)

    def _model_input(self, unit: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the network's normalised input (resized when ``resize``)."""
        return to_model_input(unit, self.config, resize=self.resize)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits (B, 1, h, w) of the current discriminator (gradients flow)."""
        return self.net.forward_logits(self._model_input(self._unit(images))).float()

    # -- the restorer's term -------------------------------------------------------------------

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor | None = None,
        *,
        landmarks: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The restorer's loss: ``loss_weight`` x the region-weighted per-pixel non-saturating
        GAN loss ``softplus(-logit)``, plus ``feature_weight`` x feature matching to ``target``.

        No gradient reaches the discriminator's weights; gradients reach ``pred``.
        ``landmarks``/``masks`` place the regions as in :meth:`ifqa_loss.IFQALoss.forward`.
        Zero (``0 * pred.sum()``, so that ``backward`` still runs) while :attr:`warming_up`.
        """
        x = self._checked(pred, "pred")
        if self.feature_weight > 0 and target is not None:
            target = self._checked_target(target, x)
        if self.warming_up:  # inputs checked all the same: a mistake shows from the first step
            return 0.0 * x.sum()
        with _no_weight_grad(self.net):
            inp = self._model_input(self._unit(x))
            if self.feature_weight > 0 and target is not None:
                feats, logits = self.net._levels(inp)
            else:
                feats, logits = None, self.net.forward_logits(inp)
            wmap = self.regions.for_images(x, logits.shape[-1], landmarks=landmarks, masks=masks)
            per_image = weighted_mean(F.softplus(-logits.float()), wmap)
            loss = self.loss_weight * per_image.mean()
            if feats is not None:
                loss = loss + self.feature_weight * self._feature_term(target, feats, wmap)
        return loss

    def _checked_target(self, target: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = self._checked(target, "target")
        if t.shape != x.shape:
            raise ValueError(f"target shape {tuple(t.shape)} does not match {tuple(x.shape)}")
        return t

    def _feature_term(
        self,
        target: torch.Tensor,
        feats: Sequence[torch.Tensor],
        wmap: torch.Tensor | None,
    ) -> torch.Tensor:
        with torch.no_grad():
            refs, _ = self.net._levels(self._model_input(self._unit(target.detach())))
        return feature_distance(list(feats), list(refs), wmap).mean()

    # -- the discriminator's update ------------------------------------------------------------

    def _r1_due(self, r1: bool | None) -> bool:
        if r1 is not None:
            return r1 and self.r1_weight > 0
        return self.r1_weight > 0 and self.d_steps % self.r1_every == 0

    def d_loss(
        self, real: torch.Tensor, fake: torch.Tensor, *, r1: bool | None = None
    ) -> torch.Tensor:
        """The discriminator's loss on ``real`` (targets) and ``fake`` (detached outputs).

        ``softplus(-logit)`` on real pixels plus ``softplus(logit)`` on fake ones (per-pixel,
        mean), both sides augmented, plus the lazy R1 penalty when due (``r1=None``: every
        ``r1_every``-th call; True/False forces it). For users who step their own optimizer;
        :attr:`last_d_stats` then holds the logged values. Counts as one discriminator step.
        """
        real_u = self.augment(self._unit(self._checked(real, "real").detach()))
        fake_u = self.augment(self._unit(self._checked(fake, "fake").detach()))
        due = self._r1_due(r1)
        real_in = self._model_input(real_u).detach().requires_grad_(due)
        real_logits = self.net.forward_logits(real_in).float()
        fake_logits = self.net.forward_logits(self._model_input(fake_u)).float()
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        stats = {"d_loss": loss.detach()}
        if due:
            penalty = _r1_penalty(real_logits, real_in)
            loss = loss + 0.5 * self.r1_weight * self.r1_every * penalty
            stats["r1"] = penalty.detach()
        stats["acc_real"] = (real_logits.detach() > 0).float().mean()
        stats["acc_fake"] = (fake_logits.detach() < 0).float().mean()
        self.__dict__["_pending_stats"] = stats
        self.d_steps += 1
        return loss

    def discriminator_step(
        self, real: torch.Tensor, fake: torch.Tensor, *, r1: bool | None = None
    ) -> dict[str, float]:
        """One update of the discriminator with :attr:`optimizer`.

        Returns ``{"d_loss", "acc_real", "acc_fake"[, "r1"]}`` as Python floats: the loss
        (without R1), the fraction of real pixels judged real and of fake pixels judged fake.
        """
        if self.lr_source is not None:
            rate = self.lr_source.param_groups[0]["lr"]
            for group in self.optimizer.param_groups:
                group["lr"] = rate
        self.optimizer.zero_grad(set_to_none=True)
        self.d_loss(real, fake, r1=r1).backward()
        self.optimizer.step()
        return self.stats()

    def stats(self) -> dict[str, float]:
        """The values of the last :meth:`d_loss` as floats (one device synchronisation)."""
        pending = self.__dict__.pop("_pending_stats", None)
        if pending is not None:
            self.last_d_stats = {k: float(v) for k, v in pending.items()}
        return dict(self.last_d_stats)

    # -- saving --------------------------------------------------------------------------------

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "d_steps": self.d_steps,
            **self.input_check.state(),  # a resumed run does not re-ask for the convention
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.d_steps = int(state["d_steps"])
        self.input_check.load_state(state)

    def export(self, path: str | os.PathLike) -> Path:
        """Write the discriminator's weights as safetensors (atomically), named with its model,
        so ``IFQAMetric(weights=path)`` and ``IFQALoss(weights=path)`` load it."""
        return export_discriminator(self.net, path)


def _learning_rate(
    lr: float | torch.optim.Optimizer,
) -> tuple[torch.optim.Optimizer | None, float]:
    """``(optimizer to follow or None, starting rate)`` from the ``lr`` argument."""
    if isinstance(lr, torch.optim.Optimizer):
        return lr, float(lr.param_groups[0]["lr"])
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise TypeError(f"lr must be a number or the restorer's torch.optim.Optimizer, got {lr!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return None, float(lr)


def _r1_penalty(logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``|d mean_pixels(logit) / d input|^2`` per image, the input being
    the network's normalised one ([-1, 1] for the CNN family, as StyleGAN2's R1 is taken)."""
    (grad,) = torch.autograd.grad(logits.mean((1, 2, 3)).sum(), inputs, create_graph=True)
    return grad.pow(2).sum((1, 2, 3)).mean()


class _no_weight_grad:
    """Within the block, the network's parameters do not require gradients (inputs still do)."""

    def __init__(self, net: nn.Module) -> None:
        self.params = [p for p in net.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)
