"""``ifqa audit`` on constructed discriminators whose gaming behaviour is known in advance.

- a discriminator whose realness is local contrast (a sharpness proxy) is gamed by optimising
  against it: noise raises its score above the clean face's while PSNR falls;
- a discriminator whose realness is closeness to known clean images is not: optimising against
  it moves the image towards the clean face, so PSNR rises.

Both verdicts come from ``run_audit``, the code path of the ``ifqa audit`` command.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ifqa_loss import IFQALoss, IFQAMetric
from ifqa_loss.audit import AuditOptions, box_fidelity, make_cases, prepare_faces, run_audit
from ifqa_loss.models.base import Discriminator

S = 64


class ContrastD(Discriminator):
    """Realness = local contrast: logit = k * (5x5 local std of the gray image - t)."""

    def __init__(self, t: float = 0.08, k: float = 40.0) -> None:
        super().__init__()
        self.native_size = S
        self.t, self.k = t, k
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # a device for the holder

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(1, keepdim=True)
        mu = F.avg_pool2d(g, 5, 1, 2, count_include_pad=False)
        var = F.avg_pool2d(g * g, 5, 1, 2, count_include_pad=False) - mu * mu
        return self.k * (var.clamp_min(1e-8).sqrt() - self.t) + self.dummy


class ClosenessD(Discriminator):
    """Realness = closeness to the nearest of known clean images, per pixel."""

    def __init__(self, clean: torch.Tensor) -> None:
        super().__init__()
        self.native_size = S
        self.register_buffer("bank", clean * 2 - 1)  # the network's [-1, 1] input range
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[:, None] - self.bank[None]).abs().mean((2, 3, 4))  # (B, K)
        ref = self.bank[d.argmin(1)]
        return 4.0 - 20.0 * (x - ref).abs().mean(1, keepdim=True) + self.dummy


@pytest.fixture(scope="module")
def faces() -> list[torch.Tensor]:
    """Six different faces made from the astronaut sample (crops, flips, colour changes)."""
    from ifqa_loss.samples import astronaut_face

    base = astronaut_face(96)[0]
    out = []
    for i in range(6):
        f = base[:, i * 4 : i * 4 + 80, i * 3 : i * 3 + 80]
        f = f.flip(-1) if i % 2 else f
        out.append((f * (0.8 + 0.08 * i)).clamp(0, 1))
    return out


OPTS = dict(size=S, steps=30, lr=2 / 255, restorer_warmup=10, restorer_steps=6, restorer_batch=2)


def _audit(d: Discriminator, faces, train, judge=None, **kw):
    crit = IFQALoss(model=d)
    own = IFQAMetric(model=d, device="cpu")
    return run_audit(
        crit,
        faces,
        own=own,
        judge=judge,
        train_faces=train,
        options=AuditOptions(**{**OPTS, **kw}),
    )


def test_contrast_discriminator_is_flagged_as_gamed(faces):
    res = _audit(ContrastD(), faces[:4], faces[4:], settings="AB")
    pooled = {r["setting"]: r for r in res["rows"] if r["degradation"] == "all"}
    a = pooled["A"]
    assert a["psnr_change"] < -1.0, a
    assert a["realer_than_real"] > a["n"] / 2, a
    assert a["own_after"] > a["own_clean"], a
    assert res["verdicts"]["A"].startswith("GAMED"), res["verdicts"]


def test_closeness_discriminator_is_not_gamed(faces):
    clean = prepare_faces(faces, S)
    judge = IFQAMetric(model=ClosenessD(clean), device="cpu")
    res = _audit(ClosenessD(clean), faces[:4], faces[4:], judge=judge)
    pooled = {r["setting"]: r for r in res["rows"] if r["degradation"] == "all"}
    for s in ("A", "B"):
        assert pooled[s]["psnr_change"] > 0.0, pooled[s]
        assert pooled[s]["realer_than_real"] == 0, pooled[s]
        assert pooled[s]["judge_after"] > pooled[s]["judge_before"], pooled[s]
        assert res["verdicts"][s].startswith("ok"), res["verdicts"]
    assert not res["verdicts"]["C"].startswith("GAMED"), res["verdicts"]
    # one row per degradation that occurred, plus the pooled row, per setting
    assert {r["degradation"] for r in res["rows"]} == {"blur", "downup", "noise", "jpeg", "all"}
    assert set(res["images"]) == {"clean", "degraded", "A", "B", "C L1", "C L1+IFQA"}
    assert res["images"]["A"].shape == (4, 3, S, S)


def test_cases_rotate_degradations_or_take_all(faces):
    clean = prepare_faces(faces[:5], S)
    rot = make_cases(clean, AuditOptions(size=S))
    assert rot.degradation == ["blur", "downup", "noise", "jpeg", "blur"]
    every = make_cases(clean[:2], AuditOptions(size=S, all_degradations=True))
    assert every.face == [0, 0, 0, 0, 1, 1, 1, 1] and len(every.degraded) == 8
    assert not torch.equal(rot.degraded[0], rot.clean[0])


def test_box_fidelity_ignores_what_a_3x3_mean_removes():
    y = torch.rand(1, 3, 32, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None]) % 2 * 0.2 - 0.1
    assert box_fidelity(y + 0.1, y) == pytest.approx(0.1, abs=1e-5)
    inner = box_fidelity(y + checker, y)  # zero-mean 2x2 pattern: small after the box filter
    assert inner < 0.02


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(settings="AD"), "settings"),
        (dict(size=32), "size"),
        (dict(steps=0), "steps"),
        (dict(degradations=("blur", "fog")), "degradations"),
    ],
)
def test_bad_options_are_refused(bad, match, faces):
    with pytest.raises(ValueError, match=match):
        _audit(ContrastD(), faces[:1], faces[1:], **bad)


def test_setting_c_needs_training_faces(faces):
    with pytest.raises(ValueError, match="training faces"):
        _audit(ContrastD(), faces[:1], None, settings="C")
