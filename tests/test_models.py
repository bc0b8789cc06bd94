"""The two original architectures: exact keys/shapes and the golden values of the originals."""

from __future__ import annotations

import pytest
import torch
from conftest import DATA, golden_input

from ifqa_loss import get_model_config, list_models
from ifqa_loss.models import IFQACNN, IFQAViT
from ifqa_loss.models.vit import Block, sincos_pos_embed

# The original IFQA release's networks with conftest.formula_state_dict's weights on
# conftest.golden_input: mean, unbiased std, (0,0), (64,200), centre, last pixel, file score.
GOLDEN = {
    "ifqa": (0.5476415, 0.1273209, 0.4192961, 0.6149567, 0.1899155, 0.4671662, 0.5968871),
    "ifqa++": (0.4970891, 0.2093015, 0.5043375, 0.4135463, 0.4996650, 0.5547084, 0.5221279),
}


def read_tsv(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (DATA / name).read_text().splitlines()[1:]:
        key, shape = line.split("\t")
        rows.append((key, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    return rows


@pytest.mark.parametrize(
    "cls,tsv,count",
    [(IFQACNN, "ifqa_cnn_state_dict.tsv", 122), (IFQAViT, "ifqa_plusplus_vit_state_dict.tsv", 494)],
)
def test_state_dict_matches_release(cls, tsv, count):
    with torch.device("meta"):
        net = cls()
    ours = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert ours == read_tsv(tsv)  # same keys, shapes and order
    assert len(ours) == count


def _check_golden(map_: torch.Tensor, name: str) -> None:
    mean, std, p00, p64, centre, last, _ = GOLDEN[name]
    m = map_[0, 0].double()
    s = m.shape[0]
    got = (m.mean(), m.std(), m[0, 0], m[64, 200], m[s // 2, s // 2], m[-1, -1])
    for g, e in zip(got, (mean, std, p00, p64, centre, last), strict=True):
        assert abs(g.item() - e) < 1e-4, (name, got, GOLDEN[name])


def test_cnn_golden_synthetic(golden_cnn_sd):
    net = IFQACNN().eval()
    net.load_state_dict(golden_cnn_sd)
    with torch.no_grad():
        out = net(golden_input(256))
    assert out.shape == (1, 1, 256, 256)
    _check_golden(out, "ifqa")


@pytest.mark.slow
def test_vit_golden_synthetic(golden_vit_sd):
    with torch.device("meta"):
        net = IFQAViT()
    net.load_state_dict(golden_vit_sd, assign=True)
    with torch.no_grad():
        out = net.eval()(golden_input(224))
    assert out.shape == (1, 1, 224, 224)
    _check_golden(out, "ifqa++")


def test_golden_input_matters(golden_cnn_sd):
    """The golden check is sensitive: a wrong input path would move the map a lot."""
    net = IFQACNN().eval()
    net.load_state_dict(golden_cnn_sd)
    with torch.no_grad():
        delta = (net(golden_input(256)) - net(torch.zeros(1, 3, 256, 256))).abs().max()
    assert delta > 0.5


def test_logits_are_presigmoid_map(tiny_cnn):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(tiny_cnn.forward_logits(x)), tiny_cnn(x), atol=1e-6)
        vit = IFQAViT(img_size=28, dim=32, depth=1, heads=2, decoder_dim=16, decoder_depth=1,
                      decoder_heads=2)  # fmt: skip
        x = torch.rand(2, 3, 28, 28) * 2 - 1
        m = vit(x)
        assert m.shape == (2, 1, 28, 28)
        assert torch.allclose(torch.sigmoid(vit.forward_logits(x)), m, atol=1e-6)


def test_vit_fold_places_token_values():
    """Token h*g+w, value p*14+q lands at pixel (h*14+p, w*14+q)."""
    vit = IFQAViT(img_size=28, dim=32, depth=0, heads=2, decoder_dim=16, decoder_depth=0,
                  decoder_heads=2)  # fmt: skip
    captured = {}

    def hook(_m, _i, out):
        captured["pred"] = out

    vit.decoder_pred.register_forward_hook(hook)
    with torch.no_grad():
        logits = vit.forward_logits(torch.rand(1, 3, 28, 28))
    pred = captured["pred"][0, 1:]  # drop the class token: (4 tokens, 196 values)
    for h in range(2):
        for w in range(2):
            for p, q in ((0, 0), (3, 11), (13, 13)):
                assert logits[0, 0, h * 14 + p, w * 14 + q] == pred[h * 2 + w, p * 14 + q]


def test_block_matches_timm():
    timm_vit = pytest.importorskip("timm.models.vision_transformer", reason="timm not installed")
    torch.manual_seed(0)
    ref = timm_vit.Block(64, 4, mlp_ratio=4.0, qkv_bias=True, norm_layer=_ln_eps6())
    ours = Block(64, 4, 4.0)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref.eval()(x), atol=1e-5)


def _ln_eps6():
    import functools

    return functools.partial(torch.nn.LayerNorm, eps=1e-6)


def test_sincos_table():
    t = sincos_pos_embed(1280, 16)
    assert t.shape == (257, 1280)
    assert (t[0] == 0).all()
    assert abs(t).max() <= 1.0
    # token (row 0, col 1) and (row 1, col 0) differ only in which half encodes the position
    assert (t[2, :640] == t[17, 640:]).all()


def test_width_multiplier():
    small = IFQACNN(width=0.25)
    assert [k for k in small.state_dict()] == [k for k in IFQACNN().state_dict()]
    n = sum(p.numel() for p in small.parameters())
    assert 5e6 < n < 8e6
    with pytest.raises(ValueError, match="multiple of 32"):
        IFQACNN(native_size=100)


def test_registry_lists_models():
    names = [c.name for c in list_models()]
    assert {"ifqa", "ifqa++"} <= set(names)
    cfg = get_model_config("ifqa")
    assert (cfg.native_size, cfg.interpolation, cfg.weight_file) == (
        256,
        "bilinear",
        "IFQA_Metric.pth",
    )
    vit = get_model_config("ifqa++")
    assert (vit.native_size, vit.interpolation, vit.file_pipeline) == (
        224,
        "bicubic",
        "normalize_then_resize",
    )
    with pytest.raises(ValueError, match="known models: .*ifqa"):
        get_model_config("nope")
