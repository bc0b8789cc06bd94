"""The memory-lean loss path: same values and input gradients as autograd, far fewer saved bytes."""

from __future__ import annotations

import pytest
import torch

from ifqa_loss import IFQALoss
from ifqa_loss.models import IFQACNN
from ifqa_loss.models.lean import lean_logits, supports_lean


def saved_bytes(fn, *args) -> tuple[torch.Tensor, int]:
    """Run ``fn`` and count the bytes of distinct non-parameter tensors autograd saved."""
    seen: dict[int, int] = {}
    params = set()
    for a in args:
        if isinstance(a, torch.nn.Module):
            params |= {p.data_ptr() for p in a.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in params:
            seen.setdefault(t.data_ptr(), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, sum(seen.values())


def frozen(width: float, size: int, seed: int = 0) -> IFQACNN:
    torch.manual_seed(seed)
    net = IFQACNN(width=width, native_size=size)
    # Non-trivial norm affines, so the fused norm/activation backward is really exercised.
    for m in net.modules():
        if isinstance(m, torch.nn.InstanceNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return net.eval().requires_grad_(False)


@pytest.mark.parametrize("width,size", [(0.125, 64), (0.25, 96)])
def test_same_values_and_input_gradient(width, size):
    net = frozen(width, size).double()
    x = (torch.rand(2, 3, size, size, dtype=torch.float64) * 2 - 1).requires_grad_()
    gout = torch.randn(2, 1, size, size, dtype=torch.float64)
    ref = net.forward_logits(x)
    (g_ref,) = torch.autograd.grad(ref, x, gout)
    out = lean_logits(net, x)
    (g,) = torch.autograd.grad(out, x, gout)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)


def test_float32_error_no_worse_than_plain_autograd():
    # Small bottlenecks (2x2 instance norms) make fp32 input gradients ill-conditioned for both
    # paths; the lean one must not be less accurate than autograd against a float64 reference.
    net = frozen(0.125, 64)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    gout = torch.randn(2, 1, 64, 64)

    def grad(fn, n, t):
        t = t.clone().requires_grad_()
        (g,) = torch.autograd.grad(fn(n, t), t, gout.to(t.dtype))
        return g.double()

    exact = grad(lean_logits, net.double(), x.double())
    net.float()
    assert supports_lean(net, x.requires_grad_())
    err_plain = (grad(lambda n, t: n.forward_logits(t), net, x) - exact).abs().max()
    err_lean = (grad(lean_logits, net, x) - exact).abs().max()
    assert err_lean <= 2 * err_plain + 1e-7, (err_lean, err_plain)


def test_keeps_less_than_half_the_saved_activations():
    net = frozen(0.25, 128)
    x = (torch.rand(2, 3, 128, 128) * 2 - 1).requires_grad_()
    _, plain = saved_bytes(lambda n, t: n.forward_logits(t), net, x)
    _, lean = saved_bytes(lean_logits, net, x)
    assert lean < 0.45 * plain, (lean, plain)


def test_loss_uses_it_and_matches_plain_autograd():
    net = frozen(0.125, 64)
    x = torch.rand(2, 3, 80, 72, requires_grad=True)
    losses, grads = [], []
    for lean in (True, False):
        crit = IFQALoss(model=net, region_weights={"eyes": 3.0}, memory_lean=lean)
        loss = crit(x)
        (g,) = torch.autograd.grad(loss, x)
        losses.append(loss)
        grads.append(g)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-7)
    scale = grads[1].abs().max().item()
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0.1 * scale)  # fp32: see above
    assert (grads[0] - grads[1]).abs().mean() < 0.01 * grads[1].abs().mean()


def test_not_used_where_it_does_not_apply():
    net = frozen(0.125, 64)
    x = torch.rand(1, 3, 64, 64)
    assert not supports_lean(net, x)  # no gradient wanted
    x.requires_grad_()
    assert not supports_lean(net, x[..., :48])  # not a multiple of 32
    assert not supports_lean(net.requires_grad_(True), x)  # trainable: weights need inputs
    net.requires_grad_(False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not supports_lean(net, x)
    assert supports_lean(net, x)
