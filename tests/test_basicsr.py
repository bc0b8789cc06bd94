"""BasicSR / GFPGAN integration: registry entries, YAML-built losses, metric, training runs.

Skipped with a reason when basicsr (or, for the GFPGAN test, gfpgan) is not installed. Every
IFQA model here is a randomly initialised ``ifqa-lite`` written to a temp file, so the tests do
not depend on the bundled weights: they check the plumbing, not the scores.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
E2E_YAML = REPO / "integrations" / "basicsr" / "e2e_srvgg_ifqa.yml"
PREPARE = REPO / "integrations" / "basicsr" / "prepare_paired_faces.py"


def _basicsr_importable() -> str | None:
    try:
        import ifqa_loss.integrations.basicsr  # noqa: F401
    except ImportError as e:
        return f"basicsr is not importable ({e}); install the basicsr extra (docs/testing.md)"
    return None


_SKIP = _basicsr_importable()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")


@pytest.fixture(scope="module")
def ib():
    import ifqa_loss.integrations.basicsr as mod

    return mod


@pytest.fixture(scope="module")
def lite_weights(tmp_path_factory) -> str:
    """Random ``ifqa-lite`` weights under a name the registry's digest check does not apply to."""
    from safetensors.torch import save_file

    from ifqa_loss import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ifqa") / "random-ifqa-lite.safetensors"
    save_file(create_model("ifqa-lite").state_dict(), str(path))
    return str(path)


def _ifqa_keys(weights: str) -> dict:
    return {"model": "ifqa-lite", "weights": weights}


# --------------------------------------------------------------------------- registration


def test_shim_only_when_module_missing(ib):
    mod = sys.modules["torchvision.transforms.functional_tensor"]
    from torchvision.transforms.functional import rgb_to_grayscale

    assert mod.rgb_to_grayscale is rgb_to_grayscale
    # basicsr's degradations module imports through the stand-in and works on tensors.
    from basicsr.data import degradations

    assert degradations.rgb_to_grayscale(torch.rand(3, 8, 8)).shape == (1, 8, 8)
    assert ib.install_torchvision_shim() is False  # already present: nothing replaced
    assert sys.modules["torchvision.transforms.functional_tensor"] is mod


def test_registry_entries_after_import_reimport_and_reload(ib):
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY

    def names():
        return {
            n: n in LOSS_REGISTRY._obj_map
            for n in ("IFQALoss", "PixelIFQALoss", "IFQAPerceptualLoss", "IFQAGANLoss")
        } | {
            "calculate_ifqa": "calculate_ifqa" in METRIC_REGISTRY._obj_map,
            "IFQADiscriminator": "IFQADiscriminator" in ARCH_REGISTRY._obj_map,
        }

    assert all(names().values()), names()
    importlib.import_module("ifqa_loss.integrations.basicsr")  # second import: no error
    reloaded = importlib.reload(ib)  # re-executes the module: must not raise AssertionError
    nothing = {"LOSS_REGISTRY": [], "ARCH_REGISTRY": [], "METRIC_REGISTRY": []}
    assert reloaded.REGISTERED == nothing
    assert reloaded.register() == nothing
    assert all(names().values())
    from basicsr.models.base_model import BaseModel

    # The log hook is installed once, not stacked by each reload.
    assert not hasattr(BaseModel.reduce_loss_dict.__wrapped__, "_ifqa_loss_log_hook")


@pytest.mark.slow
def test_core_package_does_not_import_basicsr():
    code = (
        "import sys, ifqa_loss, ifqa_loss.loss, ifqa_loss.metric, ifqa_loss.cli, "
        "ifqa_loss.integrations.basicsr_gan; "
        "print(any(m == 'basicsr' or m.startswith('basicsr.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize(
    "opt",
    [
        {"type": "IFQALoss", "loss_weight": 0.5, "reduction": "mean"},
        {"type": "IFQAPerceptualLoss", "loss_weight": 0.5},
        {"type": "PixelIFQALoss", "pixel_type": "L1Loss", "pixel_weight": 0.1, "ifqa_weight": 0.05},
    ],
    ids=["IFQALoss", "IFQAPerceptualLoss", "PixelIFQALoss"],
)
def test_build_loss_and_call_as_gfpgan(opt, lite_weights):
    """``build_loss`` from a YAML dict; ``cri(output, gt)`` on 512x512 [-1, 1] tensors."""
    from basicsr.losses import build_loss
    from basicsr.utils.registry import LOSS_REGISTRY

    opt = OrderedDict(opt, input_range=[-1, 1], **_ifqa_keys(lite_weights))
    cri = build_loss(opt)
    assert type(cri) is LOSS_REGISTRY.get(opt["type"])  # the YAML name finds our class
    torch.manual_seed(1)
    output = (torch.rand(1, 3, 512, 512) * 2 - 1).requires_grad_()
    gt = torch.rand(1, 3, 512, 512) * 2 - 1
    res = cri(output, gt)
    if opt["type"] == "IFQAPerceptualLoss":
        assert isinstance(res, tuple) and len(res) == 2 and res[1] is None
        res = res[0]
    assert isinstance(res, torch.Tensor) and res.dim() == 0 and torch.isfinite(res)
    res.backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    assert torch.isfinite(output.grad).all()
    terms = cri.pop_log_terms()
    assert "l_ifqa" in terms
    assert torch.allclose(sum(terms.values()), res.detach(), atol=1e-6)
    assert cri.pop_log_terms() == {}  # reported once per call


def test_loss_weight_and_input_range_are_honoured(lite_weights):
    from basicsr.losses import build_loss

    x01 = torch.rand(2, 3, 64, 64)
    a = build_loss({"type": "IFQALoss", **_ifqa_keys(lite_weights)})(x01)
    b = build_loss({"type": "IFQALoss", "loss_weight": 3.0, **_ifqa_keys(lite_weights)})(x01)
    c = build_loss({"type": "IFQALoss", "input_range": [-1, 1], **_ifqa_keys(lite_weights)})(
        x01 * 2 - 1
    )
    n = build_loss({"type": "IFQALoss", "reduction": "none", **_ifqa_keys(lite_weights)})(x01)
    assert torch.allclose(b, 3 * a, rtol=1e-5)
    assert torch.allclose(c, a, atol=1e-5)  # same images in the other range: same loss
    assert n.shape == (2,) and torch.allclose(n.mean(), a, atol=1e-6)


def test_pixel_term_is_the_named_basicsr_loss(lite_weights):
    from basicsr.losses import build_loss

    cri = build_loss(
        {
            "type": "PixelIFQALoss",
            "pixel_type": "MSELoss",
            "pixel_weight": 2.0,
            "ifqa_weight": 0.0,
            **_ifqa_keys(lite_weights),
        }
    )
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert torch.allclose(cri(x, y), 2.0 * ((x - y) ** 2).mean(), rtol=1e-5)
    assert set(cri.pop_log_terms()) == {"l_pix_mse", "l_ifqa"}


@pytest.mark.parametrize(
    ("opt", "err"),
    [
        ({"type": "IFQALoss", "reduction": "avg"}, ValueError),
        ({"type": "IFQALoss", "lossweight": 1.0}, TypeError),  # unknown YAML key
        ({"type": "PixelIFQALoss", "reduction": "none"}, ValueError),
        ({"type": "PixelIFQALoss", "pixel_type": "NoSuchLoss"}, ValueError),
        ({"type": "IFQALoss", "region_weights": {"ears": 2}}, ValueError),
    ],
)
def test_bad_yaml_options_are_refused(opt, err, lite_weights):
    from basicsr.losses import build_loss

    with pytest.raises(err):
        build_loss({**opt, **_ifqa_keys(lite_weights)})


def test_region_weights_from_yaml_change_the_loss(lite_weights):
    from basicsr.losses import build_loss

    x = torch.rand(1, 3, 64, 64)
    plain = build_loss({"type": "IFQALoss", **_ifqa_keys(lite_weights)})(x)
    regional = build_loss(
        {
            "type": "IFQALoss",
            "region_weights": OrderedDict(eyes=4.0, nose=1.0, mouth=4.0),
            **_ifqa_keys(lite_weights),
        }
    )(x)
    assert torch.isfinite(regional) and not torch.allclose(plain, regional)


# --------------------------------------------------------------------------- metric


def test_calculate_metric_returns_float_and_caches(ib, lite_weights):
    from basicsr.metrics import calculate_metric

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    opt = {"type": "calculate_ifqa", "better": "higher", **_ifqa_keys(lite_weights)}
    v = calculate_metric({"img": img, "img2": img[::-1]}, opt)
    assert isinstance(v, float) and 0.0 <= v <= 1.0
    n_cached = len(ib._METRICS)
    v2 = calculate_metric({"img": img}, opt)
    assert len(ib._METRICS) == n_cached  # the metric instance is reused
    assert v2 == pytest.approx(v, abs=1e-6)  # img2 is ignored
    # BGR in: the same pixels given as RGB score like the channel-swapped array.
    metric = ib.get_metric("ifqa-lite", lite_weights, "cpu")
    rgb = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    assert metric(rgb).item() == pytest.approx(v, abs=1e-5)
    gray = calculate_metric({"img": img[:, :, 0]}, opt)
    assert isinstance(gray, float)


# --------------------------------------------------------------------------- log hook


def test_log_hook_adds_terms_to_a_model_loss_dict(lite_weights):
    """An unmodified BasicSR model's ``reduce_loss_dict`` gains the composite's terms."""
    from basicsr.losses import build_loss
    from basicsr.models.base_model import BaseModel

    class Stub(BaseModel):
        def __init__(self):  # no BaseModel.__init__: only reduce_loss_dict is exercised
            self.opt = {"dist": False}

    m = Stub()
    m.cri_pix = build_loss(
        {"type": "PixelIFQALoss", "ifqa_weight": 0.5, **_ifqa_keys(lite_weights)}
    )
    out = torch.rand(1, 3, 64, 64)
    l_pix = m.cri_pix(out, torch.rand_like(out))
    log = m.reduce_loss_dict(OrderedDict(l_g_pix=l_pix))
    assert set(log) == {"l_g_pix", "l_pix_l1", "l_ifqa"}
    assert log["l_pix_l1"] + log["l_ifqa"] == pytest.approx(log["l_g_pix"], rel=1e-5)
    assert set(m.reduce_loss_dict(OrderedDict(l_x=torch.tensor(1.0)))) == {"l_x"}  # not stale


# --------------------------------------------------------------------------- GFPGAN


def _gfpgan_opt(weights: str) -> dict:
    return {
        "name": "gfpgan_ifqa_cpu",
        "model_type": "GFPGANModel",
        "num_gpu": 0,
        "is_train": True,
        "dist": False,
        "rank": 0,
        "world_size": 1,
        "path": {"pretrain_network_g": None, "pretrain_network_d": None},
        "network_g": {
            "type": "GFPGANv1Clean",
            "out_size": 128,
            "num_style_feat": 64,
            "channel_multiplier": 1,
            "decoder_load_path": None,
            "fix_decoder": False,
            "num_mlp": 2,
            "input_is_latent": True,
            "different_w": True,
            "narrow": 0.25,
            "sft_half": True,
        },
        # basicsr's StyleGAN2Discriminator needs a CUDA-only fused op; any D works for the test.
        "network_d": {
            "type": "VGGStyleDiscriminator",
            "num_in_ch": 3,
            "num_feat": 8,
            "input_size": 128,
        },
        "train": {
            "optim_g": {"type": "Adam", "lr": 2e-3},
            "optim_d": {"type": "Adam", "lr": 2e-3},
            "scheduler": {"type": "MultiStepLR", "milestones": [1000], "gamma": 0.5},
            "pixel_opt": {
                "type": "PixelIFQALoss",
                "pixel_type": "L1Loss",
                "pixel_weight": 0.1,
                "ifqa_weight": 0.05,
                "input_range": [-1, 1],
                **_ifqa_keys(weights),
            },
            "L1_opt": {"type": "L1Loss", "loss_weight": 1, "reduction": "mean"},
            "gan_opt": {"type": "GANLoss", "gan_type": "wgan_softplus", "loss_weight": 0.1},
            "r1_reg_weight": 10,
            "net_d_iters": 1,
            "net_d_init_iters": 0,
            "net_d_reg_every": 16,
        },
    }


@pytest.mark.slow
def test_gfpgan_model_logs_the_ifqa_term(lite_weights):
    pytest.importorskip("gfpgan", reason="gfpgan is not installed (pip install gfpgan)")
    from basicsr.models import build_model

    torch.manual_seed(0)
    model = build_model(_gfpgan_opt(lite_weights))
    assert type(model).__name__ == "GFPGANModel"
    assert type(model.cri_pix).__name__ == "PixelIFQALoss"
    before = [p.detach().clone() for p in model.net_g.parameters()]
    gt = torch.rand(2, 3, 128, 128) * 2 - 1
    for it in (1, 2):
        model.feed_data({"lq": gt + 0.2 * torch.randn_like(gt), "gt": gt})
        model.optimize_parameters(it)
        log = model.get_current_log()
        assert {"l_g_pix", "l_pix_l1", "l_ifqa", "l_g_gan", "l_d"} <= set(log), log
        assert np.isfinite(log["l_ifqa"]) and log["l_ifqa"] > 0
        assert log["l_pix_l1"] + log["l_ifqa"] == pytest.approx(log["l_g_pix"], rel=1e-4)
    after = list(model.net_g.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_pipeline_end_to_end(tmp_path, faces_dir, lite_weights):
    """The wrapper runs BasicSR's real train_pipeline with IFQA in the YAML (CPU, < 3 min)."""
    src = faces_dir / "gpen" / "ffhq-10"
    if not src.is_dir():
        pytest.skip(f"{src} not found (the shared FFHQ sample faces)")
    subprocess.run(
        [sys.executable, str(PREPARE), str(src), "datasets/faces_e2e", "--size", "128"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "e2e-ifqa-lite.safetensors").write_bytes(
        Path(lite_weights).read_bytes()
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "ifqa_loss.integrations.basicsr_train", "-opt", str(E2E_YAML)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "experiments" / "ifqa_e2e_srvgg"
    logs = list(exp.glob("train_*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    steps = re.findall(r"iter:\s+(\d+).*l_pix: (\S+) l_pix_l1: (\S+) l_ifqa: (\S+)", text)
    assert [int(s[0]) for s in steps] == [4, 8, 12, 16, 20, 24], text[-2000:]
    for _, total, l1, q in steps:
        assert float(l1) + float(q) == pytest.approx(float(total), rel=1e-3)
    vals = [float(v) for v in re.findall(r"# ifqa: ([0-9.]+)", text)]
    assert len(vals) >= 2 and all(0.0 <= v <= 1.0 for v in vals)
    assert re.search(r"# psnr: [0-9.]+", text)
    ckpt = exp / "models" / "net_g_24.pth"
    assert ckpt.is_file() and (exp / "models" / "net_g_latest.pth").is_file()
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["params"]
    assert "body.0.weight" in sd  # the restorer's weights, nothing of the discriminator
    assert not any("discriminator" in k or k.startswith("ifqa") for k in sd)


def test_overshoot_is_tolerated_and_a_wrong_range_warned_once(lite_weights, caplog):
    from basicsr.losses import build_loss

    cri = build_loss({"type": "IFQALoss", **_ifqa_keys(lite_weights)})  # input_range [0, 1]
    x = torch.rand(1, 3, 64, 64) * 2 - 1  # [-1, 1] data: the GFPGAN mistake
    with caplog.at_level("WARNING", logger="ifqa_loss"):
        assert torch.isfinite(cri(x))
        assert torch.isfinite(cri(x))
    assert sum("input_range: [-1, 1]" in r.getMessage() for r in caplog.records) == 1
    ok = build_loss({"type": "IFQALoss", "input_range": [-1, 1], **_ifqa_keys(lite_weights)})
    assert torch.isfinite(ok(x * 1.6))  # an untrained generator's overshoot: no error


def test_int_betas_are_passed_to_adam_as_floats():
    """GFPGAN 1.3.8 asks for betas=(0, 0.99), which current torch's Adam refuses as is."""
    from basicsr.models.base_model import BaseModel

    class Stub(BaseModel):
        def __init__(self):
            pass

    opt = Stub().get_optimizer("Adam", [torch.nn.Parameter(torch.zeros(1))], 1e-3, betas=(0, 0.99))
    assert opt.param_groups[0]["betas"] == (0.0, 0.99)


def test_float_jpeg_quality_is_accepted():
    """basicsr draws the JPEG quality as a float, which OpenCV 5's imencode refuses."""
    from basicsr.data import degradations

    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    out = degradations.random_add_jpg_compression(img, [60.0, 100.0])
    assert out.shape == img.shape and out.dtype == np.float32


def test_perceptual_slot_matches_features_of_the_ground_truth(lite_weights):
    """The perceptual entry defaults to form=features (the audit finds one_minus gamed): zero
    at the ground truth, positive away from it; PixelIFQALoss hands the target on too."""
    from basicsr.losses import build_loss

    keys = dict(input_range=[-1, 1], **_ifqa_keys(lite_weights))
    cri = build_loss({"type": "IFQAPerceptualLoss", **keys})
    assert cri.form == "features"
    torch.manual_seed(2)
    gt = torch.rand(1, 3, 128, 128) * 2 - 1
    assert cri(gt, gt)[0].abs() < 1e-6
    assert cri((gt + 0.2 * torch.randn_like(gt)).clamp(-1, 1), gt)[0] > 1e-3
    pix = build_loss({"type": "PixelIFQALoss", "form": "features", **keys})
    pix(gt, gt)
    assert pix.pop_log_terms()["l_ifqa"].abs() < 1e-6


# --------------------------------------------------------------------------- co-trained D


def _d_opt(weights: str | None, **kw) -> dict:
    return {"type": "IFQADiscriminator", "model_name": "ifqa-lite", "weights": weights, **kw}


def test_discriminator_arch_matches_the_loaded_model_and_trains(lite_weights):
    """pretrained: the loaded IFQA model's logits at the image's size or the native one;
    pretrained false: other logits; never frozen; the IFQA network's state-dict keys."""
    from basicsr.archs import build_network

    from ifqa_loss import create_model
    from ifqa_loss.preprocess import to_model_input
    from ifqa_loss.weights import load_discriminator

    ref = load_discriminator("ifqa-lite", lite_weights)
    torch.manual_seed(3)
    x = torch.rand(2, 3, 64, 96)
    net = build_network(_d_opt(lite_weights))
    out = net(x)
    want = ref.forward_logits(x * 2 - 1)
    assert out.shape == (2, 1, 64, 96)
    assert torch.allclose(out, want, atol=1e-4), (out - want).abs().max()
    pm1 = build_network(_d_opt(lite_weights, input_range=[-1, 1]))
    assert torch.allclose(pm1(x * 2 - 1), out, atol=1e-5)
    native = build_network(_d_opt(lite_weights, resize_to_native=True))(x)
    want = ref.forward_logits(to_model_input(x, _ref_cfg(), (0.0, 1.0)))
    assert native.shape == (2, 1, 256, 256) and torch.allclose(native, want, atol=1e-4)

    torch.manual_seed(4)
    scratch = build_network(_d_opt(None, pretrained=False))
    assert (scratch(x) - out).abs().mean() > 1e-2
    assert scratch.weights_origin.startswith("random")

    assert set(net.state_dict()) == set(create_model("ifqa-lite").state_dict())
    net.eval()
    net.train()
    assert net.training and not net.frozen
    assert all(m.training for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def _ref_cfg():
    from ifqa_loss.models.registry import get_model_config

    return get_model_config("ifqa-lite")


def test_discriminator_default_runs_out_of_the_box():
    from basicsr.archs import build_network

    net = build_network({"type": "IFQADiscriminator"})  # bundled ifqa-lite, [0, 1] input
    assert net.model_name == "ifqa-lite" and net.pretrained
    assert net.weights_origin.endswith("ifqa-lite.safetensors")
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


@pytest.mark.parametrize(
    ("opt", "match"),
    [
        ({"model_name": "ifqa++"}, "CNN family"),
        ({"model_name": "ifqa-judge"}, "not meant to be trained"),
        ({"pretrained": False, "weights": "w.pth"}, "pretrained: false"),
        ({"input_range": [1, 0]}, "high > low"),
    ],
)
def test_discriminator_bad_options_are_refused(opt, match):
    from basicsr.archs import build_network

    with pytest.raises(ValueError, match=match):
        build_network({"type": "IFQADiscriminator", **opt})


def test_discriminator_refuses_sizes_it_cannot_run_at(lite_weights):
    from basicsr.archs import build_network

    net = build_network(_d_opt(lite_weights))
    for size in ((48, 64), (32, 64)):
        with pytest.raises(ValueError, match="multiples of 32 and at least 64"):
            net(torch.rand(1, 3, *size))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        net(torch.rand(3, 64, 64))


def test_gan_loss_matches_basicsr_ganloss_without_regions():
    """Uniform weights: the same values as BasicSR's GANLoss for both names, both sides."""
    from basicsr.losses import build_loss

    torch.manual_seed(5)
    logits = torch.randn(2, 1, 32, 32) * 2
    for gan_type in ("vanilla", "wgan_softplus", "hinge"):
        ours = build_loss({"type": "IFQAGANLoss", "gan_type": gan_type, "loss_weight": 0.1})
        theirs = build_loss({"type": "GANLoss", "gan_type": gan_type, "loss_weight": 0.1})
        for real in (True, False):
            for disc in (True, False):
                a, b = ours(logits, real, is_disc=disc), theirs(logits, real, is_disc=disc)
                assert a.dim() == 0 and torch.allclose(a, b, atol=1e-6), (gan_type, real, disc)
    smooth = build_loss({"type": "IFQAGANLoss", "real_label_val": 0.9})
    ref = build_loss({"type": "GANLoss", "gan_type": "vanilla", "real_label_val": 0.9})
    assert torch.allclose(smooth(logits, True), ref(logits, True), atol=1e-6)


def test_gan_loss_region_weights_emphasise_the_face_regions():
    """The same wrong pixels cost more on the eyes than in a corner; uniform weights do not care."""
    from basicsr.losses import build_loss

    regions = {"eyes": 2.0, "nose": 1.5, "mouth": 2.0}
    weighted = build_loss({"type": "IFQAGANLoss", "region_weights": regions, "loss_weight": 1})
    uniform = build_loss({"type": "IFQAGANLoss", "loss_weight": 1})
    eye = torch.full((1, 1, 64, 64), 4.0)  # confident "real" everywhere ...
    corner = eye.clone()
    eye[..., 27:33, 21:27] = -4.0  # ... except on the image-left eye (template: x 24, y 30)
    corner[..., 0:6, 0:6] = -4.0  # ... or except in a corner of the same area
    assert torch.allclose(uniform(eye, True), uniform(corner, True))
    assert weighted(eye, True) > 1.2 * weighted(corner, True)
    assert weighted(eye, False, is_disc=True) < weighted(corner, False, is_disc=True)
    with pytest.raises(ValueError, match="per-pixel logits"):
        weighted(torch.randn(2, 1), True)  # a one-output discriminator with region weights
    assert torch.isfinite(uniform(torch.randn(2, 1), True))  # ... is fine without them


@pytest.mark.parametrize(
    "opt",
    [
        {"gan_type": "lsgan"},
        {"region_weights": {"ears": 2}},
        {"region_weights": {"eyes": -1}},
        {"real_label_val": 1.5},
    ],
)
def test_gan_loss_bad_options_are_refused(opt):
    from basicsr.losses import build_loss

    with pytest.raises(ValueError):
        build_loss({"type": "IFQAGANLoss", **opt})


def _srgan_opt(tmp: Path, weights: str, resume_from: int | None = None) -> dict:
    models, states = tmp / "models", tmp / "training_states"
    models.mkdir(exist_ok=True)
    states.mkdir(exist_ok=True)
    pre = {} if resume_from is None else {
        "pretrain_network_g": str(models / f"net_g_{resume_from}.pth"),
        "pretrain_network_d": str(models / f"net_d_{resume_from}.pth"),
    }  # fmt: skip
    return {
        "name": "srgan_ifqa_d_cpu",
        "model_type": "SRGANModel",
        "scale": 1,
        "num_gpu": 0,
        "is_train": True,
        "dist": False,
        "rank": 0,
        "world_size": 1,
        "path": {
            "pretrain_network_g": None,
            "pretrain_network_d": None,
            "models": str(models),
            "training_states": str(states),
            **pre,
        },
        "network_g": {
            "type": "SRVGGNetCompact",
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": 8,
            "num_conv": 2,
            "upscale": 1,
            "act_type": "prelu",
        },
        "network_d": _d_opt(weights, input_range=[0, 1]),
        "train": {
            "optim_g": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
            "optim_d": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
            "gan_opt": {
                "type": "IFQAGANLoss",
                "gan_type": "vanilla",
                "loss_weight": 0.1,
                "region_weights": {"eyes": 2.0, "nose": 1.5, "mouth": 2.0},
            },
            "net_d_iters": 1,
            "net_d_init_iters": 0,
        },
    }


def _train(model, gt: torch.Tensor, iters: range) -> list[dict]:
    logs = []
    for it in iters:
        noisy = (gt + 0.1 * torch.randn_like(gt)).clamp(0, 1)
        model.feed_data({"lq": noisy, "gt": gt})
        model.optimize_parameters(it)
        logs.append(model.get_current_log())
    return logs


@pytest.mark.slow
def test_srgan_model_trains_saves_and_resumes_the_ifqa_discriminator(tmp_path, lite_weights):
    """A real SRGANModel: network_d IFQADiscriminator, gan_opt IFQAGANLoss, L1 pixel loss."""
    from basicsr.models import build_model

    from ifqa_loss.weights import load_discriminator

    torch.manual_seed(0)
    model = build_model(_srgan_opt(tmp_path, lite_weights))
    assert type(model.net_d).__name__ == "IFQADiscriminator"
    assert type(model.cri_gan).__name__ == "IFQAGANLoss"
    start = {k: v.clone() for k, v in model.net_d.state_dict().items()}
    gt = torch.rand(2, 3, 64, 64)
    for log in _train(model, gt, range(1, 4)):
        assert {"l_g_pix", "l_g_gan", "l_d_real", "l_d_fake"} <= set(log), log
        assert all(np.isfinite(v) for v in log.values()), log
    trained = model.net_d.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start)  # not frozen
    assert model.net_d.training
    model.save(0, 3)

    torch.manual_seed(1)
    resumed = build_model(_srgan_opt(tmp_path, lite_weights, resume_from=3))
    state = torch.load(tmp_path / "training_states" / "3.state", weights_only=True)
    assert not resumed.optimizer_d.state_dict()["state"]  # nothing before resume_training
    resumed.resume_training(state)
    for k, v in resumed.net_d.state_dict().items():
        assert torch.equal(v, trained[k]), k
    mine, theirs = model.optimizer_d.state_dict(), resumed.optimizer_d.state_dict()
    assert mine["state"].keys() == theirs["state"].keys() and mine["state"]
    for i, s in mine["state"].items():
        for key, val in s.items():
            assert torch.equal(torch.as_tensor(val), torch.as_tensor(theirs["state"][i][key]))
    log = _train(resumed, gt, range(4, 5))[0]
    assert all(np.isfinite(v) for v in log.values()), log
    # The file BasicSR wrote is an IFQA checkpoint: ifqa_loss loads it strictly.
    d = load_discriminator("ifqa-lite", tmp_path / "models" / "net_d_3.pth")
    assert all(torch.equal(v, trained[k]) for k, v in d.state_dict().items())
    # ... and a checkpoint in the original {'D': state_dict} layout loads via param_key_d.
    torch.save({"D": trained}, tmp_path / "original_layout.pth")
    opt = _srgan_opt(tmp_path, lite_weights)
    opt["network_d"] = _d_opt(None, pretrained=False)
    opt["path"].update(pretrain_network_d=str(tmp_path / "original_layout.pth"), param_key_d="D")
    warm = build_model(opt)
    assert all(torch.equal(v, trained[k]) for k, v in warm.net_d.state_dict().items())


@pytest.mark.slow
def test_gfpgan_model_with_the_ifqa_discriminator_and_r1(lite_weights):
    """GFPGANModel's R1 step (every iteration here) runs with the per-pixel discriminator."""
    pytest.importorskip("gfpgan", reason="gfpgan is not installed (pip install gfpgan)")
    from basicsr.models import build_model

    opt = _gfpgan_opt(lite_weights)
    opt["network_d"] = _d_opt(lite_weights, input_range=[-1, 1])
    opt["train"]["pixel_opt"] = {"type": "L1Loss", "loss_weight": 0.1}
    opt["train"]["gan_opt"] = {
        "type": "IFQAGANLoss",
        "gan_type": "wgan_softplus",
        "loss_weight": 0.1,
        "region_weights": {"eyes": 2.0, "nose": 1.5, "mouth": 2.0},
    }
    opt["train"]["net_d_reg_every"] = 1
    torch.manual_seed(0)
    model = build_model(opt)
    net_d = model.net_d
    start = [p.detach().clone() for p in net_d.parameters()]
    gt = torch.rand(2, 3, 128, 128) * 2 - 1
    model.feed_data({"lq": gt + 0.2 * torch.randn_like(gt), "gt": gt})
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert {"l_g_gan", "l_d", "l_d_r1"} <= set(log), log
    assert all(np.isfinite(v) for v in log.values()), log
    assert 0 < log["l_d_r1"] < 1e4  # the image-level logit's gradient, not the map sum's
    assert any(not torch.equal(a, b) for a, b in zip(net_d.parameters(), start, strict=True))
    assert not net_d.image_logit_for_leaf_inputs  # reset after the step
    leaf = gt.clone().requires_grad_()
    assert net_d(leaf).shape == (2, 1, 128, 128)  # outside GFPGAN's R1: the map


@pytest.mark.parametrize(
    ("path", "input_range"),
    [
        (REPO / "integrations" / "basicsr" / "train_srgan_ifqa_d.yml", (0.0, 1.0)),
        (REPO / "integrations" / "gfpgan" / "ifqa_discriminator.yml", (-1.0, 1.0)),
    ],
    ids=["srgan", "gfpgan"],
)
def test_shipped_options_build_the_discriminator_and_its_loss(path, input_range):
    """The YAMLs in integrations/ parse with BasicSR's loader and their network_d / gan_opt
    build and run; validation never scores with the discriminator's own model."""
    import yaml
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    from basicsr.utils.options import ordered_yaml

    opt = yaml.load(path.read_text(), Loader=ordered_yaml()[0])
    net = build_network(dict(opt["network_d"]))
    assert type(net).__name__ == "IFQADiscriminator" and net.input_range == input_range
    cri = build_loss(dict(opt["train"]["gan_opt"]))
    x = torch.rand(1, 3, 64, 64) * (input_range[1] - input_range[0]) + input_range[0]
    assert torch.isfinite(cri(net(x), True)) and torch.isfinite(cri(net(x), False, is_disc=True))
    for metric in opt.get("val", {}).get("metrics", {}).values():
        if metric["type"] == "calculate_ifqa":
            assert metric.get("model", "auto") not in ("auto", net.model_name), metric


def test_wrapper_class_names_differ_from_the_core_but_yaml_names_stay():
    """``type: IFQALoss`` in a YAML builds the BasicSR wrapper, whose class has its own name,
    so ``ifqa_loss.IFQALoss`` is one class with one constructor."""
    from basicsr.utils.registry import LOSS_REGISTRY

    import ifqa_loss
    from ifqa_loss.integrations import basicsr as glue

    registered = LOSS_REGISTRY.get("IFQALoss")  # (a reload elsewhere may leave an older copy)
    assert registered.__name__ == "BasicSRIFQALoss" and registered.__module__ == glue.__name__
    assert issubclass(registered, ifqa_loss.IFQALoss) and registered is not ifqa_loss.IFQALoss
    assert not hasattr(glue, "IFQALoss")
