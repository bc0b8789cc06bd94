"""Checkpoint loading: formats, strictness, lookup, digests, corrupt and malicious files."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from ifqa_loss import CheckpointError, convert_checkpoint, find_weights, load_discriminator
from ifqa_loss.models import IFQACNN, IFQAViT
from ifqa_loss.weights import ENV_VAR, read_state_dict, sha256sum


def _same_params(net: torch.nn.Module, sd: dict) -> bool:
    return all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No weights anywhere: empty cwd, cache and bundled folder; no env var."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def test_original_format_loads_strictly(cnn_ckpt):
    sd = torch.load(cnn_ckpt, weights_only=True)["D"]
    net = load_discriminator("ifqa", weights=cnn_ckpt)
    assert _same_params(net, sd)
    assert net.model_name == "ifqa"
    assert net.weights_origin == str(cnn_ckpt.resolve())


@pytest.mark.slow
def test_original_format_vit_loads_strictly(tmp_path):
    torch.manual_seed(1)
    with torch.device("meta"):
        ref = IFQAViT()
    # Random values of the right shapes, created without initialising a 656.9 M network.
    sd = {k: torch.randn(v.shape) * 0.02 for k, v in ref.state_dict().items()}
    path = tmp_path / "IFQA++_Metric.pth"
    torch.save({"D": sd}, path)
    net = load_discriminator("ifqa++", weights=path)
    assert _same_params(net, sd)
    assert all(not p.requires_grad for p in net.parameters())
    with torch.no_grad():
        m = net(torch.zeros(1, 3, 224, 224))
    assert m.shape == (1, 1, 224, 224)


@pytest.mark.slow
def test_accepted_formats(tmp_path, cnn_ckpt):
    sd = torch.load(cnn_ckpt, weights_only=True)["D"]
    bare = tmp_path / "bare.pth"
    torch.save(sd, bare)
    prefixed = tmp_path / "ddp.pth"
    torch.save({"D": {f"module.{k}": v for k, v in sd.items()}}, prefixed)
    st = tmp_path / "w.safetensors"
    rc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ifqa_loss.cli",
            "convert",
            str(cnn_ckpt),
            str(st),
            "--model",
            "ifqa",
        ],
        capture_output=True,
        text=True,
    )
    assert rc.returncode == 0, rc.stderr
    assert "wrote" in rc.stdout
    for path in (bare, prefixed, st):
        assert _same_params(load_discriminator("ifqa", weights=path), sd), path
    assert _same_params(load_discriminator("ifqa", weights=sd), sd)  # in-memory state dict


def test_wrong_checkpoint_names_bad_keys(tmp_path, cnn_ckpt):
    sd = dict(torch.load(cnn_ckpt, weights_only=True)["D"])
    del sd["btn.2.conv1.weight"]
    sd["extra.head.weight"] = torch.zeros(3)
    sd["decoder16.conv2.weight"] = torch.zeros(7, 1024, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save({"D": sd}, bad)
    with pytest.raises(CheckpointError) as e:
        load_discriminator("ifqa", weights=bad)
    msg = str(e.value)
    assert str(bad) in msg
    assert "1 missing keys: btn.2.conv1.weight" in msg
    assert "1 unexpected keys: extra.head.weight" in msg
    assert "decoder16.conv2.weight (7, 1024, 3, 3) != expected (512, 1024, 3, 3)" in msg


def test_wrong_architecture(tmp_path):
    path = tmp_path / "small.pth"
    torch.save({"D": IFQACNN(width=0.25).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"small\.pth.*shape mismatches"):
        load_discriminator("ifqa", weights=path)
    vit_like = tmp_path / "vit.pth"
    torch.save({"D": {"cls_token": torch.zeros(1, 1, 1280)}}, vit_like)
    with pytest.raises(CheckpointError, match=r"122 missing keys.*1 unexpected keys: cls_token"):
        load_discriminator("ifqa", weights=vit_like)


def test_corrupt_and_truncated(tmp_path, cnn_ckpt):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*junk.pth"):
        load_discriminator("ifqa", weights=junk)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(cnn_ckpt.read_bytes()[:10_000_000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*cut.pth"):
        load_discriminator("ifqa", weights=cut)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_discriminator("ifqa", weights=bad_st)
    wrong = tmp_path / "wrong.pth"
    torch.save({"D": 3}, wrong)
    with pytest.raises(
        CheckpointError, match=r"wrong.pth has entries that are not tensors: \['D'\]"
    ):
        read_state_dict(wrong)
    empty = tmp_path / "empty.pth"
    torch.save([], empty)
    with pytest.raises(CheckpointError, match="empty.pth holds no state dict"):
        read_state_dict(empty)


class _Payload:
    """Unpickling this calls a function that writes a marker file: code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "IFQA_Metric.pth"
    with open(evil, "wb") as f:
        pickle.dump({"D": {"x": _Payload(str(marker))}}, f)
    # Sanity: plain pickle really would run it.
    with open(evil, "rb") as f:
        pickle.load(f)  # demonstrates the payload, in a temp dir
    assert marker.exists()
    marker.unlink()
    evil2 = tmp_path / "evil_torch.pth"
    torch.save({"D": {"x": _Payload(str(marker))}}, evil2)
    for path in (evil, evil2):
        with pytest.raises(CheckpointError, match="refused|cannot read"):
            load_discriminator("ifqa", weights=path)
        assert not marker.exists(), f"{path.name} ran code while loading"


def test_lookup_order_and_not_found(isolated, cnn_ckpt, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        find_weights("ifqa")
    msg = str(e.value)
    assert str(isolated / "work" / "weights" / "IFQA_Metric.pth") in msg
    assert str(isolated / "cache" / "ifqa_loss" / "IFQA_Metric.pth") in msg
    assert "1aHxF39Mdg4R2dFiF_yx8HsJHy9lJaEZP" in msg and "1yQ9n7oitvSQzkxwijGocpftW_SbHid7C" in msg

    cache = isolated / "cache" / "ifqa_loss"
    cache.mkdir(parents=True)
    (cache / "IFQA_Metric.pth").symlink_to(cnn_ckpt)
    assert find_weights("ifqa") == cache / "IFQA_Metric.pth"

    local = isolated / "work" / "weights"
    local.mkdir()
    (local / "IFQA_Metric.pth").symlink_to(cnn_ckpt)
    assert find_weights("ifqa").parent.name == "weights"  # ./weights wins over the cache

    env_dir = isolated / "envdir"
    env_dir.mkdir()
    (env_dir / "IFQA_Metric.pth").symlink_to(cnn_ckpt)
    monkeypatch.setenv(ENV_VAR, str(env_dir))
    assert find_weights("ifqa") == env_dir / "IFQA_Metric.pth"  # the env var wins
    monkeypatch.setenv(ENV_VAR, str(cnn_ckpt))
    assert find_weights("ifqa") == cnn_ckpt  # a file path works too
    assert load_discriminator("ifqa").weights_origin == str(cnn_ckpt.resolve())


def test_sha256(cnn_ckpt):
    digest = sha256sum(cnn_ckpt)
    assert load_discriminator("ifqa", weights=cnn_ckpt, sha256=digest)
    with pytest.raises(CheckpointError, match="sha256"):
        load_discriminator("ifqa", weights=cnn_ckpt, sha256="0" * 64)
    # verify=False skips the check
    assert load_discriminator("ifqa", weights=cnn_ckpt, sha256="0" * 64, verify=False)


def test_frozen_and_pinned(cnn_ckpt):
    net = load_discriminator("ifqa", weights=cnn_ckpt)
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    parent = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), net)
    parent.train()
    assert parent[0].training and not net.training
    net.to(torch.float64)
    assert next(net.parameters()).dtype == torch.float64


def test_convert_refuses_wrong_architecture(tmp_path):
    src = tmp_path / "small.pth"
    torch.save({"D": IFQACNN(width=0.25).state_dict()}, src)
    out = tmp_path / "out.safetensors"
    with pytest.raises(CheckpointError):
        convert_checkpoint(src, out, model="ifqa")
    assert not out.exists()
    convert_checkpoint(src, out)  # without --model any state dict converts
    assert read_state_dict(out).keys() == IFQACNN(width=0.25).state_dict().keys()
