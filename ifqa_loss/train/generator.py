"""A small generator that simulates face restoration (degraded face -> restored face).

It only has to produce plausible "restored" faces with restoration artefacts for the
discriminator to learn from; it is not meant to be a good restorer. The network works on a
pixel-unshuffled copy of the input (cheap on a CPU), predicts a residual, and starts as the
identity (the last convolution is zero-initialised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class RestorationGenerator(nn.Module):
    """(B, 3, H, W) degraded face in [-1, 1] -> (B, 3, H, W) restored face in [-1, 1].

    Args:
        channels: feature width.
        blocks: residual blocks.
        unshuffle: pixel-unshuffle factor (H and W must be multiples of it).
    """

    def __init__(self, channels: int = 32, blocks: int = 4, unshuffle: int = 2) -> None:
        super().__init__()
        self.unshuffle = int(unshuffle)
        cin = 3 * self.unshuffle**2
        self.head = nn.Conv2d(cin, channels, 3, 1, 1)
        self.body = nn.Sequential(*(_ResBlock(channels) for _ in range(blocks)))
        self.tail = nn.Conv2d(channels, cin, 3, 1, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        f = self.head(f)
        r = self.tail(F.leaky_relu(self.body(f), 0.2))
        r = F.pixel_shuffle(r, self.unshuffle) if self.unshuffle > 1 else r
        return (x + r).clamp(-1.0, 1.0)
