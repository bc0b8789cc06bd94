"""CUDA paths: device placement, mixed precision, compile. Skipped without a GPU."""

from __future__ import annotations

import copy

import pytest
import torch

from ifqa_loss import IFQALoss, IFQAMetric
from ifqa_loss.models import IFQACNN

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return IFQACNN()


def test_loss_on_cuda_matches_cpu(net):
    x = torch.rand(2, 3, 300, 200)
    cpu = IFQALoss(model=copy.deepcopy(net).cpu())(x)
    crit = IFQALoss(model=net).to("cuda")
    xc = x.cuda().requires_grad_(True)
    out = crit(xc)
    out.backward()
    assert out.device.type == "cuda"
    assert abs(out.item() - cpu.item()) < 1e-3
    assert xc.grad.abs().sum() > 0
    assert all(p.grad is None for p in crit.discriminator.parameters())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_metric_amp_close_to_fp32(net, amp):
    x = torch.rand(8, 3, 512, 512, device="cuda")
    ref = IFQAMetric(model=net, device="cuda")(x)
    fast = IFQAMetric(model=net, device="cuda", amp=amp)(x)
    assert fast.dtype == torch.float32
    assert (fast - ref).abs().max() < 0.01


def test_loss_under_autocast_and_compile(net):
    crit = IFQALoss(model=net, region_weights={"eyes": 2.0}).to("cuda")
    x = torch.rand(4, 3, 512, 512, device="cuda", requires_grad=True)
    ref = crit(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        amp = crit(x)
    assert abs(amp.item() - ref.item()) < 0.01
    compiled = torch.compile(crit)
    out = compiled(x)
    out.backward()
    assert abs(out.item() - ref.item()) < 1e-3
    assert torch.isfinite(x.grad).all()


def test_fused_path_matches_layer_by_layer_on_cuda():
    torch.manual_seed(0)
    plain = IFQACNN(0.25).cuda()
    fused = copy.deepcopy(plain).freeze()
    x = torch.rand(4, 3, 256, 256, device="cuda") * 2 - 1
    xr = x.clone().requires_grad_(True)
    ref = plain.forward_logits(xr)
    (g_ref,) = torch.autograd.grad(ref.sum(), xr)
    xf = x.clone().requires_grad_(True)
    got = fused.forward_logits(xf)
    (g_got,) = torch.autograd.grad(got.sum(), xf)
    assert (got - ref).abs().max().item() < 1e-3
    assert (g_got - g_ref).abs().max().item() < 1e-3 * g_ref.abs().max().item() + 1e-6
