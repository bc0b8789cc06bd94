"""Shared fixtures: formula-made golden weights, random checkpoints, the shared face folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ifqa_loss.models import IFQACNN, IFQAViT
from ifqa_loss.models.base import Discriminator

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never download weights: ``IFQA_OFFLINE`` refuses it (subprocesses inherit it), and
    no mirror from the environment is used. tests/test_download.py lifts it under its own
    loopback server."""
    monkeypatch.setenv("IFQA_OFFLINE", "1")
    monkeypatch.delenv("IFQA_WEIGHTS_URL", raising=False)


def shared_faces_dir() -> Path | None:
    """``$IFQA_FACES_DIR`` or ``<repo>/../shared/data/faces``, if it exists."""
    env = os.environ.get("IFQA_FACES_DIR")
    p = Path(env) if env else REPO.parent / "shared" / "data" / "faces"
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    p = shared_faces_dir()
    if p is None:
        pytest.skip(
            "real face images not found: set IFQA_FACES_DIR or place the shared data at "
            "../shared/data/faces next to the repository"
        )
    return p


def formula_state_dict(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Deterministic weights from a formula, in the network's key order.

    Each tensor's values are a sine hash of the value's index and the tensor's position; biases
    are small, 1-D tensors (norm scales) near 1, and kernels uniform with fan-in scaling. The
    golden values in tests/test_models.py are the original IFQA release's networks' outputs
    with these weights on :func:`golden_input`.
    """
    out = {}
    for k, (name, t) in enumerate(net.state_dict().items()):
        n = t.numel()
        i = np.arange(1, n + 1, dtype=np.float64)
        h = np.sin(12.9898 * i + 78.233 * (k + 1)) * 43758.5453
        s = ((h - np.floor(h)) * 2 - 1).astype(np.float32)
        if name.endswith("bias"):
            v = 0.01 * s
        elif t.dim() == 1:
            v = 1 + 0.1 * s
        else:
            v = s * np.float32(np.sqrt(3 / (n / t.shape[0])))
        out[name] = torch.from_numpy(v.reshape(tuple(t.shape)).astype(np.float32))
    return out


def golden_input(size: int) -> torch.Tensor:
    j = np.arange(3 * size * size, dtype=np.float64)
    return torch.from_numpy(np.sin(0.001 * j).astype(np.float32)).reshape(1, 3, size, size)


@pytest.fixture(scope="session")
def golden_cnn_sd() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        net = IFQACNN()
    return formula_state_dict(net)


@pytest.fixture(scope="session")
def golden_vit_sd() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        net = IFQAViT()
    return formula_state_dict(net)


@pytest.fixture(scope="session")
def cnn_ckpt(tmp_path_factory) -> Path:
    """A randomly initialised full-size ``ifqa`` saved as the original ``{'D': state_dict}``."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "IFQA_Metric.pth"
    torch.save({"D": IFQACNN().state_dict()}, path)
    return path


class BrightnessD(Discriminator):
    """A constructed discriminator: logit = 8 * (mean channel value in [-1,1]) - 0.

    Bright pixels are "real", dark pixels "fake", so tests can place fakeness exactly.
    """

    def __init__(self, native_size: int = 64) -> None:
        super().__init__()
        self.native_size = native_size
        self.scale = torch.nn.Parameter(torch.tensor(8.0))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.mean(1, keepdim=True)


@pytest.fixture
def tiny_cnn() -> IFQACNN:
    """A small ifqa-architecture network (width 1/8, 64 px) for fast behaviour tests."""
    torch.manual_seed(0)
    return IFQACNN(width=0.125, native_size=64)
