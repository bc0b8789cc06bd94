"""Hardening options of the trainer: adversarial fakes, the R1 penalty, model.init."""

from __future__ import annotations

import re

import pytest
import torch
from test_train import tiny_config, tiny_faces

from ifqa_loss.models.cnn import IFQACNN
from ifqa_loss.regions import weighted_mean
from ifqa_loss.train.config import config_from_dict
from ifqa_loss.train.hardening import (
    AttackBuffer,
    adversarial_fakes,
    gradient_alignment_loss,
    input_gradient_penalty,
    pgd_slots,
)
from ifqa_loss.train.trainer import (
    SimulatedCrash,
    export_discriminator,
    init_weights,
    load_checkpoint,
    train,
)


class _Linear(torch.nn.Module):
    """logits = a * mean over channels of x: every score gradient is known in closed form."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x.mean(1, keepdim=True)


def test_adversarial_fakes_climb_the_score_within_the_step_budget():
    torch.manual_seed(0)
    d = IFQACNN(0.05, 64)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    w = torch.ones(3, 1, 64, 64)
    out = adversarial_fakes(d, x, w, steps=4, step_size=2.0)
    with torch.no_grad():
        before, after = (
            weighted_mean(d.forward_logits(x), w),
            weighted_mean(d.forward_logits(out), w),
        )
    assert (after > before).all()
    # each step moves a pixel by at most 2/255 of [0, 1] = 4/255 in the model's [-1, 1]
    assert (out - x).abs().max() <= 4 * 4 / 255 + 1e-6
    assert out.min() >= -1 and out.max() <= 1 and not out.requires_grad
    # the discriminator's parameters are left trainable and without gradients
    assert all(p.requires_grad and p.grad is None for p in d.parameters())
    assert adversarial_fakes(d, x[:0], w[:0], 4, 2.0).shape == (0, 3, 64, 64)


def test_adversarial_fakes_follow_the_sign_of_the_gradient():
    d = _Linear(-1.0)  # the score falls with brightness: the attack darkens every pixel
    x = torch.zeros(1, 3, 8, 8)
    out = adversarial_fakes(d, x, torch.ones(1, 1, 8, 8), steps=3, step_size=1.0)
    assert torch.allclose(out, torch.full_like(x, -3 * 2 / 255))


def test_input_gradient_penalty_matches_the_closed_form_and_trains_the_weights():
    # s(x) = a * mean over pixels and channels, so |grad s|^2 = a^2 / (3 H W): H W |.|^2 = a^2 / 3
    d = _Linear(3.0)
    r1 = input_gradient_penalty(d, torch.rand(2, 3, 16, 16), torch.ones(2, 1, 16, 16))
    assert r1.item() == pytest.approx(3.0, rel=1e-5)
    r1.backward()
    assert d.a.grad.item() == pytest.approx(2.0, rel=1e-5)  # d(a^2/3)/da at a = 3


def test_gradient_alignment_loss_measures_where_the_score_gradient_points():
    d = _Linear(2.0)  # grad s = a / (3 H W) everywhere: it points to "brighter"
    w = torch.ones(3, 1, 8, 8)
    fake = torch.full((3, 3, 8, 8), 0.5)
    real = torch.stack([fake[0] + 0.1, fake[1] - 0.1, fake[2]])  # brighter, darker, equal
    both = gradient_alignment_loss(d, fake[:2], real[:2], w[:2])
    assert both.item() == pytest.approx(1.0, abs=1e-5)  # (1 - 1) and (1 + 1), averaged
    assert gradient_alignment_loss(d, fake[:1], real[:1], w[:1]).item() == pytest.approx(
        0.0, abs=1e-5
    )
    # a pair with nothing to point to is left out; none left: 0
    assert gradient_alignment_loss(d, fake, real, w).item() == pytest.approx(1.0, abs=1e-5)
    assert gradient_alignment_loss(d, fake[2:], real[2:], w[2:]).item() == 0.0


def test_gradient_alignment_trains_the_discriminator_to_point_to_the_clean_face():
    torch.manual_seed(0)
    d = IFQACNN(0.05, 64)
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    fake = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1)
    w = torch.ones(2, 1, 64, 64)
    opt = torch.optim.Adam(d.parameters(), lr=1e-3)
    first = gradient_alignment_loss(d, fake, real, w)
    for _ in range(15):
        loss = gradient_alignment_loss(d, fake, real, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = gradient_alignment_loss(d, fake, real, w)
    # (slow at this size, but only a gradient that reaches the weights moves it at all)
    assert first.item() > 0.9 and last.item() < first.item() - 0.02


def test_pgd_slots_split_the_fake_slots():
    assert pgd_slots(8, 0.5, 0.5) == (2, 2)
    assert pgd_slots(8, 0.25, 0.0) == (2, 0)
    assert pgd_slots(8, 0.0, 0.5) == (0, 0)


def _hardened(**loss) -> dict:
    cfg = tiny_config(steps=4, crop_size=0).to_dict()
    cfg["run"]["batch_size"] = 4
    cfg["loss"].update(loss)
    return cfg


def _log_values(path, name: str) -> list[float]:
    pat = re.compile(rf"{name} ([0-9.e+-]+)")
    lines = [ln for ln in path.read_text().splitlines() if re.search(r"step \d+/\d+ \|", ln)]
    return [float(pat.search(ln).group(1)) for ln in lines]


def test_trainer_uses_adversarial_fakes_after_pgd_start(tmp_path):
    cfg = config_from_dict(_hardened(pgd_fraction=0.5, pgd_steps=2, pgd_start=0.5))
    train(cfg, tmp_path / "r", faces=tiny_faces(5), val_faces=[])
    # "pgd" is the discriminator's pixel accuracy on the attacked fakes: 0 while there are none
    acc = [
        float(m.group(1))
        for m in re.finditer(r"pgd ([0-9.]+)\)", (tmp_path / "r" / "train.log").read_text())
    ]
    assert len(acc) == 4 and acc[:2] == [0.0, 0.0] and all(a > 0 for a in acc[2:])


@pytest.mark.parametrize("term", ["r1", "align"])
@pytest.mark.slow
def test_trainer_adds_input_gradient_terms_every_n_steps(tmp_path, term):
    faces = tiny_faces(5)
    cfg = config_from_dict(_hardened(**{f"{term}_weight": 1e-3, f"{term}_every": 2}))
    train(cfg, tmp_path / "r1", faces=faces, val_faces=[])
    r1 = _log_values(tmp_path / "r1" / "train.log", term)
    assert len(r1) == 4 and r1[0] > 0 and r1[1] == 0 and r1[2] > 0 and r1[3] == 0
    # and it changes the training: other weights than without it
    train(config_from_dict(_hardened()), tmp_path / "plain", faces=faces, val_faces=[])
    a = load_checkpoint(tmp_path / "r1" / "ckpt" / "last.pt")["D"]
    b = load_checkpoint(tmp_path / "plain" / "ckpt" / "last.pt")["D"]
    assert not torch.equal(a["encoder64.conv1.weight"], b["encoder64.conv1.weight"])


def test_model_init_starts_from_the_given_weights(tmp_path):
    src = IFQACNN(0.05, 96)
    torch.nn.init.normal_(src.encoder64.conv1.weight)  # unlike any fresh initialisation
    path = export_discriminator(src, tmp_path / "start.safetensors")
    d = IFQACNN(0.05, 96)
    init_weights(d, str(path))
    assert torch.equal(d.encoder64.conv1.weight, src.encoder64.conv1.weight)
    # through the trainer: 0 steps export the starting weights unchanged
    cfg = _hardened()
    cfg["model"]["init"] = str(path)
    cfg["run"]["steps"] = 0
    train(config_from_dict(cfg), tmp_path / "r", faces=tiny_faces(3), val_faces=[])
    out = IFQACNN(0.05, 96)
    init_weights(out, str(tmp_path / "r" / "discriminator.safetensors"))
    assert torch.equal(out.encoder64.conv1.weight, src.encoder64.conv1.weight)
    with pytest.raises(FileNotFoundError, match="not a registered model"):
        init_weights(d, str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize(
    "loss, match",
    [
        ({"pgd_fraction": 1.5}, "pgd_fraction"),
        ({"pgd_fraction": 0.5, "pgd_steps": 0}, "pgd_steps"),
        ({"pgd_start": 1.0}, "pgd_start"),
        ({"r1_weight": -1.0}, "r1_weight"),
        ({"r1_every": 0}, "r1_every"),
        ({"align_weight": -1.0}, "align_weight"),
        ({"pgd_buffer": -1}, "pgd_buffer"),
        ({"pgd_persist": 2.0}, "pgd_persist"),
    ],
)
def test_config_rejects_bad_hardening_settings(loss, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(_hardened(**loss))


def test_attack_buffer_continues_stored_attacks_and_keeps_pairs():
    buf = AttackBuffer(3)
    gen = torch.Generator().manual_seed(0)
    shape = torch.Size((3, 4, 4))
    assert buf.draw(2, 1.0, shape, gen).tolist() == [-1, -1]  # empty: all fresh
    real = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 4, 4)
    buf.put(torch.tensor([-1, -1]), real, -real)
    assert buf.count == 2 and buf.next == 2
    idx = buf.draw(2, 1.0, shape, gen)  # share 1: every slot continues a stored pair
    assert sorted(idx.tolist()) == [0, 1]
    assert torch.equal(buf.fake[idx], -buf.real[idx])  # pairs stay matched
    assert buf.draw(2, 0.0, shape, gen).tolist() == [-1, -1]  # share 0: all fresh
    assert buf.draw(2, 1.0, torch.Size((3, 8, 8)), gen).tolist() == [-1, -1]  # other shape
    buf.put(torch.tensor([-1, -1]), real + 5, real)  # the ring wraps: 3 places
    assert buf.count == 3 and buf.next == 1 and buf.real[0, 0, 0, 0] == 6
    other = AttackBuffer(3)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.fake, buf.fake) and (other.count, other.next) == (3, 1)


@pytest.mark.slow
def test_resume_is_exact_with_persistent_attacks(tmp_path):
    faces = tiny_faces(5)
    cfg = _hardened(pgd_fraction=0.5, pgd_steps=1, pgd_buffer=4, pgd_persist=0.5)
    cfg["run"]["steps"], cfg["run"]["ckpt_every"] = 4, 2
    train(config_from_dict(cfg), tmp_path / "full", faces=faces, val_faces=[])
    with pytest.raises(SimulatedCrash):
        train(config_from_dict(cfg), tmp_path / "c", faces=faces, val_faces=[], crash_at_step=3)
    train(config_from_dict(cfg), tmp_path / "c", faces=faces, val_faces=[], resume=True)
    a = load_checkpoint(tmp_path / "full" / "ckpt" / "last.pt")
    b = load_checkpoint(tmp_path / "c" / "ckpt" / "last.pt")
    assert a["pgd_buffer"]["count"] == 4
    assert torch.equal(a["pgd_buffer"]["fake"], b["pgd_buffer"]["fake"])
    assert all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])


def test_harden_config_keeps_judge_faces_and_held_out_faces_out():
    from test_train import faces_dir

    from ifqa_loss.faces.images import split_faces
    from ifqa_loss.train.config import load_config

    root = faces_dir()
    if root is None or not (root / "more").is_dir():
        pytest.skip("the shared faces (with more/) are not available: set IFQA_FACES_DIR")
    cfg, judge, lite = (load_config(n) for n in ("harden_cpu", "judge_cpu", "lite_cpu"))
    train_files, val_files = split_faces(root, cfg.data)
    judge_train, _ = split_faces(root, judge.data)
    lite_train, lite_val = split_faces(root, lite.data)
    assert set(val_files) == set(lite_val) and len(val_files) == 16
    assert not set(train_files) & set(judge_train)  # the audit's judge stays independent
    assert not set(train_files) & set(val_files)
    assert set(lite_train) < set(train_files) and len(train_files) > len(lite_train) + 40
    assert cfg.model.init == "ifqa-lite" and cfg.loss.pgd_fraction > 0
