"""An adaptive weight for the restorer's GAN term: the ratio of gradient norms at its last layer.

VQGAN and CodeFormer scale the generator's GAN loss at every step so that its gradient at the
generator's last layer is ``scale`` times the reconstruction loss's gradient there. The pull of
the adversary then no longer grows with the discriminator's confidence::

    l1 = F.l1_loss(out, gt)
    g = adv(out, gt)                       # IFQAAdversarialLoss(loss_weight=1.0)
    w = adaptive_gan_weight(l1, g, restorer.out.weight, scale=0.5)
    (l1 + w * g).backward()
"""

from __future__ import annotations

import torch

# CodeFormer's bounds: the norm ratio is clamped to [0, 1e4], with 1e-4 added to the GAN norm.
MAX_WEIGHT = 1e4
EPS = 1e-4


def _grad_norm(loss: torch.Tensor, layer: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"{name} must be a 0-dim loss tensor, got {got}")
    if not loss.requires_grad:
        raise ValueError(f"{name} has no gradient: compute it from the restorer's output")
    (g,) = torch.autograd.grad(loss, layer, retain_graph=True, allow_unused=True)
    if g is None:
        raise ValueError(
            f"{name} does not depend on last_layer: pass a parameter of the layer that "
            "produces the restorer's output (for example net.out.weight)"
        )
    return g.detach().norm()


def adaptive_gan_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    *,
    scale: float,
    max_weight: float = MAX_WEIGHT,
) -> torch.Tensor:
    """``scale`` x ``|d rec_loss / d last_layer| / (|d gan_loss / d last_layer| + 1e-4)``,
    clamped to ``[0, max_weight]`` and detached: the weight to put on ``gan_loss``.

    Both graphs are kept (the caller's backward follows). A step whose ratio is not finite (a
    NaN or infinite gradient) gets weight 0: the GAN term sits that step out and the run goes
    on with the reconstruction loss alone.

    Args:
        rec_loss: the reconstruction loss (L1, perceptual, ...), a 0-dim tensor.
        gan_loss: the restorer's GAN term at weight 1, a 0-dim tensor.
        last_layer: a parameter of the restorer's last layer (its weight).
        scale: the GAN gradient's size relative to the reconstruction's (CodeFormer: 0.1 beside
            L1 + perceptual; what ``IFQAAdversarialLoss``'s default weight amounts to:
            docs/adversarial.md).
        max_weight: the largest weight returned.

    Returns:
        a 0-dim tensor without gradient, on ``gan_loss``'s device.

    Raises:
        ValueError: ``scale`` or ``max_weight`` is not positive, a loss is not a 0-dim tensor
            with a gradient, or ``last_layer`` is not a parameter that both losses depend on.

    Example:
        A one-layer restorer, L1 and a non-saturating GAN term from the bundled ``ifqa-lite``:

        >>> import torch.nn.functional as F
        >>> from ifqa_loss import load_discriminator
        >>> d = load_discriminator("ifqa-lite")
        >>> _ = torch.manual_seed(0)
        >>> restorer = torch.nn.Conv2d(3, 3, 3, padding=1)
        >>> lq, gt = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
        >>> out = restorer(lq)
        >>> l1 = F.l1_loss(out, gt)
        >>> g = F.softplus(-d.forward_logits(out * 2 - 1)).mean()
        >>> w = adaptive_gan_weight(l1, g, restorer.weight, scale=0.5)
        >>> w.shape, w.requires_grad
        (torch.Size([]), False)

        The GAN term's gradient then has half the L1 gradient's norm, whatever its own size:

        >>> def grad_norm(loss):
        ...     return torch.autograd.grad(loss, restorer.weight, retain_graph=True)[0].norm()
        >>> torch.isclose(grad_norm(w * g), 0.5 * grad_norm(l1), rtol=1e-3).item()
        True
        >>> w10 = adaptive_gan_weight(l1, 10 * g, restorer.weight, scale=0.5)
        >>> torch.isclose(10 * w10, w, rtol=1e-3).item()
        True
        >>> (l1 + w * g).backward()                    # both graphs were kept
        >>> adaptive_gan_weight(l1, g, restorer.weight, scale=0.0)
        Traceback (most recent call last):
        ...
        ValueError: scale and max_weight must be > 0, got 0.0 and 10000.0
    """
    if not scale > 0 or not max_weight > 0:
        raise ValueError(f"scale and max_weight must be > 0, got {scale} and {max_weight}")
    if not isinstance(last_layer, torch.Tensor) or not last_layer.requires_grad:
        raise ValueError("last_layer must be a parameter that requires grad (net.out.weight)")
    rec = _grad_norm(rec_loss, last_layer, "rec_loss")
    gan = _grad_norm(gan_loss, last_layer, "gan_loss")
    w = scale * rec / (gan + EPS)
    if not torch.isfinite(w):
        return torch.zeros((), dtype=w.dtype, device=w.device)
    return w.clamp(0.0, max_weight)
