"""A frozen `ifqa` CNN's fused forward computes the same function as the layer-by-layer one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ifqa_loss.models import IFQACNN
from ifqa_loss.models.cnn import pooled_conv_weight, upsampled_conv


def _net(width: float, dtype=torch.float64, seed: int = 0) -> IFQACNN:
    torch.manual_seed(seed)
    net = IFQACNN(width).to(dtype)
    # Non-trivial affine norms, so every parameter matters.
    for m in net.modules():
        if isinstance(m, torch.nn.InstanceNorm2d):
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    return net


@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (13, 6)])
def test_pooled_conv_equals_conv_then_pool(hw):
    torch.manual_seed(1)
    x = torch.randn(2, 5, *hw, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    ref = F.avg_pool2d(F.conv2d(x, w, b, padding=1), 2)
    got = F.conv2d(x, pooled_conv_weight(w), b, stride=2, padding=1)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("hw", [(4, 4), (5, 7), (1, 3)])
def test_upsampled_conv_equals_upsample_then_conv(hw):
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(5, 3, 3, 1, 1).double()
    x = torch.randn(2, 5, *hw, dtype=torch.float64, requires_grad=True)
    ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    got = upsampled_conv(x, conv)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    (gr,) = torch.autograd.grad(ref, x, g)
    (gg,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(gg, gr, rtol=0, atol=1e-12)


@pytest.mark.parametrize("width,hw", [(0.125, (256, 256)), (0.25, (128, 192))])
def test_frozen_fused_forward_and_input_gradient_match_layer_by_layer(width, hw):
    net = _net(width)
    x = torch.randn(2, 3, *hw, dtype=torch.float64, requires_grad=True)
    ref = net.forward_logits(x)  # trainable: the layer-by-layer path
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert all("_ifqa_fused" not in m.__dict__ for m in net.modules())
    net.freeze()
    got = net.forward_logits(x)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    assert any("_ifqa_fused" in m.__dict__ for m in net.modules())  # the fused path ran
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-10)
    net.fused = False  # the switch restores the layer-by-layer path exactly
    torch.testing.assert_close(net.forward_logits(x), ref, rtol=0, atol=0)


def test_fp32_fused_within_tolerance():
    net = _net(0.25, torch.float32)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        ref = net.forward_logits(x)
        net.freeze()
        got = net.forward_logits(x)
    assert (got - ref).abs().max().item() < 1e-4


def test_cached_kernels_follow_new_weights():
    net = _net(0.125).freeze()
    other = _net(0.125, seed=5).freeze()
    x = torch.randn(1, 3, 256, 256, dtype=torch.float64)
    with torch.no_grad():
        net.forward_logits(x)  # fills the kernel cache
        net.load_state_dict(other.state_dict())  # in-place copies into the same storage
        got = net.forward_logits(x)
        other.fused = False
        ref = other.forward_logits(x)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_norm_act_saving_output_handles_zero_and_negative_gammas():
    # The fused backward rebuilds the normalised input from the output, dividing by gamma:
    # channels with gamma 0 (no gradient) or gamma < 0 must still give autograd's gradient.
    net = _net(0.125)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.InstanceNorm2d):
                m.weight[0] = 0.0
                m.weight[1::3] *= -1.0
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad(net.forward_logits(x), x, g)
    net.freeze()
    (g_got,) = torch.autograd.grad(net.forward_logits(x), x, g)
    assert torch.isfinite(g_got).all()
    torch.testing.assert_close(g_got, g_ref, rtol=0, atol=1e-10)


def test_fused_path_saves_fewer_activation_bytes():
    net = IFQACNN(0.25).freeze()
    x = torch.randn(2, 3, 256, 256, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}

    def saved_bytes() -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net.forward_logits(x)
        return sum(seen.values())

    net.fused = False
    plain = saved_bytes()
    net.fused = True
    fused = saved_bytes()
    assert fused < 0.5 * plain, (fused, plain)
