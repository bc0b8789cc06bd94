"""``adaptive_gan_weight``: the GAN term's weight from gradient norms at the last layer."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ifqa_loss import adaptive_gan_weight


def _setup(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    critic = nn.Conv2d(3, 1, 3, padding=1)
    x, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out = net(x)
    return net, out, F.l1_loss(out, gt), F.softplus(-critic(out)).mean()


def _norm(loss, p):
    return torch.autograd.grad(loss, p, retain_graph=True)[0].norm()


def test_weight_is_the_scaled_ratio_of_gradient_norms_and_sets_their_balance():
    net, _, rec, gan = _setup()
    last = net[2].weight
    w = adaptive_gan_weight(rec, gan, last, scale=3.0)
    expected = 3.0 * _norm(rec, last) / (_norm(gan, last) + 1e-4)
    assert torch.allclose(w, expected)
    assert not w.requires_grad
    # the weighted GAN gradient at the last layer is scale x the reconstruction's
    assert torch.allclose(_norm(w * gan, last), 3.0 * _norm(rec, last), rtol=1e-3)
    (rec + w * gan).backward()  # the graphs were kept for the caller's backward
    assert last.grad is not None and torch.isfinite(last.grad).all()


def test_weight_is_clamped_and_a_non_finite_ratio_sits_the_step_out():
    net, _, rec, gan = _setup(1)
    last = net[2].weight
    assert adaptive_gan_weight(rec, gan, last, scale=1e9, max_weight=5.0).item() == 5.0
    bad = gan * float("nan")
    assert adaptive_gan_weight(rec, bad, last, scale=1.0).item() == 0.0


def test_bad_arguments_are_refused_with_what_is_accepted():
    net, out, rec, gan = _setup(2)
    last = net[2].weight
    with pytest.raises(ValueError, match="scale and max_weight must be > 0"):
        adaptive_gan_weight(rec, gan, last, scale=0.0)
    with pytest.raises(ValueError, match="0-dim loss"):
        adaptive_gan_weight(out, gan, last, scale=1.0)
    with pytest.raises(ValueError, match="no gradient"):
        adaptive_gan_weight(rec.detach(), gan, last, scale=1.0)
    with pytest.raises(ValueError, match="requires grad"):
        adaptive_gan_weight(rec, gan, last.detach(), scale=1.0)
    other = nn.Conv2d(3, 3, 1).weight
    with pytest.raises(ValueError, match="does not depend on last_layer"):
        adaptive_gan_weight(rec, gan, other, scale=1.0)
