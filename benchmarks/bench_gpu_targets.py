"""Every GPU speed target in one run, each figure beside its baseline.

One H100 or H200, a few minutes, random weights (speed does not depend on them):

- loss step, ``ifqa`` CNN, B=16 at 512x512 (resized to 256), forward + gradient to the input:
  the naive baseline (fp32, parameters requiring gradients) against ``IFQALoss()`` in fp32 and
  under bf16 autocast (target <= 12 ms), with the value check at every call
  (``check_every=1``, the old default), and the compiled switches
  ``IFQALoss(compile=True)`` and ``compile="reduce-overhead"`` (targets <= 6 ms, <= 2 GiB);
  median time, peak memory (the CUDA allocator's, weights included) and host synchronisations
  per step (``torch.cuda.set_sync_debug_mode``);
- ``ifqa`` scoring at 256x256: the original-style loop (one image at a time, OpenCV resize,
  ``.item()``) against ``IFQAMetric`` fp32, bf16, and bf16 with ``compile=True`` at batch 64 and
  256 (target >= 6,000 img/s). Included: decoded uint8 images in pinned host memory copied to
  the device per batch, conversion to float, the metric's checks, the network and the mean;
  scores stay on the device (one synchronisation at the end); file decoding is not included;
- ``ifqa++`` scoring at 224: the loop against ``IFQAMetric`` bf16 and bf16 compiled
  (target >= 1,500 img/s).

Prints a markdown table and writes JSON (after each section, so a cut-off run keeps what it
measured). ``--smoke`` runs the same code on the CPU at tiny sizes (small networks, the
``eager`` compile backend, fp32 scoring) to show the script works; its figures mean nothing.

    python benchmarks/bench_gpu_targets.py --json gpu_targets.json   # the GPU run
    python benchmarks/bench_gpu_targets.py --smoke --json smoke.json  # CPU check of the script
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import _sync, batched, loss_step, make_loss_step, original_style


@dataclass
class Size:
    """What one run measures: full size on a GPU, tiny for ``--smoke``."""

    cnn_width: float = 1.0
    cnn_native: int = 256
    loss_batch: int = 16
    loss_side: int = 512
    loss_iters: int = 20
    score_images: int = 2048
    score_repeats: int = 3
    loop_images: int = 200
    batches: tuple[int, ...] = (64, 256)
    vit: dict = field(default_factory=dict)
    vit_loop_images: int = 50
    vit_images: int = 512
    vit_batches: tuple[int, int] = (32, 64)


SMOKE = Size(
    cnn_width=0.125,
    cnn_native=64,
    loss_batch=2,
    loss_side=128,
    loss_iters=2,
    score_images=16,
    score_repeats=1,
    loop_images=4,
    batches=(8, 16),
    vit={
        "img_size": 56,
        "dim": 64,
        "depth": 2,
        "heads": 4,
        "decoder_dim": 32,
        "decoder_depth": 1,
        "decoder_heads": 4,
    },
    vit_loop_images=2,
    vit_images=8,
    vit_batches=(4, 8),
)


@dataclass
class Row:
    section: str
    variant: str
    value: float | None = None  # ms for loss steps, img/s for scoring
    unit: str = ""
    baseline: bool = False
    peak_gib: float | None = None
    syncs_per_step: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    error: str = ""


def count_syncs(step: Callable[[], None], device: str, n: int = 3) -> float | None:
    """Host synchronisations per call of ``step`` (CUDA's sync debug mode warns at each)."""
    if not device.startswith("cuda"):
        return None
    _sync(device)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(n):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    _sync(device)
    return sum("synchroniz" in str(w.message) for w in seen) / n


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def guarded(rows: list[Row], section: str, variant: str, fn: Callable[[], Row]) -> None:
    """Run one measurement; a failure becomes a row with its error, and the run goes on."""
    try:
        rows.append(fn())
    except Exception as e:  # a benchmark reports every failure and keeps measuring
        traceback.print_exc(file=sys.stderr)
        rows.append(Row(section, variant, error=f"{type(e).__name__}: {e}"[:300]))


def cnn(size: Size, device: str):
    from ifqa_loss.models import IFQACNN

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs
        return IFQACNN(width=size.cnn_width, native_size=size.cnn_native)


def loss_section(a, size: Size, rows: list[Row], compile_opts: Callable[[str | None], dict]):
    from ifqa_loss import IFQALoss

    dev, amp = a.device, True
    sec = f"loss step B={size.loss_batch} {size.loss_side}px"
    x = torch.rand(size.loss_batch, 3, size.loss_side, size.loss_side, device=dev)
    x.requires_grad_(True)
    frozen = cnn(size, dev)  # shared by every IFQALoss variant (frozen by the first)

    def measure(variant, crit_or_net, naive, use_amp, target="", limit=None, mem=None):
        step = make_loss_step(crit_or_net, x, naive, use_amp)
        t0 = time.perf_counter()
        step()  # the first call: compiles where asked; the loss's checked call
        _sync(dev)
        first_s = time.perf_counter() - t0
        # bench.py's timing: one more warm-up, then the median of the timed steps
        median_s, peak = loss_step(crit_or_net, x, dev, naive, use_amp, size.loss_iters)
        ms = median_s * 1e3
        syncs = count_syncs(step, dev)
        met = None
        if limit is not None and dev.startswith("cuda"):
            met = ms <= limit and (mem is None or (peak is not None and peak <= mem))
        note = f"first call {first_s:.1f} s" if first_s > 2 else ""
        return Row(sec, variant, ms, "ms", naive, peak, syncs, target, met, note)

    def naive_row():
        net = cnn(size, dev)  # parameters require grad: backward computes weight gradients
        return measure("naive: parameters require grad, fp32", net, True, False)

    guarded(rows, sec, "naive", naive_row)
    reset_peak(dev)
    variants = [
        ("IFQALoss() fp32", {}, False, "", None, None),
        ("IFQALoss() bf16 autocast", {}, amp, "<= 12 ms", 12.0, None),
        ("IFQALoss(check_every=1) bf16 autocast", {"check_every": 1}, amp, "", None, None),
    ]
    if not a.skip_compile:
        variants += [
            (
                f"IFQALoss(compile={'True' if not a.smoke else 'eager'}) bf16 autocast",
                {"compile": compile_opts(None)},
                amp,
                "<= 6 ms, <= 2 GiB",
                6.0,
                2.0,
            ),
            (
                "IFQALoss(compile='reduce-overhead') bf16 autocast",
                {"compile": compile_opts("reduce-overhead")},
                amp,
                "<= 6 ms, <= 2 GiB",
                6.0,
                2.0,
            ),
        ]
    for name, kw, use_amp, target, limit, mem in variants:
        if a.smoke and "reduce-overhead" in name:
            continue  # CUDA graphs: nothing to show on the CPU
        reset_peak(dev)
        torch._dynamo.reset()
        crit = IFQALoss(model=frozen, **kw)
        guarded(
            rows,
            sec,
            name,
            lambda n=name, c=crit, u=use_amp, t=target, lim=limit, m=mem: measure(
                n, c, False, u, t, lim, m
            ),
        )
        del crit


def host_images(seed: int, n: int, n_tensor: int, s: int, pin: bool):
    """Decoded test images on the host: ``n`` (H, W, 3) uint8 arrays for the loop and the first
    ``n_tensor`` as a (N, 3, s, s) uint8 tensor, pinned for the GPU when ``pin``."""
    imgs = np.random.default_rng(seed).integers(0, 255, (n, s, s, 3), np.uint8)
    timgs = torch.from_numpy(imgs[:n_tensor]).permute(0, 3, 1, 2).contiguous()
    return imgs, timgs.pin_memory() if pin else timgs


def score_section(a, size: Size, rows: list[Row], compile_opts: Callable[[str | None], dict]):
    from ifqa_loss import IFQAMetric

    dev = a.device
    gpu = dev.startswith("cuda")
    amp = "bf16" if gpu else None  # IFQAMetric offers autocast on CUDA only
    s = size.cnn_native
    sec = f"ifqa scoring {s}px"
    imgs, timgs = host_images(
        0, max(size.score_images, size.loop_images), size.score_images, s, gpu
    )
    net = cnn(size, dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def loop():
        v = original_style(net, list(imgs[: size.loop_images]), s, dev)
        return Row(sec, "original-style loop (fp32, batch 1, .item())", v, "img/s", True)

    guarded(rows, sec, "loop", loop)
    b0, b1 = size.batches
    tag = "bf16" if amp else "fp32 (CPU)"
    variants = [
        (f"IFQAMetric fp32 b{b0}", {}, b0, ""),
        (f"IFQAMetric {tag} b{b0}", {"amp": amp}, b0, ""),
    ]
    if not a.skip_compile:
        variants += [
            (f"IFQAMetric {tag} compile b{bs}", {"amp": amp, "compile": compile_opts(None)}, bs, t)
            for bs, t in ((b0, ">= 6,000 img/s"), (b1, ">= 6,000 img/s"))
        ]
    ref = {}
    for name, kw, bs, target in variants:

        def one(name=name, kw=kw, bs=bs, target=target):
            reset_peak(dev)
            torch._dynamo.reset()
            m = IFQAMetric(model=net, device=dev, batch_size=bs, **kw)
            t0 = time.perf_counter()
            v = batched(m, timgs, bs, dev, size.score_repeats)
            wall = time.perf_counter() - t0
            with torch.no_grad():  # the compiled batch shape: no recompilation
                scores = m(timgs[:bs].to(dev).float() / 255)[:8]
            ref.setdefault("fp32", scores)
            diff = (scores - ref["fp32"]).abs().max().item()
            met = v >= 6000 if (target and gpu) else None
            note = f"largest score difference to fp32 {diff:.1e}; {wall:.1f} s with warm-up"
            return Row(sec, name, v, "img/s", False, peak_gib(dev), None, target, met, note)

        guarded(rows, sec, name, one)


def vit_section(a, size: Size, rows: list[Row], compile_opts: Callable[[str | None], dict]):
    from ifqa_loss import IFQAMetric
    from ifqa_loss.models import IFQAViT

    dev = a.device
    gpu = dev.startswith("cuda")
    amp = "bf16" if gpu else None
    torch.manual_seed(0)
    with torch.device(dev):
        vit = IFQAViT(**size.vit).eval()
    for p in vit.parameters():
        p.requires_grad_(False)
    s = vit.native_size
    sec = f"ifqa++ scoring {s}px"
    imgs, timgs = host_images(1, size.vit_images, size.vit_images, s, gpu)

    def loop():
        v = original_style(vit, list(imgs[: size.vit_loop_images]), s, dev)
        return Row(sec, "original-style loop (fp32, batch 1, .item())", v, "img/s", True)

    guarded(rows, sec, "loop", loop)
    b0, b1 = size.vit_batches
    tag = "bf16" if amp else "fp32 (CPU)"
    variants = [(f"IFQAMetric {tag} b{b0}", {"amp": amp}, b0)]
    if not a.skip_compile:
        variants.append((f"IFQAMetric {tag} compile b{b1}", {"amp": amp, "compile": {}}, b1))
    for name, kw, bs in variants:
        if "compile" in kw:
            kw = {**kw, "compile": compile_opts(None)}

        def one(name=name, kw=kw, bs=bs):
            reset_peak(dev)
            torch._dynamo.reset()
            m = IFQAMetric(model=vit, device=dev, batch_size=bs, **kw)
            v = batched(m, timgs, bs, dev, 1)
            met = v >= 1500 if gpu else None
            return Row(sec, name, v, "img/s", False, peak_gib(dev), None, ">= 1,500 img/s", met)

        guarded(rows, sec, name, one)


def markdown(rows: list[Row]) -> str:
    lines = [
        "| what | variant | figure | vs baseline | peak GiB | syncs/step | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base: dict[str, float] = {}
    for r in rows:
        if r.baseline and r.value:
            base[r.section] = r.value
    for r in rows:
        if r.error:
            fig, rel = f"failed: {r.error}", ""
        else:
            fig = f"{r.value:,.1f} {r.unit}"
            b = base.get(r.section)
            if b and not r.baseline:
                rel = f"{(b / r.value if r.unit == 'ms' else r.value / b):.2f}x"
            else:
                rel = "baseline" if r.baseline else ""
        peak = "" if r.peak_gib is None else f"{r.peak_gib:.2f}"
        syncs = "" if r.syncs_per_step is None else f"{r.syncs_per_step:g}"
        met = {None: "", True: "yes", False: "**no**"}[r.met]
        variant = r.variant + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {r.section} | {variant} | {fig} | {rel} | {peak} | {syncs} | {r.target} | {met} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="default: cuda if available (cpu for --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: the script runs")
    p.add_argument("--json", default=None, help="write the rows and run details here")
    p.add_argument("--skip-compile", action="store_true", help="leave out the compiled variants")
    p.add_argument("--skip-vit", action="store_true", help="leave out ifqa++")
    p.add_argument("--sections", default="loss,score,vit", help="comma-separated subset")
    a = p.parse_args(argv)
    if a.device is None:
        a.device = "cpu" if a.smoke or not torch.cuda.is_available() else "cuda"
    size = SMOKE if a.smoke else Size()
    if not a.smoke and not a.device.startswith("cuda"):
        print("full size is meant for a GPU; pass --smoke on the CPU", file=sys.stderr)
        return 2

    def compile_opts(mode: str | None) -> dict:
        if a.smoke:  # dynamo capture and the script's wiring, without minutes of C++ builds
            return {"backend": "eager"}
        return {"mode": mode} if mode else {}

    gpu = a.device.startswith("cuda")
    info = {
        "device": torch.cuda.get_device_name(0) if gpu else platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "smoke": a.smoke,
        "size": asdict(size),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    rows: list[Row] = []
    sections = {"loss": loss_section, "score": score_section, "vit": vit_section}
    wanted = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in sections]
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {list(sections)}")
    t0 = time.perf_counter()
    for name in wanted:
        if name == "vit" and a.skip_vit:
            continue
        ts = time.perf_counter()
        sections[name](a, size, rows, compile_opts)
        info[f"{name}_s"] = round(time.perf_counter() - ts, 1)
        print(f"# {name}: {info[f'{name}_s']} s", file=sys.stderr, flush=True)
        if a.json:
            out = {"info": info, "rows": [asdict(r) for r in rows]}
            Path(a.json).write_text(json.dumps(out, indent=1))
    info["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"# {info['device']}, torch {info['torch']}, {info['date']}, {info['total_s']} s")
    if a.smoke:
        print("# SMOKE RUN: tiny networks on the CPU; the figures mean nothing")
    print(markdown(rows))
    print(
        "\nLoss steps: median ms, forward + input gradient; peak: the CUDA allocator's peak over "
        "the timed steps (weights included); syncs/step: host synchronisations counted by "
        "torch.cuda.set_sync_debug_mode over 3 steps after the checked first call (CUDA only). "
        "Scoring: img/s of pinned uint8 host images copied per batch, checked and scored."
    )
    if a.json:
        out = {"info": info, "rows": [asdict(r) for r in rows]}
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
