"""One voice across the public modules: names, defaults, devices, keywords, regions, weights."""

from __future__ import annotations

import inspect

import pytest
import torch

from ifqa_loss import (
    CheckpointError,
    IFQAAdversarialLoss,
    IFQALoss,
    IFQAMetric,
    ModelConfig,
    create_model,
    load_discriminator,
)
from ifqa_loss.masks import face_region_masks
from ifqa_loss.models import registry
from ifqa_loss.models.cnn import IFQACNN
from ifqa_loss.preprocess import InputCheck
from ifqa_loss.regions import RegionWeights
from ifqa_loss.weights import (
    ENV_VAR,
    export_discriminator,
    find_weights,
    model_of,
    save_safetensors,
)

MODULES = (IFQALoss, IFQAMetric, IFQAAdversarialLoss)
SHARED = ("model", "weights", "device", "input_range")


@pytest.mark.parametrize("cls", MODULES)
def test_shared_parameters_have_one_name_default_and_kind(cls):
    params = inspect.signature(cls.__init__).parameters
    got = {n: (params[n].default, params[n].kind) for n in SHARED}
    assert got == {
        "model": ("auto", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        "weights": (None, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        "device": (None, inspect.Parameter.KEYWORD_ONLY),
        "input_range": ((0.0, 1.0), inspect.Parameter.KEYWORD_ONLY),
    }


def test_the_two_losses_share_region_weights_and_checks():
    for name in ("region_weights", "check_inputs", "check_every"):
        a = inspect.signature(IFQALoss.__init__).parameters[name].default
        b = inspect.signature(IFQAAdversarialLoss.__init__).parameters[name].default
        assert a == b, name


def test_every_module_starts_on_the_cpu():
    """The one device rule: None is the CPU, as for any new nn.Module."""
    assert IFQAMetric("ifqa-lite").device.type == "cpu"
    assert IFQALoss("ifqa-lite").device.type == "cpu"
    assert next(IFQAAdversarialLoss("ifqa-lite").parameters()).device.type == "cpu"


def test_unknown_keywords_are_refused():
    crit = IFQALoss("ifqa-lite", region_weights={"eyes": 2.0})
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(TypeError, match="landmark"):
        crit(x, landmark=torch.zeros(1, 5, 2))  # a typo of landmarks=
    with pytest.raises(TypeError, match="bogus"):
        IFQAMetric("ifqa-lite", bogus=1)
    with pytest.raises(TypeError, match="landmark"):
        IFQAAdversarialLoss("ifqa-lite")(x, landmark=torch.zeros(1, 5, 2))


def test_region_weights_mean_the_same_everywhere():
    """``{"eyes": 2}`` weighs 2 inside the eyes and 1 outside, in the loss, the GAN term and
    the trainer alike (one rule, :mod:`ifqa_loss.regions`)."""
    rw = RegionWeights({"eyes": 2.0})
    template = rw.template(64, "cpu")
    eyes = face_region_masks(None, 64, ("eyes",))
    peak = eyes[0, 0].flatten().argmax()
    assert template.flatten()[peak] == pytest.approx(2.0, abs=0.02)
    assert template[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-3)
    loss = IFQALoss("ifqa-lite", region_weights={"eyes": 2.0})
    assert torch.allclose(loss.template_weight_map, rw.template(256, "cpu"))
    adv = IFQAAdversarialLoss("ifqa-lite", region_weights={"eyes": 2.0})
    x = torch.rand(1, 3, 256, 256)
    assert torch.allclose(adv.regions.for_images(x, 256), loss.weight_map(x))


def test_input_check_warn_mode_reports_once_and_goes_on():
    seen = []
    check = InputCheck("demo", (0, 1), mode="warn", report=seen.append)
    bad = torch.rand(1, 3, 32, 32) * 2 - 1  # [-1, 1] declared as [0, 1]
    assert check(bad, "pred").shape == bad.shape
    check(torch.full((1, 3, 32, 32), float("nan")), "pred", values=True)
    check(bad, "pred", values=True)
    assert len(seen) == 2 and "another convention" in seen[0] and "NaN" in seen[1]
    with pytest.raises(ValueError, match="another convention"):
        InputCheck("demo", (0, 1))(bad, "pred")
    with pytest.raises(ValueError, match="check_inputs must be"):
        InputCheck("demo", mode="sometimes")


def test_create_model_is_the_timm_style_loader():
    fresh = create_model("ifqa-lite")
    loaded = create_model("ifqa-lite", pretrained=True)
    frozen = load_discriminator("ifqa-lite")
    assert fresh.training and loaded.training and not frozen.training
    assert all(p.requires_grad for p in loaded.parameters())
    key = "encoder64.conv1.weight"
    assert torch.equal(loaded.state_dict()[key], frozen.state_dict()[key])
    assert not torch.equal(fresh.state_dict()[key], frozen.state_dict()[key])
    with pytest.raises(ValueError, match="pretrained=False"):
        create_model("ifqa-lite", weights="x.safetensors")


def test_every_export_names_its_model(tmp_path, monkeypatch):
    lite = IFQACNN(width=0.25, native_size=256)  # the ifqa-lite architecture, unnamed
    assert model_of(export_discriminator(lite, tmp_path / "a.safetensors")) == "ifqa-lite"
    adv = IFQAAdversarialLoss("ifqa-lite", pretrained=False)
    assert model_of(adv.export(tmp_path / "b.safetensors")) == "ifqa-lite"
    odd = export_discriminator(IFQACNN(width=0.05, native_size=96), tmp_path / "c.safetensors")
    assert model_of(odd) is None  # no registered architecture: named by its sizes instead
    with pytest.raises(CheckpointError, match="does not fit ifqa"):
        IFQAMetric(weights=odd)  # nothing named: taken for the published ifqa, and refused
    tiny = ModelConfig(
        name="test-tiny", builder=lambda: IFQACNN(0.05, 96), native_size=96,
        interpolation="bilinear", weight_file="test-tiny.safetensors", source="a test",
    )  # fmt: skip
    monkeypatch.setitem(registry._REGISTRY, tiny.name, tiny)
    named = export_discriminator(IFQACNN(0.05, 96), tmp_path / "d.safetensors")
    assert model_of(named) == "test-tiny"
    assert IFQAMetric(weights=named).model_name == "test-tiny"


def test_a_file_in_the_environment_answers_only_for_its_model(tmp_path, monkeypatch):
    path = export_discriminator(IFQACNN(0.25, 256), tmp_path / "mine.safetensors")
    monkeypatch.setenv(ENV_VAR, str(path))
    assert find_weights("ifqa-lite") == path  # the file names ifqa-lite
    assert find_weights("ifqa-judge") != path  # never the audit's judge
    anon = save_safetensors(IFQACNN(0.25, 256).state_dict(), tmp_path / "anon.safetensors")
    monkeypatch.setenv(ENV_VAR, str(anon))
    assert find_weights("ifqa-judge") != anon and find_weights("ifqa-lite") != anon
