"""Scoring throughput and loss-step cost, side by side with the original-style baseline.

Baseline ("original-style"): one image at a time, OpenCV resize + normalise on the CPU, fp32,
``.item()`` per image: what the original release's script does. Ours: ``IFQAMetric`` batched,
resize on the device, bf16 autocast on CUDA (fp32 on CPU), optionally ``torch.compile``.
Weights are random (speed does not depend on them). Prints a table and writes JSON.

    python benchmarks/bench.py                       # CPU, small counts
    python benchmarks/bench.py --device cuda --json results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def original_style(net, images: list[np.ndarray], size: int, device: str) -> float:
    """img/s of the one-at-a-time loop (cv2 resize on CPU, fp32, .item() per image)."""
    import cv2

    interp = cv2.INTER_LINEAR if size == 256 else cv2.INTER_CUBIC
    scores = []
    _sync(device)
    t = time.perf_counter()
    with torch.no_grad():
        for img in images:
            x = cv2.resize(img, (size, size), interpolation=interp).astype(np.float32)
            x = torch.from_numpy(x / 127.5 - 1.0).permute(2, 0, 1)[None].to(device)
            scores.append(net(x).mean().item())
    _sync(device)
    return len(images) / (time.perf_counter() - t)


def batched(metric, images: torch.Tensor, batch: int, device: str, repeats: int) -> float:
    """img/s of IFQAMetric on uint8 images already decoded (moved to the device per batch)."""
    metric.batch_size = batch
    n = 0
    metric(images[:batch].to(device).float() / 255)  # warm-up (and compile)
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        for chunk in images.split(batch):
            metric(chunk.to(device, non_blocking=True).float() / 255)
            n += chunk.shape[0]
    _sync(device)
    return n / (time.perf_counter() - t)


def make_loss_step(crit_or_net, x: torch.Tensor, naive: bool, amp: bool):
    """One loss step as a function: forward (bf16 autocast on ``x``'s device when ``amp``) and
    gradient to the input ``x`` (B, 3, H, W). ``naive``: ``crit_or_net`` is a bare network,
    given ``x`` resized to its ``native_size`` in [-1, 1]."""
    import torch.nn.functional as F

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            if naive:
                s = crit_or_net.native_size
                y = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True)
                loss = 1 - crit_or_net(y * 2 - 1).float().mean()
            else:
                loss = crit_or_net(x)
        loss.backward()
        x.grad = None

    return step


def loss_step(crit_or_net, x: torch.Tensor, device: str, naive: bool, amp: bool, iters: int):
    """Median seconds and peak memory of forward + gradient to the input."""
    step = make_loss_step(crit_or_net, x, naive, amp)
    step()
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return sorted(times)[len(times) // 2], peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile")
    p.add_argument("--skip-vit", action="store_true")
    a = p.parse_args()
    dev = a.device
    gpu = dev.startswith("cuda")
    from ifqa_loss import IFQALoss, IFQAMetric
    from ifqa_loss.models import IFQACNN, IFQAViT

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    info = {
        "device": torch.cuda.get_device_name(0) if gpu else platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    rows: list[tuple[str, str, float]] = []

    # ---- CNN scoring at 256x256
    n_orig, n_batch, batch, reps = (200, 2048, 64, 3) if gpu else (6, 16, 8, 1)
    imgs = rng.integers(0, 255, (max(n_orig, n_batch), 256, 256, 3), dtype=np.uint8)
    cnn = IFQACNN().to(dev).eval()
    for prm in cnn.parameters():
        prm.requires_grad_(False)
    rows.append(
        ("ifqa scoring", "original-style loop", original_style(cnn, list(imgs[:n_orig]), 256, dev))
    )
    timgs = torch.from_numpy(imgs[:n_batch]).permute(0, 3, 1, 2).contiguous()
    if gpu:
        timgs = timgs.pin_memory()
    fp32 = IFQAMetric(model=IFQACNN(), device=dev)
    fp32.discriminator.load_state_dict(cnn.state_dict())
    rows.append(
        ("ifqa scoring", f"IFQAMetric fp32 b{batch}", batched(fp32, timgs, batch, dev, reps))
    )
    # agreement of the fused fp32 path (frozen network) with the layer-by-layer original order
    with torch.no_grad():
        xa = timgs[:4].to(dev).float() / 255
        ref = cnn(xa * 2 - 1).mean((1, 2, 3))  # not frozen with freeze(): layer by layer
        info["fused_max_abs_score_diff"] = (fp32(xa) - ref).abs().max().item()
    if gpu:
        m = IFQAMetric(model=fp32.discriminator, device=dev, amp="bf16")
        rows.append(
            ("ifqa scoring", f"IFQAMetric bf16 b{batch}", batched(m, timgs, batch, dev, reps))
        )
        if a.compile:
            t = time.perf_counter()
            mc = IFQAMetric(model=fp32.discriminator, device=dev, amp="bf16", compile=True)
            mc(timgs[:batch].to(dev).float() / 255)
            info["compile_s"] = round(time.perf_counter() - t, 1)
            rows.append(
                (
                    "ifqa scoring",
                    f"IFQAMetric bf16+compile b{batch}",
                    batched(mc, timgs, batch, dev, reps),
                )
            )
        # agreement of the fast path with fp32
        x = timgs[:64].to(dev).float() / 255
        info["bf16_max_abs_score_diff"] = (m(x) - fp32(x)).abs().max().item()

    # ---- loss step
    b, iters = (16, 10) if gpu else (2, 2)
    x = torch.rand(b, 3, 512, 512, device=dev, requires_grad=True)
    naive_net = IFQACNN().to(dev)  # parameters require grad: backward computes weight grads
    crit = IFQALoss(model=IFQACNN(), device=dev)
    for name, fn, naive, amp in (
        ("naive: parameters require grad, fp32", naive_net, True, False),
        ("IFQALoss fp32", crit, False, False),
    ) + ((("IFQALoss bf16 autocast", crit, False, True),) if gpu else ()):
        t, peak = loss_step(fn, x, dev, naive, amp, iters)
        rows.append(
            (f"loss step B={b} 512px", name + (f" (peak {peak:.2f} GiB)" if peak else ""), t * 1e3)
        )
    del naive_net, crit

    # ---- ifqa++ scoring at 224
    if not a.skip_vit:
        n_orig, n_batch, batch = (50, 512, 32) if gpu else (2, 4, 4)
        vit = IFQAViT().to(dev).eval()
        for prm in vit.parameters():
            prm.requires_grad_(False)
        rows.append(
            (
                "ifqa++ scoring",
                "original-style loop",
                original_style(vit, list(imgs[:n_orig]), 224, dev),
            )
        )
        m = IFQAMetric(model=vit, device=dev, amp="bf16" if gpu else None)
        rows.append(
            (
                "ifqa++ scoring",
                f"IFQAMetric {'bf16' if gpu else 'fp32'} b{batch}",
                batched(m, timgs[:n_batch], batch, dev, 1),
            )
        )

    print(f"# {info}")
    print(f"{'what':<22} {'how':<52} {'figure':>12}")
    for what, how, v in rows:
        unit = "ms" if what.startswith("loss") else "img/s"
        print(f"{what:<22} {how:<52} {v:>9.1f} {unit}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
