"""Degenerate and hostile inputs: decompression bombs, the pixel limit, near-constant images
(files and tensors), the no-face check. See docs/robustness.md."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ifqa_loss import IFQALoss, IFQAMetric
from ifqa_loss.files.flags import (
    NEAR_CONSTANT,
    NEAR_CONSTANT_STD,
    NO_FACE,
    flag_summary,
    luminance_std,
    near_constant,
)
from ifqa_loss.files.heatmap import colorize
from ifqa_loss.loss import FORMS
from ifqa_loss.preprocess import (
    DEFAULT_MAX_PIXELS,
    OPENCV_LIMIT_ENV,
    header_size,
    read_image_bgr,
)

REPO = Path(__file__).resolve().parent.parent


def png_chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, tag, data, CRC."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_ihdr(width: int, height: int, colour_type: int = 0) -> bytes:
    """The PNG signature and an 8-bit IHDR (colour type 0: gray, 2: RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)


def write_png_bomb(path: Path, width: int, height: int) -> Path:
    """A black 8-bit gray PNG of ``width x height``, compressed row by row (the raw image is
    never in memory): 12000 x 12000 is about 140 kB on disk and 432 MB as BGR."""
    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0, then black pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(png_ihdr(width, height) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    return path


@pytest.fixture
def imread_calls(monkeypatch) -> list[str]:
    """The paths ``cv2.imread`` decodes during the test (it still decodes them)."""
    calls: list[str] = []
    real = cv2.imread

    def spy(path, *args):
        calls.append(os.fspath(path))
        return real(path, *args)

    monkeypatch.setattr(cv2, "imread", spy)
    return calls


@pytest.fixture
def metric(tiny_cnn) -> IFQAMetric:
    return IFQAMetric(model=tiny_cnn, device="cpu", batch_size=4)


# -- hostile files ------------------------------------------------------------------------


def test_bombs_are_refused_before_decoding(tmp_path, metric, imread_calls):
    bomb = write_png_bomb(tmp_path / "bomb.png", 12000, 12000)
    assert bomb.stat().st_size < 200_000
    claim = tmp_path / "claim.png"  # a header alone, claiming 10^10 pixels
    claim.write_bytes(png_ihdr(100_000, 100_000, 2) + png_chunk(b"IEND", b""))
    face = tmp_path / "ok.png"
    cv2.imwrite(str(face), np.random.default_rng(0).integers(0, 256, (40, 30, 3), np.uint8))

    recs = metric.score_files([bomb, claim, face])

    for rec, dims in zip(recs[:2], ("12000 x 12000 = 144,000,000", "10,000,000,000"), strict=True):
        assert rec["score"] is None
        assert rec["error"].startswith(f"ValueError: cannot decode {rec['path']}: ")
        assert f"{dims} pixels, above the limit of 100,000,000 (raise it" in rec["error"]
    assert recs[2]["error"] is None and 0 <= recs[2]["score"] <= 1
    assert imread_calls == [str(face)]  # the bombs were never handed to the decoder


def test_max_pixels_is_the_limit(tmp_path, metric, imread_calls):
    path = tmp_path / "img.jpg"
    cv2.imwrite(str(path), np.full((200, 300, 3), 90, np.uint8))
    assert header_size(path) == (300, 200)
    (small,) = metric.score_files([path], max_pixels=59_999)
    assert "300 x 200 = 60,000 pixels, above the limit of 59,999 " in small["error"]
    assert imread_calls == []
    (exact,) = metric.score_files([path], max_pixels=60_000)
    assert exact["error"] is None and exact["score"] is not None
    with pytest.raises(ValueError, match="max_pixels must be >= 1"):
        metric.score_files([path], max_pixels=0)
    with pytest.raises(TypeError, match="max_pixels must be an int"):
        metric.score_files([path], max_pixels="1e6")


def test_unknown_header_is_decoded_by_opencv_then_checked(tmp_path):
    path = tmp_path / "radiance.hdr"  # a format OpenCV reads and Pillow does not
    assert cv2.imwrite(str(path), np.full((48, 64, 3), 0.5, np.float32))
    assert header_size(path) is None
    assert read_image_bgr(path).shape == (48, 64, 3)
    with pytest.raises(ValueError, match="it decoded to 64 x 48 = 3,072 pixels, above the"):
        read_image_bgr(path, max_pixels=1000)


@pytest.mark.slow
def test_opencv_limit_is_lowered_for_the_process(tmp_path):
    """Where ifqa-loss is imported before ``cv2`` (``ifqa score``), ``cv2.imread`` alone
    refuses a bomb too (OpenCV's own default limit, 2^30 pixels, would decode it)."""
    bomb = write_png_bomb(tmp_path / "bomb.png", 12000, 12000)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((20, 20, 3), np.uint8))
    code = (
        "import sys; from ifqa_loss.preprocess import read_image_bgr; import cv2\n"
        "read_image_bgr(sys.argv[1])\n"
        "try:\n    print('decoded' if cv2.imread(sys.argv[2]) is not None else 'refused')\n"
        "except cv2.error:\n    print('refused')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != OPENCV_LIMIT_ENV}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", code, str(small), str(bomb)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "refused"
    assert DEFAULT_MAX_PIXELS < 12000 * 12000 < 2**30


# -- near-constant flag -------------------------------------------------------------------


def _noise_image(std_levels: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 128 + rng.normal(0, std_levels, (64, 64, 1)).repeat(3, 2)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def test_luminance_std_is_bt601_over_every_pixel():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (70, 50, 3), np.uint8)
    ref = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).std()
    assert luminance_std(rgb) == pytest.approx(ref, rel=1e-6)
    assert luminance_std(rgb[..., 0]) == pytest.approx(rgb[..., 0].std(), rel=1e-6)
    # a one-pixel checkerboard: no grid sampling can see it as flat
    board = np.zeros((3000, 3000, 3), np.uint8)
    board[::2, ::2] = board[1::2, 1::2] = 255
    assert luminance_std(board) == pytest.approx(127.5, abs=0.01)


def test_near_constant_threshold_on_tensors():
    x = torch.stack(
        [
            torch.zeros(3, 32, 32),
            torch.full((3, 32, 32), 0.5),
            torch.ones(3, 32, 32),
            0.5 + 1e-3 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0)),
            torch.from_numpy(_noise_image(1.0)).permute(2, 0, 1)[:, :32, :32] / 255,
            torch.from_numpy(_noise_image(4.0)).permute(2, 0, 1)[:, :32, :32] / 255,
        ]
    )
    assert near_constant(x).tolist() == [True] * 5 + [False]
    assert near_constant(x * 2 - 1, (-1.0, 1.0)).tolist() == near_constant(x).tolist()
    # the tensor rule and the file rule agree
    for std in (1.0, 4.0):
        img = _noise_image(std)
        t = torch.from_numpy(img).permute(2, 0, 1)[None] / 255
        assert bool(near_constant(t)) == (luminance_std(img) < NEAR_CONSTANT_STD)


def test_score_files_flags_near_constant(tmp_path, metric):
    paths = {
        "black.png": np.zeros((64, 64, 3), np.uint8),
        "grey.jpg": _noise_image(0.8),
        "noise.png": _noise_image(30.0),
    }
    for name, img in paths.items():
        cv2.imwrite(str(tmp_path / name), img)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n")
    files = [tmp_path / n for n in (*paths, "broken.png")]
    recs = metric.score_files(files)
    assert [r["flag"] for r in recs] == [NEAR_CONSTANT, NEAR_CONSTANT, None, None]
    assert all(r["score"] is not None for r in recs[:3]) and recs[3]["error"]
    assert flag_summary(recs) == ["2 of 3 inputs are near-constant: their scores mean nothing"]


def test_check_face_flags_crops_without_a_face(tmp_path, metric, faces_dir):
    pytest.importorskip("dlib")
    from ifqa_loss.align import require

    try:
        require()
    except ImportError as e:
        pytest.skip(str(e))
    crops = sorted((faces_dir / "codeformer" / "cropped_faces").glob("*.png"))[:2]
    if len(crops) < 2:
        pytest.skip(f"no face crops under {faces_dir}/codeformer/cropped_faces")
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8))
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), np.zeros((256, 256, 3), np.uint8))
    recs = metric.score_files([*crops, noise, black], check_face=True)
    assert [r["flag"] for r in recs] == [None, None, NO_FACE, NEAR_CONSTANT]
    assert [r["flag"] for r in metric.score_files([noise])] == [None]  # opt-in


# -- tensors ------------------------------------------------------------------------------


def _flat_batch() -> torch.Tensor:
    """(4, 3, 48, 40): black, mid-grey, white, mid-grey with noise of std 0.001."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([0.0, 0.5, 1.0, 0.5]).view(4, 1, 1, 1).expand(4, 3, 48, 40)
    noise = torch.zeros(4, 3, 48, 40)
    noise[3] = 1e-3 * torch.randn(3, 48, 40, generator=g)
    return (base + noise).contiguous()


@pytest.mark.parametrize("model", ["ifqa-lite", "ifqa-judge"])
def test_metric_on_flat_batches_is_finite(model):
    metric = IFQAMetric(model=model, device="cpu")
    x = _flat_batch()
    maps = metric.maps(x)
    scores = maps.mean((1, 2, 3))
    assert torch.isfinite(maps).all() and ((maps >= 0) & (maps <= 1)).all()
    assert torch.allclose(metric(x), scores)
    # the same images in the other convention score the same (normalisation path)
    other = IFQAMetric(model=metric.discriminator, device="cpu", input_range=(-1, 1))
    assert torch.allclose(other(x * 2 - 1), scores, atol=1e-5)
    lm = torch.tensor([[14.0, 18], [26, 18], [20, 26], [15, 34], [25, 34]]).expand(4, 5, 2)
    for reg in (metric.region_scores(x), metric.region_scores(x, lm)):
        assert all(torch.isfinite(v).all() for v in reg.values())
    for m in maps:
        assert colorize(m).shape == (*m.shape[-2:], 3)
    assert near_constant(x).all()  # how a caller tells these scores apart


@pytest.mark.parametrize("model", ["ifqa-lite", "ifqa-judge"])
@pytest.mark.slow
def test_loss_on_flat_batches_is_finite(model):
    x = _flat_batch()
    score = IFQAMetric(model=model, device="cpu", face_gate=False)(x)  # the loss has no gate
    for form in FORMS:
        loss = IFQALoss(model=model, form=form, reduction="none")
        targets = (x, x.roll(1, 0)) if form in ("features", "map") else (x,)
        for target in targets:  # itself, and another flat image
            pred = x.clone().requires_grad_()
            value = loss(pred, target)
            value.sum().backward()
            assert torch.isfinite(value).all() and torch.isfinite(pred.grad).all(), form
            if form == "one_minus":
                assert torch.allclose(value, 1 - score, atol=1e-5)
            elif form in ("features", "map") and target is x:
                assert torch.allclose(value, torch.zeros(4), atol=1e-6), form
            else:
                assert (value > 0).all(), form


# -- the command line ---------------------------------------------------------------------


def test_score_command_flags_and_limit(tmp_path, capsys):
    import csv
    import json

    from ifqa_loss.cli import EXIT_SOME_FAILED, main

    cv2.imwrite(str(tmp_path / "a_black.png"), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b_noise.png"), _noise_image(30.0))
    cv2.imwrite(str(tmp_path / "c_large.png"), _noise_image(30.0).repeat(2, 0).repeat(2, 1))
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    args = ["score", str(tmp_path), "--model", "ifqa-lite", "--device", "cpu", "--workers", "0"]
    args += ["--max-pixels", "1e4", "--csv", str(out_csv), "--json", str(out_json)]
    assert main(args) == EXIT_SOME_FAILED  # the large image is a failed file
    stdout = capsys.readouterr().out
    assert "a_black.png\t0." in stdout and "\tnear_constant\n" in stdout
    assert "# 1 of 2 inputs are near-constant: their scores mean nothing" in stdout
    # the bundled model's face gate calls the noise image no face
    assert "# 1 of 2 inputs show no face: their scores mean nothing" in stdout
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["path", "score", "error", "flag"]
    assert [r["flag"] for r in rows] == ["near_constant", "no_face", ""]
    assert "128 x 128 = 16,384 pixels, above the limit of 10,000 " in rows[2]["error"]
    doc = json.loads(out_json.read_text())
    assert doc["summary"]["flagged"] == {NEAR_CONSTANT: 1, NO_FACE: 1}
    assert [r["flag"] for r in doc["records"]] == [NEAR_CONSTANT, NO_FACE, None]
    assert doc["records"][1]["p_face"] < 0.5


def test_compare_counts_near_constant_outputs(tmp_path, metric):
    import csv

    from ifqa_loss.compare.comparison import compare

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        cv2.imwrite(str(d / "large.png"), _noise_image(30.0).repeat(2, 0).repeat(2, 1))
    for k in range(3):
        cv2.imwrite(str(a / f"{k}.png"), _noise_image(30.0, seed=k))
        flat = np.full((64, 64, 3), 40 * k, np.uint8)
        cv2.imwrite(str(b / f"{k}.png"), flat if k else _noise_image(30.0, seed=k))
    rep = tmp_path / "rep"
    s = compare([a, b], out=rep, metric=metric, bootstrap=0, quiet=True, max_pixels=5000)
    by = {r["method"]: r for r in s["ranking"]}
    assert by["a"]["near_constant"] == 0 and by["b"]["near_constant"] == 2
    assert s["meta"]["n_excluded"] == 1  # large.png: refused from its header in both
    large = next(f for f in s["faces"] if f["face"] == "large.png")
    assert "16,384 pixels, above the limit of 5,000" in large["methods"]["a"]["error"]
    rows = list(csv.DictReader((rep / "results.csv").open()))
    flags = {(r["method"], r["face"]): r["flag"] for r in rows}
    assert flags[("b", "1.png")] == flags[("b", "2.png")] == "near_constant"
    assert flags[("a", "1.png")] == flags[("b", "0.png")] == ""
    assert "<th>near-constant</th>" in (rep / "index.html").read_text()
