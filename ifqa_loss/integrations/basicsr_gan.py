"""A trainable IFQA discriminator and a region-weighted per-pixel GAN loss for BasicSR.

``ifqa_loss.integrations.basicsr`` registers both (importing this module alone registers
nothing, and this module never imports basicsr at import time):

- ``IFQADiscriminator`` in ``ARCH_REGISTRY``, for ``network_d``: an IFQA CNN discriminator
  (``ifqa``, ``ifqa-lite``) that BasicSR trains like any other, warm-started from IFQA weights
  (``pretrained: true``) or randomly initialised (``pretrained: false``, the ablation). It
  returns per-pixel logits (B, 1, h, w).
- ``IFQAGANLoss`` in ``LOSS_REGISTRY``, for ``gan_opt``: BasicSR's ``GANLoss`` call shape
  (``cri_gan(pred, target_is_real, is_disc=False)``) with the per-pixel non-saturating loss
  (or hinge) averaged under face-region weights.

Example (SRGANModel / RealESRGANModel; GFPGAN: ``input_range: [-1, 1]``)::

    network_d:
      type: IFQADiscriminator
      model_name: ifqa-lite        # or ifqa with weights: weights/IFQA_Metric.pth
      pretrained: true
      input_range: [0, 1]
    train:
      gan_opt:
        type: IFQAGANLoss
        gan_type: vanilla
        loss_weight: !!float 1e-1
        region_weights: {eyes: 2, nose: 1.5, mouth: 2}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.cnn import IFQACNN
from ..models.registry import ModelConfig, get_model_config
from ..preprocess import check_range, to_model_input
from ..regions import RegionWeights, weighted_mean
from ..weights import load_into

GAN_TYPES = ("vanilla", "wgan_softplus", "hinge")
# The five stride-2 levels of the IFQA U-Net: H and W must divide by 2**5 at the image's size.
SIZE_MULTIPLE = 32


def cnn_config(model_name: str) -> ModelConfig:
    """The registry entry of an IFQA CNN-family model that may be trained as an adversary.

    Raises:
        ValueError: unknown name, a model of another family (``ifqa++``), or a model with
            another job (``ifqa-judge``: the audit's independent judge must never be the
            discriminator a restorer trained against).
    """
    cfg = get_model_config(model_name)
    if not cfg.auto_fallback:
        raise ValueError(
            f"model_name {model_name!r} is not meant to be trained against ({cfg.description}); "
            "use ifqa or ifqa-lite"
        )
    with torch.device("meta"):
        probe = cfg.build()
    if not isinstance(probe, IFQACNN):
        raise ValueError(
            f"IFQADiscriminator trains the IFQA CNN family (ifqa, ifqa-lite); {model_name!r} is "
            f"a {type(probe).__name__}"
        )
    return cfg


class IFQADiscriminator(IFQACNN):
    """A trainable IFQA U-Net discriminator for BasicSR's ``network_d``.

    Its state dict is the IFQA network's, key for key: ``pretrain_network_d`` loads a
    ``net_d_*.pth`` BasicSR saved, and ``IFQAMetric(model=model_name, weights=net_d_*.pth)``
    (or ``load_discriminator``) reads that file too. It is never frozen: ``.train()`` and
    ``.eval()`` switch modes as on any module and every parameter requires a gradient
    (instance norms without running statistics: both modes compute the same function).

    Args:
        model_name: a registered IFQA CNN: ``ifqa-lite`` (default; bundled, runs out of the
            box) or ``ifqa`` (the original 105 M-parameter network; needs its weights).
        weights: checkpoint file or folder for ``model_name`` (None: search ``$IFQA_WEIGHTS``,
            ``./weights/``, the user cache and the package, as ``load_discriminator`` does).
            Must be None when ``pretrained`` is false.
        pretrained: true: start from the IFQA weights; false: PyTorch's default random
            initialisation (seeded by BasicSR's ``manual_seed``), for the ablation.
        input_range: value range of the images BasicSR feeds: ``[0, 1]`` (SRGANModel,
            RealESRGANModel) or ``[-1, 1]`` (GFPGAN, CodeFormer).
        resize_to_native: false (default): run at the image's own size (the network is fully
            convolutional; H and W must be multiples of 32, at least 64); true: resize to the
            model's native size (256) first, so the logits are (B, 1, 256, 256).

    Shape:
        x (B, 3, H, W) in ``input_range`` -> logits (B, 1, H, W) (or native size), unbounded;
        ``sigmoid(logits)`` is the per-pixel realness (higher = more real).
    """

    def __init__(
        self,
        model_name: str = "ifqa-lite",
        weights: str | None = None,
        pretrained: bool = True,
        input_range: Sequence[float] = (0.0, 1.0),
        resize_to_native: bool = False,
    ) -> None:
        cfg = cnn_config(model_name)
        with torch.device("meta"):
            probe = cfg.build()
        super().__init__(width=probe.width, native_size=probe.native_size)
        self.model_name = cfg.name
        self.config = cfg
        self.input_range = check_range(input_range)
        self.resize_to_native = bool(resize_to_native)
        self.pretrained = bool(pretrained)
        if self.pretrained:
            load_into(self, weights, name=cfg.name)
        elif weights is not None:
            raise ValueError(
                f"weights={weights!r} with pretrained: false; give weights only with "
                "pretrained: true (false means random initialisation)"
            )
        else:
            self.weights_origin = "random initialisation (pretrained: false)"
        # GFPGANModel's R1 step needs one output per image; see patch_gfpgan_r1.
        self.image_logit_for_leaf_inputs = False
        patch_gfpgan_r1()

    def extra_repr(self) -> str:
        return (
            f"model_name={self.model_name!r}, pretrained={self.pretrained}, "
            f"input_range={self.input_range}, resize_to_native={self.resize_to_native}"
        )

    def to_network_input(self, x: torch.Tensor) -> torch.Tensor:
        """Images in ``input_range`` -> the network's normalised input (resized if asked)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"IFQADiscriminator expects (B, 3, H, W) images, got {tuple(x.shape)}")
        if self.resize_to_native:
            return to_model_input(x, self.config, self.input_range)
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or min(h, w) < 2 * SIZE_MULTIPLE:
            raise ValueError(
                f"IFQADiscriminator runs at the image's own size and needs H and W to be "
                f"multiples of {SIZE_MULTIPLE} and at least {2 * SIZE_MULTIPLE} (its instance "
                f"norms need more than one value at the 1/32 level), got {h}x{w}; crop the "
                "training patches (gt_size) accordingly or set resize_to_native: true"
            )
        return to_model_input(x, self.config, self.input_range, resize=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits, (B, 1, H, W); see the class docstring."""
        logits = self.forward_logits(self.to_network_input(x))
        if self.image_logit_for_leaf_inputs and x.is_leaf and x.requires_grad:
            # Only inside GFPGANModel's R1 step (see patch_gfpgan_r1): (B, 1) mean logits.
            return logits.mean((1, 2, 3)).unsqueeze(1)
        return logits


class IFQAGANLoss(nn.Module):
    """Per-pixel GAN loss (non-saturating by default), face-region weighted, for ``gan_opt``.

    ``cri_gan(pred, target_is_real, is_disc=False)``: ``pred`` is the discriminator's logits,
    (B, 1, h, w) (or any shape when ``region_weights`` is not set). Per pixel, the loss is the
    binary cross-entropy on the logit, ``t * softplus(-x) + (1 - t) * softplus(x)`` with
    ``t = real_label_val`` or ``fake_label_val``; with the default labels 1 and 0 this is
    ``softplus(-x)`` for "real" (the generator's non-saturating term) and ``softplus(x)`` for
    "fake". Each image's map is averaged under the region weight map (the FFHQ-template masks
    of ``ifqa_loss.masks.face_region_masks`` drawn at h x w, combined by
    ``ifqa_loss.regions.region_weight_map``), then the batch is averaged. The generator's value
    (``is_disc=False``) is multiplied by ``loss_weight``; the discriminator's is not, as in
    BasicSR's ``GANLoss``. Region weights apply to both sides.

    Args:
        gan_type: ``vanilla`` (BCE with logits) or ``wgan_softplus`` (BasicSR/StyleGAN2's
            logistic loss). With labels 1/0 they are the same function; both names are
            accepted so that a Real-ESRGAN (``vanilla``) or GFPGAN (``wgan_softplus``) YAML
            changes only ``type``. ``wgan_softplus`` ignores the label values, as BasicSR does.
            ``hinge`` (CodeFormer's): per pixel ``relu(1 - x)`` / ``relu(1 + x)`` for the
            discriminator, ``-x`` for the generator (not non-saturating; as BasicSR's).
        real_label_val, fake_label_val: the per-pixel targets of ``vanilla`` (in [0, 1]).
        loss_weight: the generator term's weight (Real-ESRGAN and GFPGAN use 0.1).
        region_weights: e.g. ``{eyes: 2, nose: 1.5, mouth: 2}``; None: uniform.

    Returns:
        a 0-dim tensor.
    """

    def __init__(
        self,
        gan_type: str = "vanilla",
        real_label_val: float = 1.0,
        fake_label_val: float = 0.0,
        loss_weight: float = 1.0,
        region_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if gan_type not in GAN_TYPES:
            raise ValueError(
                f"IFQAGANLoss gan_type must be one of {GAN_TYPES}, got {gan_type!r} (use "
                "basicsr's GANLoss for lsgan/wgan)"
            )
        for name, v in (("real_label_val", real_label_val), ("fake_label_val", fake_label_val)):
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.gan_type = gan_type
        self.real_label_val = float(real_label_val)
        self.fake_label_val = float(fake_label_val)
        self.loss_weight = float(loss_weight)
        self.regions = RegionWeights(dict(region_weights) if region_weights else None)

    def extra_repr(self) -> str:
        return (
            f"gan_type={self.gan_type!r}, loss_weight={self.loss_weight}, "
            f"regions={self.regions.as_dict()}"
        )

    def weight_map(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        """The (1, 1, h, w) region weight map on the FFHQ template, or None (uniform)."""
        return self.regions.template((h, w), device)

    def per_pixel(self, pred: torch.Tensor, target_is_real: bool, is_disc: bool) -> torch.Tensor:
        """The unweighted per-pixel loss, same shape as ``pred`` (float32)."""
        x = pred.float()
        if self.gan_type == "hinge":
            if not is_disc:
                return -x
            return F.relu(1.0 - x) if target_is_real else F.relu(1.0 + x)
        if self.gan_type == "wgan_softplus":
            return F.softplus(-x) if target_is_real else F.softplus(x)
        t = self.real_label_val if target_is_real else self.fake_label_val
        if t == 1.0:
            return F.softplus(-x)
        if t == 0.0:
            return F.softplus(x)
        return t * F.softplus(-x) + (1.0 - t) * F.softplus(x)

    def forward(
        self, pred: torch.Tensor, target_is_real: bool, is_disc: bool = False
    ) -> torch.Tensor:
        loss_map = self.per_pixel(pred, bool(target_is_real), bool(is_disc))
        if self.regions:
            if pred.dim() != 4 or pred.shape[1] != 1:
                raise ValueError(
                    f"region_weights need per-pixel logits (B, 1, h, w), got {tuple(pred.shape)}"
                    " (a discriminator with one output per image: leave region_weights unset)"
                )
            wmap = self.weight_map(pred.shape[-2], pred.shape[-1], pred.device)
            loss = weighted_mean(loss_map, wmap).mean()
        else:
            loss = loss_map.mean()
        return loss if is_disc else loss * self.loss_weight


# ----------------------------------------------------------------------------- GFPGAN's R1


def patch_gfpgan_r1() -> bool:
    """Let GFPGANModel's R1 step run with a per-pixel ``IFQADiscriminator`` (idempotent).

    GFPGAN 1.3.8 computes ``l = w / 2 * r1_penalty(pred, gt) * every + 0 * pred[0]`` and calls
    ``l.backward()``, which needs ``pred[0]`` to hold one value. While
    ``GFPGANModel.optimize_parameters`` runs an R1 step (``current_iter % net_d_reg_every ==
    0``), the discriminator returns each image's mean logit, (B, 1), when its input is a leaf
    that requires a gradient (only the R1 call passes one). So R1 penalises the squared input
    gradient of the image-level logit, as for the one-output discriminator GFPGAN's
    ``r1_reg_weight`` was set for. (The gradient of the map's *sum* is h*w times larger: at
    128 x 128 its penalty was about 1e8 in a smoke run, which blew the discriminator up.)
    Nothing is done when gfpgan has not been imported.

    Returns:
        True when the wrapper was installed by this call.
    """
    import sys

    module = sys.modules.get("gfpgan.models.gfpgan_model")
    if module is None:
        return False
    from ._patching import patch as _patch

    def make(original):
        def optimize_parameters(self, current_iter):
            net = self.get_bare_model(self.net_d)
            if not isinstance(net, IFQADiscriminator) or current_iter % self.net_d_reg_every:
                return original(self, current_iter)
            net.image_logit_for_leaf_inputs = True
            try:
                return original(self, current_iter)
            finally:
                net.image_logit_for_leaf_inputs = False

        return optimize_parameters

    return _patch(module.GFPGANModel, "optimize_parameters", make)
