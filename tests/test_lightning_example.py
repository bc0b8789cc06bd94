"""examples/lightning_gan.py trains both networks under Lightning and logs the IFQA metric."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "lightning_gan.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("lightning_gan", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _param_ids(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in opt.param_groups for p in group["params"]}


@pytest.mark.slow
def test_lightning_example_steps_both_networks_and_logs_the_metric(tmp_path):
    pytest.importorskip("lightning", reason="the example needs Lightning (the lightning extra)")
    pytest.importorskip("torchmetrics", reason="the validation metric needs torchmetrics")
    pytest.importorskip("skimage", reason="the sample face needs scikit-image")
    from ifqa_loss import IFQAMetric

    mod = _load_example()
    steps = 2
    argv = ["--steps", str(steps), "--size", "64", "--batch", "2", "--model", "ifqa-lite"]
    args = mod.parse_args([*argv, "--accelerator", "cpu", "--out", str(tmp_path)])
    torch.manual_seed(0)
    model = mod.GANRestorer(args.model, warmup=0)
    g0 = {k: v.clone() for k, v in model.restorer.state_dict().items()}
    d0 = {k: v.clone() for k, v in model.adv.net.state_dict().items()}
    trainer = mod.fit(model, args)

    changed = [k for k, v in model.restorer.state_dict().items() if not torch.equal(v, g0[k])]
    assert changed, "the restorer was not stepped"
    assert any(not torch.equal(v, d0[k]) for k, v in model.adv.net.state_dict().items()), (
        "the discriminator was not stepped"
    )
    assert model.adv.d_steps == steps  # one discriminator step per training step

    # The restorer's optimizer holds the restorer alone; the discriminator's holds it alone.
    opt_g, opt_d = trainer.optimizers
    d_ids = {id(p) for p in model.adv.parameters()}
    assert _param_ids(opt_g) == {id(p) for p in model.restorer.parameters()}
    assert _param_ids(opt_g).isdisjoint(d_ids) and _param_ids(opt_d) == d_ids
    assert opt_d.state and all(int(s["step"]) == steps for s in opt_d.state.values())
    assert not model.adv.optimizer.state  # adv's own optimizer is not the one stepped

    logged = trainer.callback_metrics
    for key in ("train/acc_real", "train/acc_fake", "train/d_loss", "train/l1", "train/gan"):
        assert key in logged, sorted(logged)
    assert 0.0 <= float(logged["train/acc_real"]) <= 1.0
    assert 0.0 <= float(logged["train/acc_fake"]) <= 1.0
    # val/ifqa is the torchmetrics object's epoch value: the mean IFQA of the restored
    # validation faces (Lightning computed it, then reset the object).
    score = float(logged["val/ifqa"])
    assert 0.0 <= score <= 1.0
    assert int(model.val_ifqa.count) == 0
    metric = IFQAMetric(model="ifqa-lite", device="cpu")
    with torch.no_grad():
        restored = [model.restorer(lq).clamp(0, 1) for lq, _ in trainer.val_dataloaders]
    assert score == pytest.approx(metric(torch.cat(restored)).mean().item(), abs=1e-5)
