"""A small face restorer and the paired fine-tuning used to judge a loss by what it trains.

Used by ``examples/finetune_restorer.py`` and by ``ifqa audit`` (setting C): two copies of one
L1-pretrained restorer are fine-tuned from the same weights on the same batches, one with L1
alone and one with L1 plus the objective under test, so that any difference between them comes
from the objective.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]  # (degraded, clean), (B, 3, H, W) in [0, 1]
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (output, clean) -> 0-dim


class TinyRestorer(nn.Module):
    """A residual CNN: output = input + f(input); (B,3,H,W) in [0,1] -> same shape.

    The last convolution starts at zero, so an untrained restorer is the identity. Its output is
    not clamped, as most restorers' outputs are not.
    """

    def __init__(self, channels: int = 24, blocks: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def train_l1(net: nn.Module, next_batch: Callable[[], Batch], steps: int, lr: float) -> None:
    """Pre-train ``net`` with L1 to the clean face for ``steps`` Adam steps (in place)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        lq, gt = next_batch()
        loss = F.l1_loss(net(lq), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()


def fine_tune_pair(
    base: nn.Module,
    next_batch: Callable[[], Batch],
    extra: Objective,
    *,
    steps: int,
    lr: float,
    names: tuple[str, str] = ("L1", "L1+IFQA"),
    on_step: Callable[[int], None] | None = None,
    after_step: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> dict[str, nn.Module]:
    """Fine-tune two copies of ``base``: ``names[0]`` with L1, ``names[1]`` with L1 + ``extra``.

    Both start from ``base``'s weights and see the same batches in the same order.

    Args:
        base: the pre-trained restorer (left unchanged).
        next_batch: returns the next ``(degraded, clean)`` training batch.
        extra: the objective under test, called as ``extra(output, clean)``; it already carries
            its weight (e.g. ``lambda out, gt: 0.1 * criterion(out, gt)``).
        steps: Adam steps per branch.
        on_step: called with the step number (1-based) after each step, e.g. for progress.
        after_step: called as ``after_step(output.detach(), clean)`` after each step of the
            second branch, e.g. to update a co-trained discriminator.

    Returns:
        ``{names[0]: net, names[1]: net}``, both in eval mode.
    """
    nets = {k: copy.deepcopy(base).train() for k in names}
    opts = {k: torch.optim.Adam(m.parameters(), lr=lr) for k, m in nets.items()}
    for step in range(1, steps + 1):
        lq, gt = next_batch()
        for k, net in nets.items():
            out = net(lq)
            loss = F.l1_loss(out, gt)
            if k == names[1]:
                loss = loss + extra(out, gt)
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
            if k == names[1] and after_step is not None:
                after_step(out.detach(), gt)
        if on_step is not None:
            on_step(step)
    return {k: m.eval() for k, m in nets.items()}
