"""Hardening the discriminator against what optimises it (our addition).

A frozen discriminator used as a loss is attacked by whatever minimises the loss: plain
gradient steps on pixels, or a restorer trained against it. Two training-time defences:

- :func:`adversarial_fakes`: signed-gradient ascent of the current discriminator's
  region-weighted mean logit (what such an attack does), started from degraded or real faces.
  The results join the batch as fakes, so the directions the attack finds are taught as fake.
  Started from a real face it also asks real faces to be local maxima of the score.
- :func:`input_gradient_penalty`: the R1 penalty, ``|grad_x s(x)|^2`` on real faces, with ``s``
  the per-image region-weighted mean logit: a flat score around real faces leaves an attack
  little to climb.

- :func:`gradient_alignment_loss`: ``1 - cos(grad_x s(fake), real - fake)`` on fake images: an
  optimiser that raises the score then moves a fake towards its clean face (perceptually
  aligned gradients, taught directly from the pairs the trainer has). On attacked fakes it
  teaches the way back from where an attack went.
- :class:`AttackBuffer`: attacked faces kept between steps and attacked further against the
  later discriminator (persistent attacks, as short-run samplers with a replay buffer train
  energy models): a few steps per training step add up to attack paths as long as an
  optimiser's, at the cost of a short one.

Images are in the model's [-1, 1] range; step sizes are given in 1/255 of [0, 1].
"""

from __future__ import annotations

import torch

from ..models.cnn import IFQACNN
from ..regions import weighted_mean


def adversarial_fakes(
    d: IFQACNN, start: torch.Tensor, weight: torch.Tensor, steps: int, step_size: float
) -> torch.Tensor:
    """``steps`` signed-gradient steps that raise ``d``'s weighted score, from ``start``.

    Args:
        d: the discriminator being trained (its parameters get no gradient here).
        start: (B, 3, H, W) images in [-1, 1].
        weight: (B, 1, H, W) per-pixel weights (the region weight map).
        steps: number of steps.
        step_size: per-step change of each pixel in 1/255 of the [0, 1] range.

    Returns:
        The attacked images, detached, clamped to [-1, 1].
    """
    if start.shape[0] == 0 or steps <= 0:
        return start.detach()
    delta = 2.0 * step_size / 255.0  # [0, 1] units to the model's [-1, 1]
    flags = [p.requires_grad for p in d.parameters()]
    d.requires_grad_(False)
    try:
        x = start.detach().clone()
        for _ in range(steps):
            x.requires_grad_(True)
            score = weighted_mean(d.forward_logits(x), weight).sum()
            (grad,) = torch.autograd.grad(score, x)
            x = (x.detach() + delta * grad.sign()).clamp_(-1.0, 1.0)
    finally:
        for p, f in zip(d.parameters(), flags, strict=True):
            p.requires_grad_(f)
    return x.detach()


def _score_gradient(d: IFQACNN, images: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``grad_x s(x)`` of each image's weighted mean logit, differentiable in ``d``'s weights."""
    x = images.detach().requires_grad_(True)
    score = weighted_mean(d.forward_logits(x), weight)
    (grad,) = torch.autograd.grad(score.sum(), x, create_graph=True)
    return grad


def input_gradient_penalty(d: IFQACNN, real: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """R1: mean over images of ``H * W * |grad_x s(x)|^2`` (differentiable in ``d``'s weights).

    The factor ``H * W`` makes the value independent of the crop size for a score that is a
    mean over pixels of local responses.
    """
    grad = _score_gradient(d, real, weight)
    h, w = real.shape[-2:]
    return grad.pow(2).sum((1, 2, 3)).mean() * (h * w)


def gradient_alignment_loss(
    d: IFQACNN, fake: torch.Tensor, real: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Mean over images of ``1 - cos(grad_x s(fake), real - fake)`` (differentiable in ``d``).

    Pairs whose fake equals its real face (no direction to point to) are left out; 0 when none
    is left.
    """
    grad = _score_gradient(d, fake, weight)
    target = (real - fake).detach().flatten(1)
    cos = torch.nn.functional.cosine_similarity(grad.flatten(1), target, dim=1, eps=1e-12)
    keep = target.abs().amax(1) > 1e-6
    return (1.0 - cos[keep]).mean() if bool(keep.any()) else cos.sum() * 0.0


def pgd_slots(n_fake: int, fraction: float, from_real: float) -> tuple[int, int]:
    """How many of the last fake slots are attacked: ``(from degraded, from real)``."""
    n = round(n_fake * fraction)
    n_real = round(n * from_real)
    return n - n_real, n_real


class AttackBuffer:
    """A ring of ``(real, attacked)`` pairs of one image shape, for persistent attacks.

    :meth:`draw` picks stored pairs to continue; :meth:`put` writes attacked pairs back (over
    the drawn ones, new ones at the ring's next slot). Its state travels in checkpoints.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.real: torch.Tensor | None = None
        self.fake: torch.Tensor | None = None
        self.count = 0
        self.next = 0

    def draw(self, n: int, share: float, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
        """Indices of stored pairs to continue for ``n`` slots (-1: start fresh), (n,) long."""
        if not n or not self.count or self.fake is None or self.fake.shape[1:] != shape:
            return torch.full((n,), -1, dtype=torch.long)
        picks = torch.randperm(max(self.count, n), generator=gen)[:n] % self.count
        use = torch.rand(n, generator=gen) < share
        return torch.where(use, picks, torch.full_like(picks, -1))

    def put(self, idx: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Store pairs: slot ``i`` overwrites pair ``idx[i]``, or takes a new place when -1."""
        real, fake = real.detach(), fake.detach()
        if self.fake is None or self.fake.shape[1:] != fake.shape[1:]:
            shape = (self.capacity, *fake.shape[1:])
            self.real = fake.new_zeros(shape)
            self.fake = fake.new_zeros(shape)
            self.count = self.next = 0
        assert self.real is not None
        for i, j in enumerate(idx.tolist()):
            if j < 0:
                j = self.next
                self.next = (self.next + 1) % self.capacity
                self.count = min(self.count + 1, self.capacity)
            self.real[j] = real[i]
            self.fake[j] = fake[i]

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        if self.fake is None:
            return {"count": 0, "next": 0}
        assert self.real is not None
        return {"real": self.real, "fake": self.fake, "count": self.count, "next": self.next}

    def load_state_dict(self, st: dict[str, torch.Tensor | int]) -> None:
        self.real, self.fake = st.get("real"), st.get("fake")  # type: ignore[assignment]
        self.count, self.next = int(st["count"]), int(st["next"])


__all__ = [
    "AttackBuffer",
    "adversarial_fakes",
    "gradient_alignment_loss",
    "input_gradient_penalty",
    "pgd_slots",
]
