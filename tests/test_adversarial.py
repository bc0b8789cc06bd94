"""IFQAAdversarialLoss: a discriminator that learns against the restorer, and its GAN term."""

from __future__ import annotations

import pytest
import torch

from ifqa_loss import IFQAAdversarialLoss, IFQALoss, IFQAMetric
from ifqa_loss.adversarial import DEFAULT_WARMUP, DEFAULT_WEIGHT, trainable_discriminator
from ifqa_loss.weights import load_discriminator, model_of


def _images(b: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g)


@pytest.fixture
def adv() -> IFQAAdversarialLoss:
    torch.manual_seed(0)
    return IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, warmup=0)


def test_warm_start_equals_the_bundled_model_and_is_trainable(adv):
    frozen = load_discriminator("ifqa-lite")
    x = _images(size=64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(adv.net.forward_logits(x), frozen.forward_logits(x), atol=1e-4)
    assert all(p.requires_grad for p in adv.net.parameters())
    assert adv.net.training and not adv.net.frozen
    # The frozen copy the package hands out elsewhere is untouched.
    assert all(not p.requires_grad for p in frozen.parameters())


def test_random_start_differs_from_the_warm_start():
    torch.manual_seed(0)
    net, _ = trainable_discriminator("ifqa-lite", pretrained=False)
    assert net.weights_origin == "random initialisation"
    warm = load_discriminator("ifqa-lite")
    x = _images(size=64) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(net.forward_logits(x), warm.forward_logits(x), atol=1e-2)
    with pytest.raises(ValueError, match="random weights"):
        trainable_discriminator("ifqa-lite", weights="x.pth", pretrained=False)


def test_restorer_term_reaches_the_output_not_the_discriminator(adv):
    x = _images().requires_grad_(True)
    loss = adv(x)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in adv.net.parameters())
    assert all(p.requires_grad for p in adv.net.parameters())  # restored after the call


def test_restorer_term_is_the_weighted_non_saturating_loss():
    adv = IFQAAdversarialLoss(
        "ifqa-lite", resize=False, region_weights=None, loss_weight=0.5, warmup=0
    )
    x = _images()
    expected = 0.5 * torch.nn.functional.softplus(-adv.logits(x)).mean()
    assert torch.allclose(adv(x), expected, atol=1e-6)
    assert IFQAAdversarialLoss("ifqa-lite").loss_weight == DEFAULT_WEIGHT


def test_the_term_is_zero_until_the_discriminator_has_taken_its_warmup_steps():
    assert IFQAAdversarialLoss("ifqa-lite").warmup == DEFAULT_WARMUP == 200
    adv = IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, warmup=2, feature_weight=1.0)
    x = _images().requires_grad_(True)
    for _ in range(2):
        assert adv.warming_up
        loss = adv(x, _images(seed=1))
        loss.backward()  # the restorer's backward runs as usual, with nothing from the term
        assert float(loss) == 0.0 and float(x.grad.abs().sum()) == 0.0
        adv.discriminator_step(_images(seed=1), x.detach())
    assert not adv.warming_up and adv.d_steps == 2
    loss = adv(x)
    assert float(loss) > 0.0
    expected = DEFAULT_WEIGHT * torch.nn.functional.softplus(-adv.logits(x)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    resumed = IFQAAdversarialLoss("ifqa-lite", resize=False, warmup=2)
    resumed.load_state_dict(adv.state_dict())
    assert not resumed.warming_up  # a resumed run does not warm up again


def test_the_discriminator_follows_the_restorers_learning_rate():
    restorer = torch.nn.Conv2d(3, 3, 1)
    opt_g = torch.optim.Adam(restorer.parameters(), lr=3e-4)
    adv = IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, lr=opt_g)
    assert adv.optimizer.param_groups[0]["lr"] == 3e-4
    torch.optim.lr_scheduler.StepLR(opt_g, step_size=1, gamma=0.5).step()  # 3e-4 -> 1.5e-4
    adv.discriminator_step(_images(seed=1), _images(seed=2))
    assert adv.optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-4)
    fixed = IFQAAdversarialLoss("ifqa-lite", lr=2e-4)
    assert fixed.lr_source is None and fixed.optimizer.param_groups[0]["lr"] == 2e-4


def test_region_weights_change_the_term_and_landmarks_are_used():
    x = _images(size=64)
    uniform = IFQAAdversarialLoss("ifqa-lite", resize=False, region_weights=None, warmup=0)(x)
    weighted = IFQAAdversarialLoss(
        "ifqa-lite", resize=False, region_weights={"eyes": 5.0}, warmup=0
    )
    assert not torch.isclose(weighted(x), uniform)
    lm = torch.tensor([[[20.0, 24.0], [44.0, 24.0], [32.0, 36.0], [24.0, 48.0], [40.0, 48.0]]])
    assert not torch.isclose(weighted(x[:1], landmarks=lm), weighted(x[:1]))


def test_feature_matching_needs_its_weight_and_is_zero_at_the_target():
    kw = {"resize": False, "region_weights": None, "warmup": 0}
    adv = IFQAAdversarialLoss("ifqa-lite", feature_weight=1.0, **kw)
    x = _images()
    base = IFQAAdversarialLoss("ifqa-lite", **kw)(x)
    assert torch.allclose(adv(x, x), base, atol=1e-6)  # identical features: matching adds 0
    assert adv(x, _images(seed=1)) > base + 1e-3


@pytest.mark.slow
def test_discriminator_step_learns_to_separate_real_from_fake():
    torch.manual_seed(0)
    adv = IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, r1_weight=0.0, lr=1e-3)
    real = _images(4, seed=1)
    fake = torch.full_like(real, 0.5) + 0.01 * _images(4, seed=2)
    first = adv.discriminator_step(real, fake)
    assert set(first) == {"d_loss", "acc_real", "acc_fake"}
    before = [p.detach().clone() for p in adv.net.parameters()]
    for _ in range(15):
        last = adv.discriminator_step(real, fake)
    assert last["d_loss"] < first["d_loss"]
    assert last["acc_real"] + last["acc_fake"] > first["acc_real"] + first["acc_fake"] + 0.2
    assert min(last["acc_real"], last["acc_fake"]) > 0.9
    assert any(not torch.equal(a, b) for a, b in zip(before, adv.net.parameters(), strict=True))


@pytest.mark.slow
def test_lazy_r1_runs_every_r1_every_steps():
    adv = IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, r1_weight=10.0, r1_every=3)
    real, fake = _images(seed=1), _images(seed=2)
    had_r1 = ["r1" in adv.discriminator_step(real, fake) for _ in range(6)]
    assert had_r1 == [True, False, False, True, False, False]
    assert "r1" not in IFQAAdversarialLoss("ifqa-lite", resize=False).discriminator_step(real, fake)
    assert adv.discriminator_step(real, fake, r1=False).keys() == {
        "d_loss",
        "acc_real",
        "acc_fake",
    }


def test_d_loss_for_an_external_optimizer():
    adv = IFQAAdversarialLoss("ifqa-lite", resize=False, r1_weight=0.0)
    loss = adv.d_loss(_images(seed=1), _images(seed=2))
    loss.backward()
    assert all(p.grad is not None for p in adv.net.parameters())
    assert set(adv.stats()) == {"d_loss", "acc_real", "acc_fake"}
    assert adv.d_steps == 1


def test_augmentation_is_differentiable_and_keeps_the_shape():
    adv = IFQAAdversarialLoss("ifqa-lite", augment=1.0)
    x = _images(size=64).requires_grad_(True)
    y = adv.augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.slow
def test_state_dict_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    a = IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, r1_weight=1.0, r1_every=2)
    real, fake = _images(seed=1), _images(seed=2)
    for _ in range(3):
        a.discriminator_step(real, fake)
    torch.save(a.state_dict(), tmp_path / "adv.pt")
    b = IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, r1_weight=1.0, r1_every=2)
    b.load_state_dict(torch.load(tmp_path / "adv.pt", weights_only=True))
    assert b.d_steps == 3
    sa, sb = a.discriminator_step(real, fake), b.discriminator_step(real, fake)
    assert sa == sb
    for p, q in zip(a.net.parameters(), b.net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_export_loads_in_the_metric_and_the_loss_as_its_model(tmp_path, adv):
    adv.discriminator_step(_images(seed=1), _images(seed=2))
    path = adv.export(tmp_path / "d.safetensors")
    assert model_of(path) == "ifqa-lite"
    metric = IFQAMetric(weights=path)  # model="auto" reads the architecture from the file
    assert metric.model_name == "ifqa-lite"
    x = _images(size=256)
    with torch.no_grad():
        expected = torch.sigmoid(adv.net.forward_logits(x * 2 - 1)).mean((1, 2, 3))
    assert torch.allclose(metric(x), expected, atol=1e-4)
    assert IFQALoss(weights=path).model_name == "ifqa-lite"


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="multiples of 32"):
        IFQAAdversarialLoss("ifqa-lite", resize=False)(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="r1_every"):
        IFQAAdversarialLoss("ifqa-lite", r1_every=0)
    with pytest.raises(ValueError, match="warmup must be an int >= 0"):
        IFQAAdversarialLoss("ifqa-lite", warmup=-1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        IFQAAdversarialLoss("ifqa-lite", lr=0.0)
    with pytest.raises(TypeError, match="restorer's torch.optim.Optimizer"):
        IFQAAdversarialLoss("ifqa-lite", lr="5e-4")
    with pytest.raises(ValueError, match="unknown regions"):
        IFQAAdversarialLoss("ifqa-lite", region_weights={"ear": 2.0})
    with pytest.raises(ValueError, match="does not match"):
        IFQAAdversarialLoss("ifqa-lite", feature_weight=1.0)(_images(), _images(1))


def test_unclamped_outputs_warn_once_and_still_train():
    adv = IFQAAdversarialLoss("ifqa-lite", resize=False)
    x = _images() * 1.4 - 0.2  # overshoot, as an unclamped restorer output
    with pytest.warns(UserWarning, match="warned once"):
        loss = adv(x)
    assert torch.isfinite(loss)


def _far_overshoot() -> torch.Tensor:
    """A mid-training restorer output the study met: 7% of values far outside [0, 1]."""
    x = _images(size=64)
    n = x.numel() * 7 // 100
    x.view(-1)[:n] = torch.tensor([-0.72, 1.79]).repeat(n)[:n]
    return x


def test_far_overshoot_after_the_first_check_warns_and_never_stops_training():
    adv = IFQAAdversarialLoss("ifqa-lite", resize=False)
    with pytest.raises(ValueError, match="another convention"):
        adv(_far_overshoot())  # before any call has passed: looks like a wrong convention
    adv(_images())  # checked again (the refused call did not count) and passes: settled
    adv.input_check.calls = 0  # make the next call a checked one (values every 100th call)
    with pytest.warns(UserWarning, match="outside the declared input_range"):
        loss = adv(_far_overshoot())
    assert torch.isfinite(loss)
    adv.input_check.calls = 0
    adv.discriminator_step(_images(), _far_overshoot())  # the discriminator's side too
    resumed = IFQAAdversarialLoss("ifqa-lite", resize=False)
    resumed.load_state_dict(adv.state_dict())  # a resumed run keeps the settled convention
    with pytest.warns(UserWarning, match="outside the declared input_range"):
        resumed(_far_overshoot())


def test_repr_is_one_line_naming_the_start_and_weights():
    text = repr(IFQAAdversarialLoss("ifqa-lite", pretrained=False, loss_weight=0.03))
    assert "\n" not in text
    assert "ifqa-lite" in text and "random initialisation" in text and "0.03" in text


@pytest.mark.slow
def test_the_plain_pytorch_example_trains_and_exports(tmp_path, monkeypatch, capsys):
    import runpy
    from pathlib import Path

    pytest.importorskip("skimage", reason="the example's face needs scikit-image")
    example = Path(__file__).resolve().parent.parent / "examples" / "adversarial_restorer.py"
    out = tmp_path / "d.safetensors"
    monkeypatch.setattr("sys.argv", [str(example), "--steps", "2", "--export", str(out)])
    runpy.run_path(str(example), run_name="__main__")
    assert capsys.readouterr().out.count("D accuracy on fakes") == 2
    assert IFQAMetric(weights=out).model_name == model_of(out)
