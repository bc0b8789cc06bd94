"""The torchmetrics wrapper: accumulation, reset, regions, and DDP synchronisation (gloo)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("torchmetrics")

from ifqa_loss import IFQAMetric
from ifqa_loss.integrations.torchmetrics import IFQAScore


def images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 96, 96, generator=g)


def test_accumulates_over_batches_and_resets():
    m = IFQAScore(model="ifqa-lite")
    a, b = images(3, 0), images(2, 1)
    m.update(a)
    m.update(b)
    expected = IFQAMetric(model="ifqa-lite", device="cpu")(torch.cat([a, b])).mean()
    assert m.compute().item() == pytest.approx(expected.item(), abs=1e-6)
    m.reset()
    m.update(b)
    assert m.compute().item() == pytest.approx(
        IFQAMetric(model="ifqa-lite", device="cpu")(b).mean().item(), abs=1e-6
    )
    m.reset()
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="before any update"):
        m.compute()


def test_regions_and_no_discriminator_in_state():
    m = IFQAScore(model="ifqa-lite", regions=True, input_range=(-1, 1))
    x = images(2, 3) * 2 - 1
    m.update(x)
    out = m.compute()
    ref = IFQAMetric(model="ifqa-lite", device="cpu", input_range=(-1, 1)).region_scores(x)
    for name in ("overall", "eyes", "nose", "mouth", "rest"):
        assert out[name].item() == pytest.approx(ref[name].mean().item(), abs=1e-6)
    assert list(m.parameters()) == []
    assert all("weight" not in k for k in m.state_dict())


def _ddp_worker(rank: int, world: int, init: str, queue) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        m = IFQAScore(model="ifqa-lite")
        m.update(images(2 + rank, 10 + rank))  # ranks see different numbers of images
        queue.put((rank, m.compute().item()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_synchronises_across_ranks(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_ddp_worker, args=(2, init, queue), nprocs=2, join=True)
    results = dict(queue.get(timeout=60) for _ in range(2))
    ref = IFQAMetric(model="ifqa-lite", device="cpu")
    expected = torch.cat([ref(images(2, 10)), ref(images(3, 11))]).mean().item()
    assert results[0] == pytest.approx(expected, abs=1e-6)
    assert results[1] == pytest.approx(expected, abs=1e-6)
