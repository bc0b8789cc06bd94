"""IFQAMetric: batching, maps, regions, file scoring (golden and real faces), model='auto'."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from conftest import BrightnessD

from ifqa_loss import IFQALoss, IFQAMetric, get_model_config, weights
from ifqa_loss.preprocess import official_file_tensor
from ifqa_loss.weights import ENV_VAR, save_safetensors

GOLDEN_FILE = "ifqa/docs/00021_Blurred.png"


@pytest.fixture
def metric(tiny_cnn):
    return IFQAMetric(model=tiny_cnn, device="cpu", batch_size=3)


def test_scores_and_maps(metric):
    x = torch.rand(7, 3, 90, 70, requires_grad=True)
    maps = metric.maps(x)
    scores = metric(x)
    assert maps.shape == (7, 1, 64, 64)
    assert scores.shape == (7,)
    assert ((maps >= 0) & (maps <= 1)).all()
    assert torch.allclose(scores, maps.mean((1, 2, 3)))
    assert not scores.requires_grad
    # chunking does not change results
    big = IFQAMetric(model=metric.discriminator, device="cpu", batch_size=64)
    assert torch.allclose(big(x), scores, atol=1e-6)
    # each image is scored independently of its batch mates
    assert torch.allclose(metric(x[2:3]), scores[2:3], atol=1e-6)


def test_higher_is_better_on_constructed_case():
    metric = IFQAMetric(model=BrightnessD(), device="cpu")
    good, bad = torch.full((1, 3, 64, 64), 0.9), torch.full((1, 3, 64, 64), 0.3)
    assert metric(good) > metric(bad)
    assert torch.allclose(IFQALoss(model=BrightnessD())(bad), 1 - metric(bad))


def test_region_scores(metric):
    d = BrightnessD()
    m = IFQAMetric(model=d, device="cpu")
    x = torch.ones(2, 3, 128, 128)
    x[1, :, 55:70, 30:60] = 0  # darken (make fake) image-left eye of the second face
    r = m.region_scores(x)
    assert set(r) == {"eyes", "nose", "mouth", "rest", "overall"}
    assert r["eyes"][1] < r["eyes"][0] - 0.1
    assert abs(r["mouth"][1] - r["mouth"][0]) < 0.02
    assert torch.allclose(r["overall"], m(x))
    # the same breakdown from landmarks of the image (template scaled to 128 px)
    from ifqa_loss.masks import template_landmarks

    r2 = m.region_scores(x, landmarks=template_landmarks(128, batch_size=2))
    assert torch.allclose(r2["eyes"], r["eyes"], atol=1e-4)


def test_amp_is_cuda_only(tiny_cnn):
    with pytest.raises(ValueError, match="only offered on CUDA"):
        IFQAMetric(model=tiny_cnn, device="cpu", amp="bf16")
    with pytest.raises(ValueError, match="amp must be"):
        IFQAMetric(model=tiny_cnn, device="cpu", amp="int8")


def test_compile_takes_torch_compile_arguments(tiny_cnn):
    """``compile=`` passes a mode or keyword arguments on; the scores stay the eager ones."""
    torch._dynamo.reset()
    x = torch.rand(2, 3, 64, 64)
    eager = IFQAMetric(model=tiny_cnn, device="cpu")(x)
    compiled = IFQAMetric(model=tiny_cnn, device="cpu", compile={"backend": "eager"})
    assert torch.allclose(compiled(x), eager, atol=1e-6)
    with pytest.raises(TypeError, match="compile must be a bool"):
        IFQAMetric(model=tiny_cnn, device="cpu", compile=1)


def test_score_files_records_errors(tmp_path, metric):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), rng.integers(0, 255, (80, 80, 3), dtype=np.uint8))
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), rng.integers(0, 255, (40, 40), dtype=np.uint8))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:60])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    paths = [good, corrupt, tmp_path / "missing.png", text, gray]
    recs = metric.score_files(paths, regions=True)
    assert [r["path"] for r in recs] == [str(p) for p in paths]
    assert recs[0]["error"] is None and 0 < recs[0]["score"] < 1
    assert recs[4]["error"] is None and 0 < recs[4]["score"] < 1
    for r in recs[1:4]:
        assert r["score"] is None and r["error"]
    assert "FileNotFoundError" in recs[2]["error"]
    assert "cannot decode" in recs[1]["error"]
    assert {"eyes", "nose", "mouth", "rest"} <= set(recs[0])
    # the file path is the official preprocessing followed by the network
    x = official_file_tensor(good, metric.config)[None]
    with torch.no_grad():
        assert abs(metric.discriminator(x).mean().item() - recs[0]["score"]) < 1e-6


@pytest.mark.parametrize("name", ["ifqa", pytest.param("ifqa++", marks=pytest.mark.slow)])
def test_golden_file_score(name, faces_dir, request):
    sd = request.getfixturevalue("golden_cnn_sd" if name == "ifqa" else "golden_vit_sd")
    expected = {"ifqa": 0.5968871, "ifqa++": 0.5221279}[name]
    m = IFQAMetric(model=name, weights=sd, device="cpu")
    (rec,) = m.score_files([faces_dir / GOLDEN_FILE])
    assert rec["error"] is None
    assert abs(rec["score"] - expected) < 1e-5


@pytest.mark.slow
def test_real_faces_end_to_end(faces_dir, cnn_ckpt):
    files = sorted((faces_dir / "gfpgan" / "cropped_faces").glob("*.png"))[:2]
    files += sorted((faces_dir / "gpen" / "ffhq-10").glob("*.png"))[:1]
    files += sorted((faces_dir / "codeformer" / "gray_faces").glob("*.png"))[:1]
    assert len(files) == 4, "expected shared face folders are missing"
    m = IFQAMetric(model="ifqa", weights=cnn_ckpt, device="cpu", batch_size=2)
    recs = m.score_files(files, regions=True)
    for r in recs:
        assert r["error"] is None, r
        assert 0 < r["score"] < 1
        assert all(0 <= r[k] <= 1 for k in ("eyes", "nose", "mouth", "rest"))
    # the tensor path on the decoded image agrees closely with the file path
    bgr = cv2.imread(str(files[0]))
    t = torch.from_numpy(bgr[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    assert abs(m(t).item() - recs[0]["score"]) < 0.02


def _isolate(tmp_path, monkeypatch, bundled: bool):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    bdir = tmp_path / "bundled"
    bdir.mkdir()
    monkeypatch.setattr(weights, "BUNDLED_DIR", bdir)
    if bundled:
        torch.manual_seed(0)
        net = get_model_config("ifqa-lite").build()
        save_safetensors(net.state_dict(), bdir / "ifqa-lite.safetensors")


def test_auto_falls_back_to_bundled_and_says_so(tmp_path, monkeypatch, caplog):
    _isolate(tmp_path, monkeypatch, bundled=True)
    monkeypatch.setattr(weights, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO, logger="ifqa_loss"):
        crit = IFQALoss()
        IFQAMetric(device="cpu")
    assert crit.model_name == "ifqa-lite"
    warned = [r for r in caplog.records if "using the bundled model 'ifqa-lite'" in r.message]
    assert [r.levelno for r in warned] == [logging.WARNING, logging.INFO]  # loud once
    assert crit.weights_origin.endswith("ifqa-lite.safetensors")


def test_auto_prefers_original(tmp_path, monkeypatch, cnn_ckpt):
    _isolate(tmp_path, monkeypatch, bundled=True)
    monkeypatch.setenv(ENV_VAR, str(cnn_ckpt))
    assert IFQAMetric(device="cpu").model_name == "ifqa"


def test_auto_with_nothing_found(tmp_path, monkeypatch):
    _isolate(tmp_path, monkeypatch, bundled=False)
    with pytest.raises(FileNotFoundError, match="neither the original ifqa weights nor a bundled"):
        IFQALoss()
