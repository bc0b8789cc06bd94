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


def pooled_conv_weight(w: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel (stride 1, padding 1) followed by 2x2 average pooling, as one 4x4 kernel.

    ``avg_pool2d(conv2d(x, w, padding=1), 2) == conv2d(x, pooled_conv_weight(w), stride=2,
    padding=1)``: 16 taps per output on a quarter of the pixels, instead of 9 taps on all of them
    (2.25x fewer multiply-adds), and the full-size result is never materialised.

    Args:
        w: a ``(Cout, Cin, 3, 3)`` kernel.

    Returns:
        the ``(Cout, Cin, 4, 4)`` kernel of the convolution and pooling together.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x, w = torch.randn(1, 3, 16, 16), torch.randn(5, 3, 3, 3)
        >>> k = pooled_conv_weight(w)
        >>> k.shape
        torch.Size([5, 3, 4, 4])
        >>> slow = F.avg_pool2d(F.conv2d(x, w, padding=1), 2)
        >>> torch.allclose(F.conv2d(x, k, stride=2, padding=1), slow, atol=1e-5)
        True
    """
    k = w.new_zeros(*w.shape[:2], 4, 4)
    for s in (0, 1):
        for t in (0, 1):
            k[..., s : s + 3, t : t + 3] += w
    return k * 0.25


# Nearest 2x upsampling followed by a 3x3 convolution: output row 2i+a only reads input rows
# i-1, i (a = 0) or i, i+1 (a = 1), with the 3 kernel rows summed into 2 as below.
_PHASE_ROWS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def upsampled_conv_weight(w: torch.Tensor) -> torch.Tensor:
    """The four 2x2 "phase" kernels of nearest-2x-upsampling followed by a 3x3 convolution.

    Returns a ``(4*Cout, Cin, 2, 2)`` kernel whose output channel ``4*c + 2*a + b`` gives output
    pixels ``(2i+a, 2j+b)`` of channel ``c`` (see :func:`upsampled_conv`).

    Example:
        >>> upsampled_conv_weight(torch.randn(5, 3, 3, 3)).shape
        torch.Size([20, 3, 2, 2])
    """
    a = _PHASE_ROWS.to(w)
    k = torch.einsum("pri,ocij,qsj->opqcrs", a, w, a)  # (Cout, 2, 2, Cin, 2, 2)
    return k.reshape(w.shape[0] * 4, w.shape[1], 2, 2)


# Below this many low-resolution pixels per image the fused forms are not used: there the
# convolutions are bound by reading their (larger) kernels, not by multiply-adds.
FUSE_MIN_PIXELS = 256


def _derived_weight(conv: nn.Conv2d, make) -> torch.Tensor:
    """``make(conv.weight)``, cached on ``conv`` while the weight's storage, version, dtype and
    device stay the same (a frozen network derives each kernel once)."""
    w = conv.weight
    if w.requires_grad or torch.compiler.is_compiling():
        return make(w)
    key = (make.__name__, w.data_ptr(), w._version, w.dtype, w.device)
    cached = conv.__dict__.get("_ifqa_fused")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, make(w))
        conv.__dict__["_ifqa_fused"] = cached
    return cached[1]


def upsampled_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(interpolate(x, scale_factor=2, mode="nearest"))`` for a 3x3, padding-1 ``conv``.

    Evaluated at the input's resolution with 2x2 phase kernels: 4 taps per output pixel instead
    of 9 (2.25x fewer multiply-adds), and the upsampled input is never materialised.

    Shape:
        - x: :math:`(B, C_{in}, H, W)`
        - output: :math:`(B, C_{out}, 2H, 2W)`

    Example:
        >>> _ = torch.manual_seed(0)
        >>> conv, x = nn.Conv2d(3, 5, 3, 1, 1), torch.randn(2, 3, 8, 8)
        >>> with torch.no_grad():
        ...     slow = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        ...     fast = upsampled_conv(x, conv)
        >>> fast.shape, torch.allclose(fast, slow, atol=1e-5)
        (torch.Size([2, 5, 16, 16]), True)
    """
    b, _, h, w = x.shape
    cout = conv.out_channels
    bias = None if conv.bias is None else conv.bias.repeat_interleave(4)
    k = _derived_weight(conv, upsampled_conv_weight)
    o = F.conv2d(x, k, bias, padding=1)  # (B, 4*Cout, H+1, W+1)
    o = o.view(b, cout, 2, 2, h + 1, w + 1)
    y = o.new_empty(b, cout, h, 2, w, 2)
    for pa in (0, 1):
        for pb in (0, 1):
            y[:, :, :, pa, :, pb] = o[:, :, pa, pb, pa : pa + h, pb : pb + w]
    return y.view(b, cout, 2 * h, 2 * w)


class _NormActSavingOutput(torch.autograd.Function):
    """``leaky_relu(instance_norm(x), 0.2)`` for a frozen norm, saving only its output.

    The activation is invertible (slope 0.2 > 0) and the affine norm is too (where gamma != 0),
    so the normalised input, all the backward needs, is rebuilt from the output, which the next
    convolution saves anyway: the norm's input is not kept. Gradient to ``x`` only.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float):  # type: ignore[override]
        b, c = x.shape[:2]
        out, _, rstd = torch.native_batch_norm(
            x.reshape(1, b * c, *x.shape[2:]), gamma.repeat(b), beta.repeat(b), None, None,
            True, 0.0, eps,
        )  # fmt: skip
        out = F.leaky_relu_(out, 0.2).view_as(x)
        ctx.save_for_backward(out, rstd, gamma, beta)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        out, rstd, gamma, beta = ctx.saved_tensors
        b, c = out.shape[:2]
        shape = (1, b * c, *out.shape[2:])
        a = out.reshape(shape)
        gy = torch.ops.aten.leaky_relu_backward(grad.reshape(shape), a, 0.2, True)
        y = F.leaky_relu(a, 5.0)  # the inverse activation: the norm's output
        # Batch-norm backward on y, with "mean" beta and "inverse std" 1/gamma, rebuilds
        # xhat = (y - beta) / gamma; the weight gamma^2 * rstd then turns its
        # (gy - mean(gy) - xhat * mean(gy * xhat)) / gamma * weight into the instance-norm
        # gradient (...) * gamma * rstd. A channel with gamma 0 gets weight 0: gradient 0.
        safe = torch.where(gamma == 0, torch.ones_like(gamma), gamma)
        gx = torch.ops.aten.native_batch_norm_backward(
            gy, y, (gamma * safe).repeat(b) * rstd, None, None, beta.repeat(b),
            safe.reciprocal().repeat(b), True, ctx.eps, [True, False, False],
        )[0]  # fmt: skip
        return gx.view_as(out), None, None, None


def _norm_act(norm: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``leaky_relu(norm(x), 0.2)`` in the fused path: saves one tensor instead of two when a
    gradient is being recorded (same dtype as the norm, no autocast, eager), plain (in-place
    activation) otherwise."""
    if (
        torch.is_grad_enabled()
        and x.requires_grad
        and x.dtype == norm.weight.dtype
        and not torch.is_autocast_enabled(x.device.type)
        and not torch.compiler.is_compiling()
    ):
        return _NormActSavingOutput.apply(x, norm.weight, norm.bias, norm.eps)
    return F.leaky_relu(norm(x), 0.2, inplace=True)


class ResBlk(nn.Module):
    """Pre-activation residual block, optionally halving the resolution.

    residual = conv2(act(norm2(pool(conv1(act(norm1(x)))))))
    shortcut = pool(conv1x1(x))   (conv1x1 only when the channel count changes)
    out = (shortcut + residual) / sqrt(2)

    Example:
        >>> _ = torch.manual_seed(0)
        >>> blk, x = ResBlk(4, 8, downsample=True), torch.randn(2, 4, 64, 64)
        >>> with torch.no_grad():
        ...     y = blk(x)
        ...     same = torch.allclose(blk.forward_fast(x), y, atol=1e-5)
        >>> y.shape, same
        (torch.Size([2, 8, 32, 32]), True)
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

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function with fewer operations and fewer saved tensors.

        Pooling before the 1x1 shortcut (they commute: it has no bias); conv1 and the pool as
        one stride-2 4x4 convolution where the image is large; leaky ReLU in place, so autograd
        keeps one tensor for "norm, activation, convolution" instead of three.
        """
        a = _norm_act(self.norm1, x)
        sc = self._pool(x)
        sc = self.conv1x1(sc) if self.learned_sc else sc
        if self.downsample and x.shape[-2] * x.shape[-1] >= 4 * FUSE_MIN_PIXELS:
            k = _derived_weight(self.conv1, pooled_conv_weight)
            r = F.conv2d(a, k, self.conv1.bias, 2, 1)
        else:
            r = self._pool(self.conv1(a))
        r = self.conv2(_norm_act(self.norm2, r))
        return torch.add(sc, r).mul_(_INV_SQRT2)


class UpResBlk(nn.Module):
    """Pre-activation residual block that doubles the resolution (nearest neighbour).

    residual = conv2(act(norm2(conv1(up(act(norm1(x)))))))
    shortcut = conv1x1(up(x))   (conv1x1 only when the channel count changes)

    Example:
        >>> _ = torch.manual_seed(0)
        >>> blk, x = UpResBlk(8, 4), torch.randn(2, 8, 16, 16)
        >>> with torch.no_grad():
        ...     y = blk(x)
        ...     same = torch.allclose(blk.forward_fast(x), y, atol=1e-5)
        >>> y.shape, same
        (torch.Size([2, 4, 32, 32]), True)
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

    def forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The same function with upsampling + conv1 as 2x2 phase convolutions at the input's
        resolution (where it is large enough), and leaky ReLU in place (see ResBlk)."""
        sc = self.conv1x1(x) if self.learned_sc else x
        sc = F.interpolate(sc, scale_factor=2.0, mode="nearest")
        a = _norm_act(self.norm1, x)
        if x.shape[-2] * x.shape[-1] >= FUSE_MIN_PIXELS:
            r = upsampled_conv(a, self.conv1)
        else:
            r = self.conv1(F.interpolate(a, scale_factor=2.0, mode="nearest"))
        r = self.conv2(_norm_act(self.norm2, r))
        return torch.add(r, sc).mul_(_INV_SQRT2)


def _ch(c: int, width: float) -> int:
    return max(4, round(c * width))


class IFQACNN(Discriminator):
    """The original IFQA discriminator (``ifqa``): (B,3,256,256) in [-1,1] -> (B,1,256,256).

    Args:
        width: channel multiplier; 1.0 is the published architecture (105.2 M parameters),
            0.25 the bundled ``ifqa-lite`` (6.6 M). Every channel count is at least 4.
        native_size: the input size the network was trained at (a multiple of 32).

    Raises:
        ValueError: ``native_size`` is not a multiple of 32.

    Shape:
        - input: :math:`(B, 3, H, W)` in [-1, 1], ``H`` and ``W`` multiples of 32
        - output: :math:`(B, 1, H, W)` realness in [0, 1]

    Example:
        A small untrained network (the bundled ``ifqa-lite`` is ``width=0.25``; load trained
        weights with :func:`ifqa_loss.load_discriminator`):

        >>> net = IFQACNN(width=0.0625, native_size=64)
        >>> net.encoder128.conv1x1.out_channels, net.decoder16.conv2.out_channels
        (4, 32)
        >>> _ = torch.manual_seed(0)
        >>> with torch.no_grad():
        ...     net(torch.rand(2, 3, 64, 64) * 2 - 1).shape
        torch.Size([2, 1, 64, 64])
        >>> from ifqa_loss import load_discriminator
        >>> lite = load_discriminator("ifqa-lite")                # the bundled weights
        >>> type(lite).__name__, lite.width, lite.native_size
        ('IFQACNN', 0.25, 256)
        >>> round(sum(p.numel() for p in lite.parameters()) / 1e6, 1)
        6.6
        >>> IFQACNN(native_size=100)
        Traceback (most recent call last):
        ...
        ValueError: native_size must be a multiple of 32, got 100
    """

    def __init__(self, width: float = 1.0, native_size: int = 256) -> None:
        super().__init__()
        if native_size % 32:
            raise ValueError(f"native_size must be a multiple of 32, got {native_size}")
        self.width = width
        self.native_size = native_size
        self.fused = True  # see forward_logits
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
        """Pre-sigmoid per-pixel logits, (B,1,S,S).

        A frozen network (:meth:`freeze`: the loss and the metric) takes the fused path when
        ``fused`` is true (the default): each pooled convolution runs as one stride-2 4x4
        convolution and each upsampled convolution as 2x2 phase convolutions at the low
        resolution. Same function, about a third fewer multiply-adds; results differ from the
        layer-by-layer path by float rounding only (``tests/test_fused.py``). A trainable network
        keeps the layer-by-layer path, the original's exact order of operations.

        Example:
            >>> from ifqa_loss import load_discriminator
            >>> d = load_discriminator("ifqa-lite")          # the bundled model, frozen
            >>> _ = torch.manual_seed(0)
            >>> x = torch.rand(1, 3, 64, 64) * 2 - 1
            >>> fused = d.forward_logits(x)
            >>> d.fused = False                              # the layer-by-layer path
            >>> torch.allclose(d.forward_logits(x), fused, atol=1e-4)
            True
        """
        return self._levels(x)[1]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Seven feature maps: the encoder at 1/2 to 1/16 and the decoder at 1/8 to 1/2 scale.

        For feature matching (``IFQALoss(form="features")``); same path as
        :meth:`forward_logits`. The 1/32 encoder and 1/16 decoder levels (8x8 and 16x16 at
        256) are left out: they describe the whole face, not its detail.

        Example:
            >>> from ifqa_loss import load_discriminator
            >>> d = load_discriminator("ifqa-lite")
            >>> feats = d.forward_features(torch.zeros(1, 3, 64, 64))
            >>> [tuple(f.shape[1:]) for f in feats]  # doctest: +NORMALIZE_WHITESPACE
            [(16, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4),
             (64, 8, 8), (32, 16, 16), (16, 32, 32)]
        """
        return list(self._levels(x)[0])

    def _levels(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        fast = self.fused and self.frozen
        e128 = _blk(self.encoder128, x, fast)
        e64 = _blk(self.encoder64, e128, fast)
        e32 = _blk(self.encoder32, e64, fast)
        e16 = _blk(self.encoder16, e32, fast)
        e8 = _blk(self.encoder8, e16, fast)
        d16 = _blk(self.decoder16, self.btn(e8), fast)
        d32 = _blk(self.decoder32, self._gate(d16, e16), fast)
        d64 = _blk(self.decoder64, self._gate(d32, e32), fast)
        d128 = _blk(self.decoder128, self._gate(d64, e64), fast)
        logits = _blk(self.decoder256[0], self._gate(d128, e128), fast)
        return (e128, e64, e32, e16, d32, d64, d128), logits


def _blk(block: ResBlk | UpResBlk, x: torch.Tensor, fast: bool) -> torch.Tensor:
    return block.forward_fast(x) if fast else block(x)
