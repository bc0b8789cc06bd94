"""The ``ifqa`` CNN: a per-pixel U-Net discriminator with gated skips.

State-dict compatible with the published ``IFQA_Metric.pth`` (122 tensors) when ``width=1.0``.
``width`` scales every inner channel count, so small discriminators for CPU training share the
same code and key names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Discriminator

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class ResBlk(nn.Module):
    """Pre-activation residual block, optionally halving the resolution.

    residual = conv2(act(norm2(pool(conv1(act(norm1(x)))))))
    shortcut = pool(conv1x1(x))   (conv1x1 only when the channel count changes)
    out = (shortcut + residual) / sqrt(2)
    """

    def __init__(self, cin: int, cout: int, downsample: bool = False) -> None:
        super().__init__()
        # Attribute order fixes the state-dict key order of the released checkpoint.
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm1 = nn.InstanceNorm2d(cin, affine=True)
        self.norm2 = nn.InstanceNorm2d(cin, affine=True)
        self.learned_sc = cin != cout
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)
        self.downsample = downsample

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sc = self.conv1x1(x) if self.learned_sc else x
        sc = self._pool(sc)
        r = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        r = self._pool(r)
        r = self.conv2(F.leaky_relu(self.norm2(r), 0.2))
        return (sc + r) * _INV_SQRT2


class UpResBlk(nn.Module):
    """Pre-activation residual block that doubles the resolution (nearest neighbour).

    residual = conv2(act(norm2(conv1(up(act(norm1(x)))))))
    shortcut = conv1x1(up(x))   (conv1x1 only when the channel count changes)
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm1 = nn.InstanceNorm2d(cin, affine=True)
        self.norm2 = nn.InstanceNorm2d(cin, affine=True)
        self.learned_sc = cin != cout
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 conv commutes with nearest upsampling: convolve first, on 4x fewer pixels.
        sc = self.conv1x1(x) if self.learned_sc else x
        sc = F.interpolate(sc, scale_factor=2.0, mode="nearest")
        r = F.leaky_relu(self.norm1(x), 0.2)
        r = self.conv1(F.interpolate(r, scale_factor=2.0, mode="nearest"))
        r = self.conv2(F.leaky_relu(self.norm2(r), 0.2))
        return (r + sc) * _INV_SQRT2


def _ch(c: int, width: float) -> int:
    return max(4, round(c * width))


class IFQACNN(Discriminator):
    """The original IFQA discriminator (``ifqa``): (B,3,256,256) in [-1,1] -> (B,1,256,256).

    Args:
        width: channel multiplier; 1.0 is the published architecture (105.2 M parameters).
        native_size: the input size the network was trained at (a multiple of 32).
    """

    def __init__(self, width: float = 1.0, native_size: int = 256) -> None:
        super().__init__()
        if native_size % 32:
            raise ValueError(f"native_size must be a multiple of 32, got {native_size}")
        self.width = width
        self.native_size = native_size
        c64, c128, c256, c512, c1024 = (_ch(c, width) for c in (64, 128, 256, 512, 1024))
        self.encoder128 = ResBlk(3, c64, downsample=True)
        self.encoder64 = ResBlk(c64, c128, downsample=True)
        self.encoder32 = ResBlk(c128, c256, downsample=True)
        self.encoder16 = ResBlk(c256, c512, downsample=True)
        self.encoder8 = ResBlk(c512, c1024, downsample=True)
        self.btn = nn.Sequential(*(ResBlk(c1024, c1024) for _ in range(4)))
        self.decoder16 = UpResBlk(c1024, c512)
        self.decoder32 = UpResBlk(c512, c256)
        self.decoder64 = UpResBlk(c256, c128)
        self.decoder128 = UpResBlk(c128, c64)
        self.decoder256 = nn.Sequential(UpResBlk(c64, 1), nn.Sigmoid())

    @staticmethod
    def _gate(d: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # The released network multiplies the decoder output into the skip: d*e + e.
        return torch.addcmul(e, d, e)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid per-pixel logits, (B,1,S,S)."""
        e128 = self.encoder128(x)
        e64 = self.encoder64(e128)
        e32 = self.encoder32(e64)
        e16 = self.encoder16(e32)
        e8 = self.encoder8(e16)
        d16 = self.decoder16(self.btn(e8))
        d32 = self.decoder32(self._gate(d16, e16))
        d64 = self.decoder64(self._gate(d32, e32))
        d128 = self.decoder128(self._gate(d64, e64))
        return self.decoder256[0](self._gate(d128, e128))
