"""Trainer, degradations, region swaps, validation protocol and the bundled ifqa-lite model.

Everything runs on the CPU with tiny networks; the whole file takes about a minute on 2 cores.
Tests that need the face images of ``../shared/data/faces`` find them through
``$IFQA_FACES_DIR`` or ``<repo>/../shared/data/faces`` and are skipped when absent.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ifqa_loss.faces import degrade as plain
from ifqa_loss.faces.degrade import degrade
from ifqa_loss.faces.images import load_face, split_faces
from ifqa_loss.masks import face_region_masks, template_landmarks
from ifqa_loss.models.base import Discriminator
from ifqa_loss.models.cnn import IFQACNN
from ifqa_loss.regions import RegionWeights
from ifqa_loss.train import degradations as D
from ifqa_loss.train.config import (
    DegradationConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)
from ifqa_loss.train.data import FaceStream, shard_index
from ifqa_loss.train.fpr import mix, swap_masks, weighted_bce
from ifqa_loss.train.generator import RestorationGenerator
from ifqa_loss.train.trainer import (
    SimulatedCrash,
    atomic_torch_save,
    load_checkpoint,
    train,
)
from ifqa_loss.train.validation import FAMILIES, evaluate, format_table, meets_targets

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "ifqa_loss" / "bundled" / "ifqa-lite.safetensors"


def faces_dir() -> Path | None:
    env = os.environ.get("IFQA_FACES_DIR")
    p = Path(env) if env else REPO.parent / "shared" / "data" / "faces"
    return p if p.is_dir() else None


def synthetic_face(size: int, seed: int) -> np.ndarray:
    """A smooth random image with some fine texture, (size, size, 3) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    low = rng.random((8, 8, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = img + 0.15 * np.sin(2 * math.pi * 12 * (xx + yy))[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def tiny_config(**run) -> TrainConfig:
    values = {
        "model": {"width": 0.05, "native_size": 96},
        "generator": {"channels": 8, "blocks": 1, "unshuffle": 2},
        "data": {
            "base_size": 128,
            "num_workers": 0,
            "train": ["*.png"],
            "val": [],
            "aug_prob": 0.5,
        },
        "degradation": {
            "sizes": [128, 96],
            "size_probs": [0.7, 0.3],
            "min_ops": 1,
            "blur_prob": 0.5,
            "down_prob": 0.5,
            "noise_prob": 0.5,
            "jpeg_prob": 0.5,
        },
        "loss": {
            "mix_fraction": 0.5,
            "fake_degraded_fraction": 0.5,
            "landmark_jitter": 0.02,
            "fake_visibility_tau": 4 / 255,
        },
        "optim": {"ema_decay": 0.9},
        "run": {
            "steps": 6,
            "batch_size": 2,
            "seed": 3,
            "device": "cpu",
            "threads": 1,
            "log_every": 1,
            "val_every": 0,
            "ckpt_every": 2,
            "progress": False,
            # the CPU curriculum: half of the steps on 64-pixel crops, then whole images
            "crop_size": 64,
            "crop_fraction": 0.5,
        },
    }
    values["run"].update(run)
    return config_from_dict(values)


def tiny_faces(n: int = 5, size: int = 128) -> list[torch.Tensor]:
    return [
        torch.from_numpy(
            (synthetic_face(size, i) * 255).round().astype(np.uint8).transpose(2, 0, 1)
        )
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- degradations


def test_random_degradation_shapes_ranges_and_seed_determinism():
    img = synthetic_face(96, 0)
    cfg = DegradationConfig()  # GFPGAN defaults: every operation on
    outs = [D.random_degradation(img, cfg, np.random.default_rng(s)) for s in (5, 5, 6)]
    for clean, out, params in outs:
        assert clean.shape == img.shape
        assert out.shape == img.shape and out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        # quantize=True: values on the 8-bit grid
        assert np.allclose(out * 255, np.round(out * 255), atol=1e-3)
        assert {"blur", "down", "noise", "jpeg"} <= set(params)
    assert np.array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][1], outs[2][1])
    assert np.abs(outs[0][1] - img).mean() > 0.005  # it did degrade the image


def test_degradation_parameters_follow_the_configured_ranges():
    cfg = DegradationConfig(
        blur_sigma=[1.0, 2.0],
        down_factor=[2.0, 3.0],
        noise_sigma=[4.0, 5.0],
        jpeg_quality=[30.0, 40.0],
        blur_aniso_prob=0.0,
        color_jitter_prob=0.0,
    )
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = D.sample_params(cfg, rng)
        assert 1.0 <= p["blur"][0] <= 2.0 and p["blur"][0] == p["blur"][1]
        assert 2.0 <= p["down"][0] <= 3.0
        assert 4.0 <= p["noise"][0] <= 5.0
        assert 30.0 <= p["jpeg"] <= 40.0
    off = DegradationConfig(blur_prob=0, down_prob=0, noise_prob=0, jpeg_prob=0.0, min_ops=1)
    for _ in range(20):  # min_ops forces one operation even when each is unlikely
        p = D.sample_params(off, rng)
        assert not {"blur", "down", "noise", "jpeg"} & set(p)  # probability 0: never
    single = DegradationConfig(single_op_prob=1.0, single_op_weights=[0.0, 0.0, 1.0, 1.0])
    seen = set()
    for _ in range(40):  # exactly one operation, drawn among those with weight > 0
        ops = {"blur", "down", "noise", "jpeg"} & set(D.sample_params(single, rng))
        assert len(ops) == 1 and ops <= {"noise", "jpeg"}
        seen |= ops
    assert seen == {"noise", "jpeg"}
    some = DegradationConfig(blur_prob=0.2, down_prob=0.2, noise_prob=0.2, jpeg_prob=0.2, min_ops=1)
    assert all(
        {"blur", "down", "noise", "jpeg"} & set(D.sample_params(some, rng)) for _ in range(50)
    )


def _hf_energy(img: np.ndarray) -> float:
    g = img.mean(2)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def test_validation_families_grow_with_strength():
    img = plain.quantize(synthetic_face(128, 1))
    for fam in FAMILIES:
        assert np.array_equal(degrade(img, fam.name, fam.levels[0]), img), fam.name
        errs = [np.abs(degrade(img, fam.name, lv) - img).mean() for lv in fam.levels]
        assert errs[0] == 0
        # error grows with strength (small slack for JPEG's non-monotone rounding)
        assert all(b >= a * 0.9 for a, b in itertools.pairwise(errs[1:])), (fam.name, errs)
        assert errs[-1] > errs[1]
    blurred = [_hf_energy(degrade(img, "blur", s)) for s in (0.0, 1.0, 2.0, 4.0)]
    assert blurred == sorted(blurred, reverse=True)
    sharpened = [_hf_energy(degrade(img, "unsharp", a)) for a in (0.0, 1.0, 2.0, 3.0)]
    assert sharpened == sorted(sharpened)  # more high frequencies the stronger the mask
    noisy = degrade(img, "noise", 15.0, seed=0) - img
    assert abs(noisy.std() * 255 - 15) < 1.5
    assert np.array_equal(degrade(img, "noise", 15.0, seed=4), degrade(img, "noise", 15.0, seed=4))


def test_config_rejects_unknown_keys_and_applies_overrides(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict({"run": {"stepz": 3}})
    with pytest.raises(ValueError, match="jpeg_quality"):
        config_from_dict({"degradation": {"jpeg_quality": [50, 120]}})
    cfg = load_config("lite_cpu", ["run.steps=7", "loss.region_weights={eyes: 3.0}"])
    assert cfg.run.steps == 7 and cfg.loss.region_weights == {"eyes": 3.0}
    assert cfg.model.width > 0 and cfg.data.val  # the packaged config holds a held-out list


def test_face_stream_is_deterministic_in_range_and_sharded():
    cfg = tiny_config()
    faces = tiny_faces(5)
    s = FaceStream(faces, cfg.data, cfg.degradation, 96, seed=1)
    a, b = s[7], s[7]
    assert torch.equal(a["real"], b["real"]) and torch.equal(a["degraded"], b["degraded"])
    assert a["real"].shape == (3, 96, 96) and a["degraded"].shape == (3, 96, 96)
    for item in (s[i] for i in range(10)):
        assert item["real"].min() >= -1 and item["real"].max() <= 1
        assert item["degraded"].min() >= -1 and item["degraded"].max() <= 1
    # DistributedSampler-style shards: within an epoch the two ranks see disjoint faces
    # that together cover the dataset (n = 5 is padded to 6 with one repeat).
    n, world = 5, 2
    for epoch in range(3):
        per_rank = math.ceil(n / world)
        r0 = [shard_index(1, epoch * per_rank + o, n, 0, world) for o in range(per_rank)]
        r1 = [shard_index(1, epoch * per_rank + o, n, 1, world) for o in range(per_rank)]
        assert set(r0) | set(r1) == set(range(n))
        assert len(set(r0) & set(r1)) <= 1  # only the padding repeat may overlap


def test_clean_sample_uses_the_metrics_resize():
    cfg = tiny_config()
    cfg.data.hflip = False
    faces = tiny_faces(1)
    s = FaceStream(faces, cfg.data, cfg.degradation, 96, seed=0)
    x = faces[0].float()[None] / 255
    ref = torch.nn.functional.interpolate(x, size=(96, 96), mode="bilinear", antialias=True)
    assert torch.allclose(s[0]["real"], ref[0] * 2 - 1, atol=1e-6)


# ---------------------------------------------------------------------- region swaps and losses


def test_swap_labels_follow_the_swapped_regions():
    size, b = 64, 16
    lm = template_landmarks(size, b)
    g = torch.Generator().manual_seed(0)
    region, target = swap_masks(lm, size, ("left_eye", "right_eye", "nose", "mouth"), 0.25, 1.0, g)
    real = torch.ones(b, 3, size, size)
    fake = -torch.ones(b, 3, size, size)
    mixed = mix(real, fake, target)
    # the per-pixel label is 1 exactly where the mixed image shows the real face
    assert torch.equal(mixed[:, :1] > 0, target > 0.5)
    assert set(region.unique().tolist()) <= {0.0, 1.0} and set(target.unique().tolist()) <= {
        0.0,
        1.0,
    }
    soft = face_region_masks(lm, size, ("left_eye", "right_eye", "nose", "mouth"))
    centres = [
        (lm[0, 0]),
        (lm[0, 1]),
        (lm[0, 2] * 0.7 + lm[0, :2].mean(0) * 0.3),
        lm[0, 3:].mean(0),
    ]
    directions = set()
    for i in range(b):
        assert region[i].sum() > 0  # at least one region swapped
        # swapped pixels lie inside the regions' masks
        assert (soft[i].amax(0)[region[i, 0] > 0] > 0.25).all()
        corner = target[i, 0, 0, 0].item()  # far from every region: the background's label
        inside = [region[i, 0, int(c[1].round()), int(c[0].round())].item() for c in centres]
        assert any(inside)
        for r_in in inside:
            if r_in:  # a swapped region has the opposite label of the background
                x, y = (int(v.round()) for v in centres[inside.index(r_in)])
                assert target[i, 0, y, x].item() == 1.0 - corner
        directions.add(corner)
    assert directions == {0.0, 1.0}  # both swap directions occur


def test_region_weights_and_weighted_bce():
    lm = template_landmarks(64, 1)
    # The trainer's weights (one rule with the loss's): 3 in the eyes and mouth, 2 on the nose.
    w = RegionWeights({"eyes": 3.0, "mouth": 3.0, "nose": 2.0}).from_landmarks(
        lm, (64, 64), 64, finite=True
    )
    x, y = (int(v) for v in lm[0, 0].round())
    assert w[0, 0, y, x] == pytest.approx(3.0, abs=0.05)
    assert w[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-3)
    logits = torch.zeros(1, 1, 64, 64)
    logits[..., y - 2 : y + 3, x - 2 : x + 3] = -5.0  # wrong only in the eye
    uniform = weighted_bce(logits, 1.0, torch.ones_like(w))
    weighted = weighted_bce(logits, 1.0, w)
    assert weighted > uniform  # errors in a primary region cost more


def test_generator_starts_as_identity_and_learns():
    g = RestorationGenerator(8, 1, 2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(g(x), x)
    out = g(x)
    (out - x.flip(-1)).abs().mean().backward()
    assert g.tail.weight.grad is not None and g.tail.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ the trainer


def _state(ck: dict) -> dict[str, torch.Tensor]:
    out = {f"D.{k}": v for k, v in ck["D"].items()}
    out.update({f"G.{k}": v for k, v in ck["G"].items()})
    out.update({f"D_ema.{k}": v for k, v in ck["D_ema"].items()})
    for name in ("opt_d", "opt_g"):
        for pid, st in ck[name]["state"].items():
            for k, v in st.items():
                out[f"{name}.{pid}.{k}"] = torch.as_tensor(v)
    return out


@pytest.mark.slow
def test_resume_after_crash_matches_an_uninterrupted_run(tmp_path):
    faces = tiny_faces(5)
    full = tmp_path / "full"
    train(tiny_config(), full, faces=faces, val_faces=[])
    crashed = tmp_path / "crashed"
    with pytest.raises(SimulatedCrash):
        train(tiny_config(), crashed, faces=faces, val_faces=[], crash_at_step=3)
    ck = load_checkpoint(crashed / "ckpt" / "last.pt")
    assert ck["step"] == 2  # the crash lost less than one checkpoint interval
    train(tiny_config(), crashed, faces=faces, val_faces=[], resume=True)
    a = load_checkpoint(full / "ckpt" / "last.pt")
    b = load_checkpoint(crashed / "ckpt" / "last.pt")
    assert a["step"] == b["step"] == 6
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys() and len(sa) > 50
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"resumed run differs in {diff[:5]}"
    # ... and training really moved the parameters
    assert not torch.equal(
        a["D"]["decoder256.0.conv2.weight"],
        IFQACNN(0.05, 96).state_dict()["decoder256.0.conv2.weight"],
    )
    assert sorted(p.name for p in (crashed / "ckpt").iterdir()) == ["last.pt"]  # no temp files
    log = (crashed / "train.log").read_text()
    assert "resumed from" in log and "D acc real px" in log
    # the exported discriminator loads strictly into the architecture
    from ifqa_loss.weights import read_state_dict

    net = IFQACNN(0.05, 96)
    net.load_state_dict(read_state_dict(crashed / "discriminator.safetensors"), strict=True)


def test_different_seeds_give_different_runs(tmp_path):
    faces = tiny_faces(5)
    train(tiny_config(steps=2), tmp_path / "a", faces=faces, val_faces=[])
    train(tiny_config(steps=2, seed=4), tmp_path / "b", faces=faces, val_faces=[])
    a = load_checkpoint(tmp_path / "a" / "ckpt" / "last.pt")["D"]
    b = load_checkpoint(tmp_path / "b" / "ckpt" / "last.pt")["D"]
    assert not torch.equal(a["encoder128.conv1.weight"], b["encoder128.conv1.weight"])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.pt"
    atomic_torch_save({"step": 1}, path)

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:  # the temporary file, half written
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the old checkpoint survived intact
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    data = tmp_path / "faces"
    data.mkdir()
    for i in range(6):
        img = (synthetic_face(128, i) * 255).round().astype(np.uint8)
        cv2.imwrite(str(data / f"{i:02d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cfg = tiny_config(steps=4, ckpt_every=4).to_dict()
    cfg["data"]["root"] = str(data)
    cfg["data"]["val"] = ["05.png"]
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("IFQA_FACES_DIR", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "ifqa_loss.train",
        "--config",
        str(cfg_path),
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["last.pt"]
    ck = load_checkpoint(out / "ckpt" / "last.pt")
    assert ck["step"] == 4 and ck["world_size"] == 2
    log = (out / "train.log").read_text()
    assert log.count("step 4/4 |") == 1  # rank 0 alone writes the log
    assert "world 2" in log
    assert (out / "discriminator.safetensors").is_file()
    import json

    split = json.loads((out / "split.json").read_text())
    assert all("05.png" not in p for p in split["train"])  # held-out face never trained on


# ------------------------------------------------------------------- the validation protocol


class _SharpnessD(Discriminator):
    """A hand-made 'discriminator': realness grows with local gradient energy."""

    native_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(40.0))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(1, keepdim=True)
        e = (g[..., 1:, :-1] - g[..., :-1, :-1]).abs() + (g[..., :-1, 1:] - g[..., :-1, :-1]).abs()
        e = torch.nn.functional.pad(e, (0, 1, 0, 1))
        return self.gain * e - 1.0


def test_evaluate_protocol_with_a_known_scorer():
    faces = [torch.from_numpy(synthetic_face(256, i).transpose(2, 0, 1).copy()) for i in range(3)]
    blur = [f for f in FAMILIES if f.name == "blur"]
    res = evaluate(_SharpnessD(), faces, families=blur)
    fam = res["families"]["blur"]
    assert res["n_faces"] == 3 and res["size"] == 512
    assert fam["pair_accuracy"] == 1.0 and fam["wins"] == 3
    assert -1.0 <= fam["spearman_mean"] <= -0.9 and fam["spearman_pooled"] < -0.5
    assert fam["level_means"][1:] == sorted(fam["level_means"][1:], reverse=True)
    assert fam["level_means"][0] > fam["level_means"][3]  # clean above the test strength
    assert res["auc"] == 1.0  # every clean face above every face blurred at the test strength
    assert "AUC 1.0000" in format_table(res)
    assert meets_targets(res)
    bad = {"families": {"blur": {**fam, "pair_accuracy": 0.5}}}
    assert not meets_targets(bad)


# ------------------------------------------------------------------------ the bundled model


def test_bundled_model_is_small_and_registered():
    from ifqa_loss.models.registry import get_model_config
    from ifqa_loss.weights import load_discriminator, sha256sum

    assert BUNDLED.is_file(), "ifqa_loss/bundled/ifqa-lite.safetensors is missing"
    assert BUNDLED.stat().st_size < 20 * 2**20
    cfg = get_model_config("ifqa-lite")
    assert cfg.bundled and cfg.weight_file == BUNDLED.name
    if cfg.sha256:
        assert sha256sum(BUNDLED) == cfg.sha256
    d = load_discriminator("ifqa-lite", weights=BUNDLED)
    x = torch.rand(1, 3, cfg.native_size, cfg.native_size) * 2 - 1
    m = d(x)
    assert m.shape == (1, 1, cfg.native_size, cfg.native_size) and 0 <= m.min() <= m.max() <= 1


def _astronaut_face(size: int = 256) -> np.ndarray:
    """skimage's astronaut photo aligned to the FFHQ 5-point template (hand-placed points)."""
    skdata = pytest.importorskip("skimage.data")
    img = skdata.astronaut()
    src = np.array(
        [[203.8, 102.5], [246.3, 103.0], [225.0, 125.0], [203.8, 141.3], [243.8, 141.3]], np.float32
    )
    dst = template_landmarks(size, 1)[0].numpy().astype(np.float32)
    m, _ = cv2.estimateAffinePartial2D(src, dst)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def _shared_face(size: int = 512) -> np.ndarray:
    root = faces_dir()
    if root is None:
        pytest.skip("face images not found: set IFQA_FACES_DIR or provide ../shared/data/faces")
    cfg = load_config("lite_cpu")
    _, val = split_faces(root, cfg.data)  # a held-out face: never trained on
    x = load_face(val[1], size)
    return (x.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("source", ["astronaut", "held-out"])
def test_heatmap_is_lower_where_the_eyes_were_blurred(source):
    from ifqa_loss.metric import IFQAMetric

    if not BUNDLED.is_file():
        pytest.skip("bundled weights missing")
    rgb = _astronaut_face(256) if source == "astronaut" else _shared_face(512)
    s = rgb.shape[0]
    img = rgb.astype(np.float32) / 255
    eyes = face_region_masks(None, s, ("eyes",))[0, 0].numpy()
    sel = (eyes > 0.2).astype(np.float32)[..., None]
    blurred = plain.gaussian_blur(img, 3.0 * s / 512 * 2)
    degraded = sel * blurred + (1 - sel) * img
    metric = IFQAMetric(model="ifqa-lite", weights=BUNDLED, device="cpu")
    x = torch.from_numpy(np.stack([img, degraded]).transpose(0, 3, 1, 2).copy())
    maps = metric.maps(x)[:, 0]
    n = maps.shape[-1]
    inside = face_region_masks(None, n, ("eyes",))[0, 0] > 0.5
    outside = face_region_masks(None, n, ("face",))[0, 0] > 0.5
    outside &= face_region_masks(None, n, ("eyes",))[0, 0] < 0.05
    drop = maps[0] - maps[1]  # clean map minus degraded map
    drop_in, drop_out = drop[inside].mean().item(), drop[outside].mean().item()
    # the map falls where the face was degraded, and much more there than elsewhere (the
    # bundled model: about 2.5x for both faces; benchmarks/heatmap_locality.py measures it
    # over every held-out face, weights/MODEL_CARD.md gives the figures)
    assert drop_in > 0.05, (drop_in, drop_out)
    assert drop_in > 2 * drop_out, (drop_in, drop_out)
    # and inside the degraded region it is lower than on the untouched rest of the face
    assert maps[1][inside].mean() < maps[1][outside].mean()


@pytest.mark.slow
def test_validate_main_prints_a_table_and_json(tmp_path, capsys):
    import json

    from ifqa_loss.cli.train import validate_main

    root = faces_dir()
    if root is None:
        pytest.skip("face images not found: set IFQA_FACES_DIR or provide ../shared/data/faces")
    if not BUNDLED.is_file():
        pytest.skip("bundled weights missing")
    out = tmp_path / "v.json"
    argv = ["--data-root", str(root), "--weights", str(BUNDLED), "--limit", "2", "--quick"]
    assert validate_main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ifqa-lite" in text and "clean>degraded" in text and "held-out faces" in text
    res = json.loads(out.read_text())
    fams = {"blur", "downup", "noise", "jpeg", "unsharp"}
    assert res["n_faces"] == 2 and set(res["families"]) == fams
    assert all(0.0 <= f["pair_accuracy"] <= 1.0 for f in res["families"].values())
    # the degenerate family runs by default; --families picks, and refuses typos
    deg = res["degenerate"]
    assert deg["n"] > 50 and 0 <= deg["above"] <= deg["n"] and len(deg["clean_scores"]) == 2
    assert "degenerate:" in text
    assert validate_main([*argv, "--families", "blur,degnerate"]) == 2
    assert "unknown ['degnerate']" in capsys.readouterr().err
    assert validate_main([*argv, "--families", "blur", "--json", str(out)]) == 0
    assert set(json.loads(out.read_text())["families"]) == {"blur"}
    assert "degenerate" not in json.loads(out.read_text())


def test_cli_reports_bad_configs(tmp_path, capsys):
    from ifqa_loss.cli.train import train_main

    assert train_main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  stepz: 3\n")
    assert train_main(["--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_max_psnr_redraws_invisible_degradations():
    from ifqa_loss.train.data import psnr

    cfg = tiny_config()
    noise_only = {
        "single_op_prob": 1.0,
        "single_op_weights": [0.0, 0.0, 1.0, 0.0],
        "noise_sigma": [0.5, 8.0],
        "gray_prob": 0.0,
        "color_jitter_prob": 0.0,
    }
    loose_cfg = DegradationConfig(**{**cfg.degradation.__dict__, **noise_only})
    strict_cfg = DegradationConfig(**{**loose_cfg.__dict__, "max_psnr": 40.0, "max_tries": 50})
    faces = tiny_faces(3)

    def values(deg):
        s = FaceStream(faces, cfg.data, deg, 96, seed=2)
        return [
            psnr(it["real"] / 2 + 0.5, it["degraded"] / 2 + 0.5)
            for it in map(s.__getitem__, range(30))
        ]

    loose, strict = values(loose_cfg), values(strict_cfg)
    assert max(loose) > 40.0 and min(loose) < 40.0  # without the rule, some are nearly invisible
    assert max(strict) <= 40.0


def test_visibility_weights_only_changed_pixels():
    from ifqa_loss.train.fpr import visibility

    real = torch.rand(1, 3, 32, 32) * 2 - 1
    fake = real.clone()
    assert torch.equal(visibility(fake, real, 4 / 255, 0.05), torch.full((1, 1, 32, 32), 0.05))
    fake[..., 10:20, 10:20] += 0.5  # a visible change in one patch
    v = visibility(fake, real, 4 / 255, 0.05)
    assert v[0, 0, 15, 15] == 1.0 and v[0, 0, 0, 0] == 0.05 and v[0, 0, 30, 30] == 0.05


def test_augmentation_is_seeded_and_keeps_shape_and_range():
    from ifqa_loss.train.config import DataConfig
    from ifqa_loss.train.data import augment

    face = torch.from_numpy(synthetic_face(64, 3).transpose(2, 0, 1).copy())
    cfg = DataConfig(aug_prob=1.0)
    a = augment(face, cfg, np.random.default_rng(1))
    b = augment(face, cfg, np.random.default_rng(1))
    c = augment(face, cfg, np.random.default_rng(2))
    assert a.shape == face.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, face)


def test_crop_handles_an_empty_batch():
    # loss.mix_fraction 0 leaves no region-mixed samples to crop (this used to raise).
    from ifqa_loss.train.trainer import _crop

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    offs = torch.tensor([[1, 2], [3, 0]])
    got = _crop(x, offs, 4)
    assert got.shape == (2, 3, 4, 4)
    assert torch.equal(got[1], x[1, :, 3:7, 0:4])
    assert _crop(x[:0], offs[:0], 4).shape == (0, 3, 4, 4)


def test_region_mix_joins_at_mix_start(tmp_path):
    # loss.mix_start 0.5 of 6 steps: no region-mixed samples in steps 1-3, then half the batch.
    cfg = tiny_config(steps=6, crop_size=0)
    cfg = config_from_dict({**cfg.to_dict(), "loss": {**cfg.loss.__dict__, "mix_start": 0.5}})
    train(cfg, tmp_path / "r", faces=tiny_faces(5), val_faces=[])
    mix_losses = [
        float(re.search(r"mix ([0-9.]+) rank", line).group(1))
        for line in (tmp_path / "r" / "train.log").read_text().splitlines()
        if re.search(r"step \d+/6 \|", line)
    ]
    assert len(mix_losses) == 6
    assert mix_losses[:3] == [0.0, 0.0, 0.0]
    assert all(v > 0 for v in mix_losses[3:])
    with pytest.raises(ValueError, match="mix_start"):
        config_from_dict({**cfg.to_dict(), "loss": {**cfg.loss.__dict__, "mix_start": 1.0}})


def test_paired_rank_loss_ranks_each_face_above_its_own_fake():
    from ifqa_loss.train.fpr import paired_rank_loss

    real = torch.zeros(2, 1, 4, 4)
    fake = torch.zeros(2, 1, 4, 4)
    real[0] += 2.0  # pair 0 ranked right by 2; pair 1 tied
    w = torch.ones(2, 1, 4, 4)
    want = (F.softplus(torch.tensor(-2.0)) + F.softplus(torch.tensor(0.0))) / 2
    assert torch.allclose(paired_rank_loss(real, fake, w), want)
    # only the pairing matters: the same logits in other slots give another loss
    assert not torch.allclose(paired_rank_loss(real, fake.flip(0) + real.flip(0), w), want)
    # pixels of weight zero do not count
    w0 = w.clone()
    w0[..., :2] = 0
    fake2 = fake.clone()
    fake2[..., :2] += 100.0
    assert torch.allclose(paired_rank_loss(real, fake2, w0), want)
    # the gradient raises real scores and lowers fake ones
    r, f = real.clone().requires_grad_(), fake.clone().requires_grad_()
    paired_rank_loss(r, f, w).backward()
    assert (r.grad < 0).all() and (f.grad > 0).all()


def test_split_faces_excludes_patterns_from_both_sides(tmp_path):
    from ifqa_loss.train.config import DataConfig

    for sub, names in {"photos": ["a", "b", "c"], "art": ["p", "q"]}.items():
        (tmp_path / sub).mkdir()
        for n in names:
            cv2.imwrite(str(tmp_path / sub / f"{n}.png"), np.zeros((8, 8, 3), np.uint8))
    cfg = DataConfig(train=["**/*.png"], val=["photos/c.png"], exclude=["art/q.png"])
    train, val = split_faces(tmp_path, cfg)
    assert [p.relative_to(tmp_path).as_posix() for p in train] == [
        "art/p.png",
        "photos/a.png",
        "photos/b.png",
    ]
    assert val == [tmp_path / "photos/c.png"]
    bad = DataConfig(train=["**/*.png"], val=["art/q.png"], exclude=["art/*.png"])
    with pytest.raises(ValueError, match="also match data.exclude"):
        split_faces(tmp_path, bad)


def test_training_faces_take_the_same_image_extensions_as_scoring(tmp_path):
    from ifqa_loss._io import IMAGE_EXTS, list_images

    for ext in (".png", ".JPG", ".tif", ".tiff", ".webp"):  # listing goes by name only
        (tmp_path / f"face{ext}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "face.npy").write_bytes(b"")
    found = [p.name for p in list_images(tmp_path, ["*"])]
    assert found == sorted(["face.png", "face.JPG", "face.tif", "face.tiff", "face.webp"])
    assert all(Path(n).suffix.lower() in IMAGE_EXTS for n in found)


def test_region_rank_loss_asks_the_map_to_follow_the_swap():
    from ifqa_loss.train.fpr import region_rank_loss

    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:5] = 1.0  # real eyes pasted on the fake face
    w = torch.ones_like(target)
    real = torch.full_like(target, 2.0)
    fake = torch.full_like(target, -2.0)
    local = mix(real, fake, target)  # a map that follows the swap
    whole = torch.full_like(target, -2.0)  # a map that judges the whole (mostly fake) image
    sp = F.softplus
    assert torch.allclose(region_rank_loss(real, fake, local, target, w), sp(torch.tensor(-4.0)))
    want = (sp(torch.tensor(-4.0)) + sp(torch.tensor(0.0))) / 2
    assert torch.allclose(region_rank_loss(real, fake, whole, target, w), want)
    # a crop that misses the regions keeps only the term it has pixels for
    none = torch.zeros_like(target)
    assert torch.allclose(region_rank_loss(real, fake, whole, none, w), sp(torch.tensor(-4.0)))
    # the gradient lowers the mixed map on its fake pixels and raises it on its real ones
    m = whole.clone().requires_grad_()
    region_rank_loss(real, fake, m, target, w).backward()
    assert (m.grad[:, :, 2:5, 2:5] < 0).all() and (m.grad[:, :, 6:, 6:] >= 0).all()


def test_photos_add_the_faces_dlib_aligns_and_skip_small_faces_and_held_out_files(tmp_path):
    import importlib.util

    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("skimage") is None:
        pytest.skip('needs dlib and scikit-image: pip install "ifqa-loss[align,examples]"')
    from skimage.data import astronaut

    from ifqa_loss.train.config import DataConfig
    from ifqa_loss.train.data import photo_faces_uint8, photo_files

    (tmp_path / "photos").mkdir()
    for name in ("a.png", "held.png", "drawing.png"):
        cv2.imwrite(str(tmp_path / "photos" / name), astronaut()[..., ::-1])
    data = DataConfig(photos=["photos/*"], val=["photos/held.png"], exclude=["photos/drawing*"])
    files = photo_files(tmp_path, data)
    assert [p.name for p in files] == ["a.png"]
    # dlib also finds a "face" on the astronaut's suit, at a confidence of about 0.1
    assert len(photo_faces_uint8(files, 256, max_upscale=2.0, min_confidence=0.0)) == 2
    faces = photo_faces_uint8(files, 256, max_upscale=2.0)
    assert len(faces) == 1 and faces[0].shape == (3, 256, 256) and faces[0].dtype == torch.uint8
    assert faces[0].float().std() > 20  # a face, not a flat patch
    # her face spans about 170 px: a 1024 crop would enlarge it about 6 times
    assert photo_faces_uint8(files, 1024, max_upscale=2.0) == []
    assert photo_files(tmp_path, DataConfig()) == []
