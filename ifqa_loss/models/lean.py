"""A memory-lean forward of the frozen ``ifqa`` CNN, for gradients to the input only.

When the discriminator is frozen, autograd still keeps what a *trainable* network would need:
every convolution saves its input (for the weight gradient), every average pool its input,
and instance norm and leaky ReLU each save a full-size tensor. For a gradient to the input
only, a convolution needs nothing but its weight, a 2x2 average pool nothing at all, and
"instance norm then leaky ReLU" can be recomputed from the norm's input and two per-channel
statistics. The functions below save exactly that: under half the saved bytes
(``tests/test_lean.py`` counts them), with the same values and input gradients as plain
autograd (float64 test).

Opt-in, ``IFQALoss(memory_lean=True)``, for ``IFQACNN`` discriminators in fp32 eager mode (not
under autocast or ``torch.compile``, which plan memory themselves). Superseded on the CPU by the
default fused path of a frozen ``IFQACNN`` (``cnn.py``), which is faster and has a lower peak
RSS although it saves more bytes (``benchmarks/RESULTS.md``); its value on a GPU, where the
allocator's peak is what counts, is not measured yet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd import Function

from .cnn import IFQACNN, ResBlk, UpResBlk

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_SLOPE = 0.2


class _FrozenConv(Function):
    """Stride-1 convolution with a frozen weight: saves the weight only."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding: int):
        ctx.save_for_backward(weight)
        ctx.padding = padding
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return F.conv_transpose2d(grad, weight, padding=ctx.padding), None, None, None


class _Pool2(Function):
    """2x2 average pooling (even sizes): the gradient is the nearest upsampling / 4."""

    @staticmethod
    def forward(ctx, x):
        return F.avg_pool2d(x, 2)

    @staticmethod
    def backward(ctx, grad):
        return F.interpolate(grad, scale_factor=2.0, mode="nearest") * 0.25


class _NormAct(Function):
    """``leaky_relu(instance_norm(x) * gamma + beta, 0.2)``, saving x and per-channel stats."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float):
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        rstd = torch.rsqrt(var + eps)
        g = gamma.view(1, -1, 1, 1)
        b = beta.view(1, -1, 1, 1)
        y = torch.addcmul(b, (x - mean) * rstd, g)
        ctx.save_for_backward(x, mean, rstd, gamma, beta)
        return F.leaky_relu(y, _SLOPE)

    @staticmethod
    def backward(ctx, grad):
        x, mean, rstd, gamma, beta = ctx.saved_tensors
        g = gamma.view(1, -1, 1, 1)
        xhat = (x - mean) * rstd
        y = torch.addcmul(beta.view(1, -1, 1, 1), xhat, g)
        gy = torch.where(y > 0, grad, grad * _SLOPE)
        del y
        gxhat = gy * g
        del gy
        m1 = gxhat.mean((2, 3), keepdim=True)
        m2 = (gxhat * xhat).mean((2, 3), keepdim=True)
        gx = (gxhat - m1 - xhat * m2) * rstd
        return gx, None, None, None


def _conv(layer: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return _FrozenConv.apply(x, layer.weight, layer.bias, layer.padding[0])


def _norm_act(norm: torch.nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
    return _NormAct.apply(x, norm.weight, norm.bias, norm.eps)


def _resblk(blk: ResBlk, x: torch.Tensor) -> torch.Tensor:
    sc = _conv(blk.conv1x1, x) if blk.learned_sc else x
    r = _conv(blk.conv1, _norm_act(blk.norm1, x))
    if blk.downsample:
        sc, r = _Pool2.apply(sc), _Pool2.apply(r)
    r = _conv(blk.conv2, _norm_act(blk.norm2, r))
    return (sc + r) * _INV_SQRT2


def _upresblk(blk: UpResBlk, x: torch.Tensor) -> torch.Tensor:
    sc = _conv(blk.conv1x1, x) if blk.learned_sc else x
    sc = F.interpolate(sc, scale_factor=2.0, mode="nearest")
    r = F.interpolate(_norm_act(blk.norm1, x), scale_factor=2.0, mode="nearest")
    r = _conv(blk.conv2, _norm_act(blk.norm2, _conv(blk.conv1, r)))
    return (r + sc) * _INV_SQRT2


def supports_lean(net: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`lean_logits` applies: a frozen ``IFQACNN`` in fp32 eager autograd."""
    if type(net) is not IFQACNN or not torch.is_grad_enabled() or not x.requires_grad:
        return False
    if x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
        return False
    if torch.compiler.is_compiling():
        return False
    h, w = x.shape[-2:]
    if h % 32 or w % 32:
        return False
    return not any(p.requires_grad for p in net.parameters())


def lean_logits(net: IFQACNN, x: torch.Tensor) -> torch.Tensor:
    """``net.forward_logits(x)`` for a frozen ``net``, keeping only what the input gradient needs.

    Same values as the plain forward; the backward gives the input gradient only (the
    parameters must not require gradients: see :func:`supports_lean`).
    """
    e128 = _resblk(net.encoder128, x)
    e64 = _resblk(net.encoder64, e128)
    e32 = _resblk(net.encoder32, e64)
    e16 = _resblk(net.encoder16, e32)
    e8 = _resblk(net.encoder8, e16)
    h = e8
    for blk in net.btn:
        h = _resblk(blk, h)
    d16 = _upresblk(net.decoder16, h)
    d32 = _upresblk(net.decoder32, torch.addcmul(e16, d16, e16))
    d64 = _upresblk(net.decoder64, torch.addcmul(e32, d32, e32))
    d128 = _upresblk(net.decoder128, torch.addcmul(e64, d64, e64))
    return _upresblk(net.decoder256[0], torch.addcmul(e128, d128, e128))
