"""The pyiqa integration: create_metric / list_models names, scores equal to IFQAMetric's,
gradients as a loss, idempotent registration that never replaces pyiqa's own entries."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("pyiqa", reason='needs pyiqa: pip install "ifqa-loss[pyiqa]"')

import pyiqa
from pyiqa.default_model_configs import DEFAULT_CONFIGS
from pyiqa.utils.registry import ARCH_REGISTRY

import ifqa_loss.integrations.pyiqa as ifqa_pyiqa
from ifqa_loss import IFQAMetric
from ifqa_loss.samples import astronaut_face
from ifqa_loss.weights import ENV_VAR, find_weights

NAMES = ("ifqa", "ifqa++", "ifqa-lite")


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    """(4, 3, 256, 256) in [0, 1]: a face, mirrored, blurred and noisy, so scores differ."""
    face = astronaut_face(256)
    g = torch.Generator().manual_seed(0)
    blurred = F.avg_pool2d(face, 9, stride=1, padding=4, count_include_pad=False)
    noisy = (face + 0.15 * torch.randn(face.shape, generator=g)).clamp(0, 1)
    return torch.cat([face, face.flip(-1), blurred, noisy])


@pytest.fixture(scope="module")
def reference(faces) -> torch.Tensor:
    return IFQAMetric(model="ifqa-lite")(faces)


def test_scores_equal_the_metric(faces, reference):
    iqa = pyiqa.create_metric("ifqa-lite", device="cpu")
    scores = iqa(faces)
    assert scores.shape == (4,)
    assert not scores.requires_grad
    # Real faces score well above the gate's floor, so equality says something.
    assert reference.max() > 0.3 and (reference.max() - reference.min()) > 0.01
    assert (scores - reference).abs().max().item() <= 1e-5


def test_as_loss_gives_the_input_a_gradient(faces, reference):
    loss_fn = pyiqa.create_metric("ifqa-lite", device="cpu", as_loss=True)
    x = faces.clone().requires_grad_(True)
    loss = loss_fn(x)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(reference.mean().item(), abs=1e-5)
    (1 - loss).backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    scorer = loss_fn.net.scorer
    assert all(p.grad is None for p in scorer.discriminator.parameters())
    assert list(loss_fn.net.parameters()) == []  # nothing for an optimizer to train


def test_metric_properties_and_listing():
    iqa = pyiqa.create_metric("ifqa-lite", device="cpu")
    assert iqa.lower_better is False
    assert iqa.score_range == "0, 1"
    assert iqa.metric_mode == "NR"
    assert set(NAMES) <= set(pyiqa.list_models())
    assert set(NAMES) <= set(pyiqa.list_models(metric_mode="NR"))
    assert not set(NAMES) & set(pyiqa.list_models(metric_mode="FR"))


def test_moves_with_pyiqa(faces):
    """pyiqa calls .to(device) on the network; the discriminator and the face gate follow
    (shown with a dtype move, which takes the same path)."""
    iqa = pyiqa.create_metric("ifqa-lite", device=torch.device("cpu"))
    scorer = iqa.net.scorer
    assert scorer.face_gate is not None
    iqa.net.to(torch.float64)
    assert next(scorer.discriminator.parameters()).dtype == torch.float64
    assert next(scorer.face_gate.parameters()).dtype == torch.float64


def test_registration_is_idempotent():
    before = (list(pyiqa.list_models()), dict(DEFAULT_CONFIGS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ifqa_pyiqa.register() == []
        module = importlib.reload(ifqa_pyiqa)  # pyiqa's registry refuses a second plain entry
        importlib.import_module("ifqa_loss.integrations.pyiqa")
    assert (list(pyiqa.list_models()), dict(DEFAULT_CONFIGS)) == before
    assert [m for m in pyiqa.list_models() if "ifqa" in m] == list(NAMES)
    assert ARCH_REGISTRY.get(module.ARCH_NAME) is module.IFQALossArch  # not the stale class
    assert isinstance(pyiqa.create_metric("ifqa-lite", device="cpu").net, module.IFQALossArch)


def test_never_replaces_an_entry_pyiqa_ships(monkeypatch):
    theirs = {"metric_opts": {"type": "TheirIFQA"}, "metric_mode": "NR", "score_range": "0, 1"}
    monkeypatch.setitem(DEFAULT_CONFIGS, "ifqa", theirs)
    with pytest.warns(UserWarning, match="already has a metric named 'ifqa'"):
        assert ifqa_pyiqa.register() == []
    assert DEFAULT_CONFIGS["ifqa"] is theirs

    class TheirArch(torch.nn.Module):
        pass

    monkeypatch.setitem(ARCH_REGISTRY._obj_map, ifqa_pyiqa.ARCH_NAME, TheirArch)
    with pytest.warns(UserWarning, match="already has an arch named"):
        assert ifqa_pyiqa.register() == []
    assert ARCH_REGISTRY.get(ifqa_pyiqa.ARCH_NAME) is TheirArch


def test_weights_go_to_the_package_loader(faces, reference, tmp_path):
    path = find_weights("ifqa-lite")
    for key in ("weights", "pretrained_model_path"):
        iqa = pyiqa.create_metric("ifqa-lite", device="cpu", **{key: str(path)})
        assert iqa.net.scorer.weights_origin == str(path)
        assert (iqa(faces) - reference).abs().max().item() <= 1e-5
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        pyiqa.create_metric("ifqa-lite", device="cpu", pretrained_model_path=str(missing))
    with pytest.raises(ValueError, match="not both"):
        pyiqa.create_metric("ifqa-lite", weights=str(path), pretrained_model_path=str(path))


def test_ifqa_without_weights_raises_the_package_error(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no weights found for model 'ifqa'") as e:
        pyiqa.create_metric("ifqa", device="cpu")
    assert "IFQA_Metric.pth" in str(e.value)


@pytest.mark.slow
def test_entry_point_registers_without_an_import(tmp_path):
    """pyiqa runs the declared ``pyiqa.archs`` entry point on its first registry search."""
    code = (
        "import sys, torch, pyiqa\n"
        "from pyiqa.utils.registry import ARCH_REGISTRY\n"
        "assert 'ifqa-lite' not in pyiqa.list_models()\n"
        "assert 'IFQALossArch' in ARCH_REGISTRY\n"
        "assert 'ifqa_loss.integrations.pyiqa' in sys.modules\n"
        "print(pyiqa.create_metric('ifqa-lite', device='cpu')(torch.rand(1, 3, 64, 64)).shape)\n"
    )
    # Run elsewhere than the checkout: a stale ifqa_loss.egg-info there would hide the
    # installed metadata (reinstall with pip install -e . after changing entry points).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch.Size([1])" in out.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_the_device_pyiqa_is_given(faces, reference):
    iqa = pyiqa.create_metric("ifqa-lite", device="cuda")
    assert iqa.net.scorer.device.type == "cuda"
    assert iqa.net.scorer.face_gate is not None
    assert next(iqa.net.scorer.face_gate.parameters()).is_cuda
    scores = iqa(faces)  # a CPU batch: pyiqa moves it
    assert scores.is_cuda
    assert (scores.cpu() - reference).abs().max().item() <= 1e-3  # TF32 convolutions
