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
from ifqa_loss.audit import (
    AuditOptions,
    box_fidelity,
    descent_direction,
    make_cases,
    prepare_faces,
    run_audit,
)
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


OPTS = dict(
    size=S,
    steps=30,
    lr=2 / 255,
    restorer_size=S,
    restorer_warmup=10,
    restorer_steps=6,
    restorer_batch=2,
)


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


def test_descent_direction_measures_whether_the_first_step_heads_for_the_clean_face():
    torch.manual_seed(0)
    clean = torch.rand(3, 3, 16, 16)
    degraded = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    degraded[2] = clean[2]  # nothing to restore: no value is counted

    def l1(x, c):
        return (x - c).abs().mean()

    def darken(x, c):  # minimising the mean brightness: every value goes down
        return x.mean()

    back = descent_direction(l1, degraded, clean, batch=2)
    assert torch.allclose(back["sign"][:2], torch.ones(2)) and back["sign"][2].isnan()
    assert (back["cos"][:2] > 0.7).all()
    down = descent_direction(darken, degraded, clean)
    d = (clean - degraded)[:2].flatten(1)
    counted = d.abs() >= 1 / 255
    expected = ((d < 0) & counted).sum(1) / counted.sum(1)
    assert torch.allclose(down["sign"][:2], expected.float())


def test_audit_reports_where_the_losses_first_step_goes(faces):
    clean = prepare_faces(faces, S)
    close = _audit(ClosenessD(clean), faces[:4], faces[4:], settings="A")
    contrast = _audit(ContrastD(), faces[:4], faces[4:], settings="A")
    a_close = next(r for r in close["rows"] if r["degradation"] == "all")
    a_contrast = next(r for r in contrast["rows"] if r["degradation"] == "all")
    # the loss that restores heads for the clean face; the gamed one does not
    assert a_close["direction_sign"] > 0.9 and a_close["direction_cos"] > 0.3, a_close
    assert a_contrast["direction_sign"] < a_close["direction_sign"] - 0.2, a_contrast
    assert len(close["cases"]["direction"]["sign"]) == 4
    from ifqa_loss.audit.report import format_table

    text = format_table(close)
    assert "descent direction at the degraded inputs" in text
    assert f"all {a_close['direction_cos']:+.3f} / {a_close['direction_sign'] * 100:.1f}%" in text


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


# --- the ifqa audit command ------------------------------------------------------------------


def _write_faces(folder, faces, size=64):
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(faces):
        img = (prepare_faces([f], size)[0].permute(1, 2, 0).numpy() * 255).round()
        cv2.imwrite(str(folder / f"face{i}.png"), img.astype(np.uint8)[:, :, ::-1])
    return folder


TINY = ["--size", "64", "--steps", "2", "--restorer-warmup", "1", "--restorer-steps", "1"]
TINY += ["--restorer-size", "64"]


def _reject_constant(token: str):
    raise ValueError(f"audit.json is not strict JSON: it holds {token}")


@pytest.mark.slow
def test_audit_command_writes_table_json_and_grid(tmp_path, faces, capsys):
    import json

    import cv2

    from ifqa_loss.cli import main

    test, train = (
        _write_faces(tmp_path / "test", faces[:2]),
        _write_faces(tmp_path / "tr", faces[2:4]),
    )
    out = tmp_path / "out"
    argv = ["audit", str(test), "--train-faces", str(train), "--model", "ifqa-lite"]
    rc = main([*argv, "--judge", "none", "--out", str(out), "--no-progress", *TINY])
    assert rc == 0
    text = capsys.readouterr().out
    for s in "ABC":
        assert f"verdict {s} (" in text
    doc = json.loads((out / "audit.json").read_text(), parse_constant=_reject_constant)
    assert doc["meta"]["model"] == "ifqa-lite" and doc["meta"]["judge"] is None
    assert [r["degradation"] for r in doc["rows"] if r["setting"] == "A"] == [
        "blur",
        "downup",
        "all",
    ]
    assert set(doc["verdicts"]) == {"A", "B", "C"}
    assert len(doc["cases"]["A"]["psnr"]) == 2
    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape == (24 + 2 * 160, 6 * 160, 3)  # 2 cases, 6 columns
    assert sorted(p.name for p in out.iterdir()) == ["audit.json", "grid.png"]


@pytest.mark.parametrize(
    "case", ["empty", "unreadable", "not a face crop", "overlap", "same judge"]
)
def test_audit_command_refuses_bad_input_and_writes_nothing(tmp_path, faces, capsys, case):
    from ifqa_loss.cli import main

    test, train = tmp_path / "test", _write_faces(tmp_path / "tr", faces[2:4])
    test.mkdir()
    judge = ["--judge", "none"]
    if case == "unreadable":
        _write_faces(test, faces[:1])
        (test / "broken.png").write_bytes(b"not an image")
        want = r"broken.png: unreadable"
    elif case == "not a face crop":
        import cv2
        import numpy as np

        cv2.imwrite(str(test / "wide.png"), np.zeros((64, 200, 3), np.uint8))
        want = r"wide.png: 200x64"
    elif case == "overlap":
        test, want = train, "also training faces"
    elif case == "same judge":
        _write_faces(test, faces[:1])
        judge, want = ["--judge", "ifqa-lite"], "the loss's own discriminator"
    else:
        want = "no face images in"
    out = tmp_path / "out"
    argv = ["audit", str(test), "--train-faces", str(train), "--model", "ifqa-lite", *judge]
    assert main([*argv, "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert want in err, err
    assert not out.exists()


@pytest.mark.slow
def test_audit_header_says_when_setting_c_did_not_run(tmp_path, faces, capsys):
    """With --settings A there is no restorer: the header says so instead of '0 faces'."""
    import json

    from ifqa_loss.cli import main

    test = _write_faces(tmp_path / "test", faces[:1])
    out = tmp_path / "out"
    argv = ["audit", str(test), "--settings", "A", "--model", "ifqa-lite", "--judge", "none"]
    assert main([*argv, "--out", str(out), "--no-progress", *TINY]) == 0
    text = capsys.readouterr().out
    assert "setting C not run" in text and "restorer training faces" not in text
    assert json.loads((out / "audit.json").read_text())["meta"]["train_faces"] is None


def test_audit_without_faces_names_the_options(tmp_path, capsys):
    """No FACES_DIR and no default faces: the message says which option to pass."""
    from ifqa_loss.cli import main

    argv = ["audit", "--data-root", str(tmp_path / "nowhere"), "--settings", "A"]
    assert main([*argv, "--out", str(tmp_path / "out"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no faces folder given: pass FACES_DIR" in err and "--data-root DIR" in err, err
    assert str(tmp_path / "nowhere") in err
    assert not (tmp_path / "out").exists()


def test_default_faces_root_is_found_from_any_folder(tmp_path, monkeypatch):
    """In a source checkout the packaged configs' relative data.root starts at the repository,
    not at the current folder (from which `ifqa audit` used to miss it)."""
    from pathlib import Path

    import ifqa_loss
    from ifqa_loss.train.config import FACES_ENV, load_config

    monkeypatch.delenv(FACES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    repo = Path(ifqa_loss.__file__).resolve().parents[1]
    cfg = load_config("lite_cpu")
    assert cfg.faces_root() == repo / cfg.data.root
    assert load_config("lite_cpu").faces_root(tmp_path / "x") == tmp_path / "x"  # the option wins
    monkeypatch.setenv(FACES_ENV, str(tmp_path / "env"))
    assert cfg.faces_root() == tmp_path / "env"


# --- the co-trained (adversarial) branch of setting C -----------------------------------------


@pytest.mark.slow
def test_setting_c_co_trains_the_discriminator_and_logs_its_accuracy(faces):
    from ifqa_loss import IFQAAdversarialLoss

    adv = IFQAAdversarialLoss("ifqa-lite", resize=False, augment=0.0, warmup=0)
    start = [p.detach().clone() for p in adv.net.parameters()]
    own = IFQAMetric(model=ContrastD(), device="cpu")
    opts = AuditOptions(**{**OPTS, "settings": "C", "ifqa_weight": 0.01})
    res = run_audit(adv, faces[:2], own=own, train_faces=faces[2:], options=opts)
    log = res["discriminator_log"]
    assert len(log) == OPTS["restorer_steps"]  # one discriminator step per restorer step
    assert all(0.0 <= r["acc_fake"] <= 1.0 and 0.0 <= r["acc_real"] <= 1.0 for r in log)
    pooled = next(r for r in res["rows"] if r["setting"] == "C" and r["degradation"] == "all")
    assert {"d_acc_fake_first", "d_acc_fake_rest", "d_acc_real_first"} <= set(pooled)
    moved = [not torch.equal(a, b) for a, b in zip(start, adv.net.parameters(), strict=True)]
    assert any(moved)
    from ifqa_loss.audit.report import format_table

    assert "co-trained discriminator, pixel accuracy" in format_table(res)


def test_a_co_trained_loss_is_refused_outside_setting_c(faces):
    from ifqa_loss import IFQAAdversarialLoss

    adv = IFQAAdversarialLoss("ifqa-lite", resize=False)
    own = IFQAMetric(model=ContrastD(), device="cpu")
    with pytest.raises(ValueError, match="setting C only"):
        run_audit(adv, faces[:1], own=own, options=AuditOptions(**{**OPTS, "settings": "AC"}))
