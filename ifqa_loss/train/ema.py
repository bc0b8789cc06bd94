"""A moving average of a network's weights (a validated copy, as BasicSR's ``net_g_ema``)."""

from __future__ import annotations

import torch
from torch import nn


def ema_update(avg: nn.Module, net: nn.Module, decay: float) -> None:
    """``avg``'s parameters <- ``decay`` x themselves + (1 - ``decay``) x ``net``'s, in one
    fused step; buffers (counters, running statistics) are copied from ``net``."""
    with torch.no_grad():
        torch._foreach_lerp_(list(avg.parameters()), list(net.parameters()), 1.0 - decay)
        for a, b in zip(avg.buffers(), net.buffers(), strict=True):
            a.copy_(b)
