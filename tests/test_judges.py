"""Judges from other families (ifqa_loss.audit.judges): NIQE, BRISQUE and piq's measures.

Each judge must rank real faces above heavily degraded copies of them, NIQE must be basicsr's
own value, nothing may touch the network, and a missing package must say what to install.
"""

from __future__ import annotations

import json
import socket
import sys

import numpy as np
import pytest
import torch

from ifqa_loss.audit import judges as J
from ifqa_loss.faces.degrade import degrade

FACES = ("00000.png", "00004.png")  # FFHQ faces from the shared folder (gpen/ffhq-10)
HEAVY = (("blur", 2.5), ("noise", 25.0), ("jpeg", 10.0))


def _judge_or_skip(name: str) -> J.Judge:
    try:
        return J.get_judge(name)
    except ImportError as e:
        pytest.skip(f"judge {name} not installed: {e}")


@pytest.fixture(scope="module")
def ffhq(faces_dir) -> dict[int, torch.Tensor]:
    """Two clean FFHQ faces at 128 and 256 px, (2, 3, S, S) in [0, 1]."""
    from ifqa_loss.faces.images import load_face

    paths = [faces_dir / "gpen" / "ffhq-10" / f for f in FACES]
    return {s: torch.stack([load_face(p, s) for p in paths]) for s in (128, 256)}


def _degraded(clean: torch.Tensor, family: str, level: float) -> torch.Tensor:
    out = []
    for i, x in enumerate(clean):
        img = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
        out.append(torch.from_numpy(degrade(img, family, level, seed=i)).permute(2, 0, 1))
    return torch.stack(out)


@pytest.mark.parametrize("name", J.JUDGE_NAMES)
def test_clean_faces_judged_better_than_heavily_degraded(name, ffhq):
    judge = _judge_or_skip(name)
    sizes = (128, 256) if name == "niqe" else (128,)  # NIQE: both of its block sizes
    sign = 1.0 if judge.better == "higher" else -1.0
    for s in sizes:
        clean = ffhq[s]
        good = judge(clean, clean) * sign
        assert good.shape == (len(clean),) and good.dtype == torch.float64
        for family, level in HEAVY:
            bad = judge(_degraded(clean, family, level), clean) * sign
            assert (good > bad).all(), (s, family, good * sign, bad * sign)


def test_niqe_is_basicsrs_own_value(faces_dir):
    import cv2

    judge = _judge_or_skip("niqe")
    from basicsr.metrics.niqe import calculate_niqe

    bgr = cv2.imread(str(faces_dir / "gpen" / "ffhq-10" / FACES[0]), cv2.IMREAD_COLOR)
    bgr = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)
    want = calculate_niqe(bgr, 0, input_order="HWC", convert_to="y")
    rgb = torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255.0
    got = judge(rgb[None])
    assert got.item() == pytest.approx(want, abs=1e-9)
    assert 2.0 < want < 10.0  # a real face, not a degenerate value


def test_niqe_of_small_images_uses_half_blocks():
    from ifqa_loss.integrations.niqe import niqe_block

    assert [niqe_block(s) for s in (64, 128, 191, 192, 512)] == [32, 64, 94, 96, 96]
    with pytest.raises(ValueError, match="at least 64 px"):
        niqe_block(48)


def test_no_judge_touches_the_network(ffhq, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a judge opened a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(J, "_BUILT", {})  # build every judge again under the guard
    judges, _ = J.resolve("auto")
    clean = ffhq[128][:1]
    for j in judges:
        assert torch.isfinite(j(clean, clean)).all(), j.name


@pytest.mark.parametrize(
    "name, blocked, message",
    [
        ("niqe", "basicsr.metrics.niqe", "NIQE needs basicsr: pip install"),
        ("brisque", "brisque", "BRISQUE needs brisque: pip install"),
        ("ms_ssim", "piq", "MS-SSIM needs piq: pip install"),
        ("vif", "piq", "VIF needs piq: pip install"),
    ],
)
def test_missing_package_says_what_to_install(name, blocked, message, monkeypatch):
    monkeypatch.setitem(sys.modules, blocked, None)  # the import now fails
    monkeypatch.setattr(J, "_BUILT", {})
    with pytest.raises(ImportError, match=message) as e:
        J.get_judge(name)
    assert "ifqa-loss[judges]" in str(e.value)
    judges, notes = J.resolve("auto")
    assert name not in [j.name for j in judges]
    assert any(name in n and "ifqa-loss[judges]" in n for n in notes), notes


def test_names_groups_and_bad_input():
    assert J.expand("NIQE, piq,gmsd") == ["niqe", "ms_ssim", "gmsd", "haarpsi", "vif"]
    assert J.resolve("none") == ([], [])
    with pytest.raises(ValueError, match="unknown judge 'lpips'.*niqe, brisque"):
        J.expand("niqe,lpips")
    judge = _judge_or_skip("gmsd")
    x = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="GMSD compares with the clean face"):
        judge(x)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\).*\(2, 64, 64\)"):
        judge(x[:, 0], x)
    with pytest.raises(ValueError, match="must have the same shape"):
        judge(x, x[:1])


def test_audit_rows_and_table_carry_the_judges(ffhq):
    from ifqa_loss.audit.measures import measure, summarise
    from ifqa_loss.audit.report import _judge_lines

    judges = [_judge_or_skip("niqe"), _judge_or_skip("gmsd")]
    clean = ffhq[128]
    blurred = _degraded(clean, "blur", 2.5)
    own = lambda x: x.mean((1, 2, 3))  # noqa: E731  (a stand-in for the loss's own score)
    m = {k: measure(v, clean, own, None, judges=judges) for k, v in [("c", clean), ("b", blurred)]}
    row = summarise(m["b"], m["c"], m["c"])  # before: blurred, after: clean
    assert row["niqe_before"] > row["niqe_after"] == row["niqe_clean"]
    assert row["gmsd_before"] > row["gmsd_after"] == 0.0
    lines = _judge_lines([{"setting": "A", "degradation": "blur", **row}])
    assert "NIQE (lower)" in lines[2] and "GMSD (lower)" in lines[2]
    assert f"{row['niqe_before']:.2f}->{row['niqe_after']:.2f}" in lines[4]


@pytest.mark.slow
def test_audit_command_records_judges_and_refuses_missing_ones(tmp_path, faces_dir, capsys):
    import cv2

    from ifqa_loss.cli import main

    _judge_or_skip("gmsd")
    folder = tmp_path / "faces"
    folder.mkdir()
    bgr = cv2.imread(str(faces_dir / "gpen" / "ffhq-10" / FACES[0]), cv2.IMREAD_COLOR)
    cv2.imwrite(str(folder / "a.png"), cv2.resize(bgr, (64, 64), interpolation=cv2.INTER_AREA))
    argv = ["audit", str(folder), "--settings", "A", "--size", "64", "--steps", "1"]
    argv += ["--model", "ifqa-lite", "--judge", "none", "--no-progress"]
    assert main([*argv, "--judges", "gmsd", "--out", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "audit.json").read_text())
    assert doc["meta"]["judges"]["gmsd"]["better"] == "lower"
    assert "gmsd_before" in doc["rows"][-1] and len(doc["cases"]["A"]["gmsd"]) == 1
    assert "GMSD (lower)" in capsys.readouterr().out
    assert main([*argv, "--judges", "gmsd,lpips", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown judge 'lpips'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
