"""Loss step (forward + gradient to the input) of IFQALoss against the naive baseline.

Baseline: the same ``ifqa`` network in fp32 with its parameters requiring gradients (what a
loss wrapper that forgets to freeze the discriminator does: backward also computes every
weight gradient). Ours: ``IFQALoss`` (frozen discriminator: gradients reach the input only).

Each variant runs in its own subprocess so its peak memory (max RSS on CPU, the CUDA allocator's
peak on GPU) is its own. Weights are random: speed does not depend on them.

    python benchmarks/bench_loss_step.py                    # CPU: B=2, 512x512
    python benchmarks/bench_loss_step.py --device cuda --batch 16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_variant(variant: str, device: str, batch: int, size: int, iters: int) -> dict:
    import torch

    from ifqa_loss import IFQALoss
    from ifqa_loss.models import IFQACNN

    torch.manual_seed(0)
    net = IFQACNN()
    x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    rss_loaded = _rss_mib()  # interpreter + torch + weights + input: what every variant holds
    if variant == "ours":
        crit = IFQALoss(model=net, check_inputs=True)
        crit = crit.to(device)

        def step() -> torch.Tensor:
            loss = crit(x)
            loss.backward()
            return loss

    else:  # naive: parameters require grad, plain fp32
        net = net.to(device).train(False)

        def step() -> torch.Tensor:
            y = torch.nn.functional.interpolate(
                x, size=(256, 256), mode="bilinear", antialias=True, align_corners=False
            )
            loss = 1 - net(y * 2 - 1).mean()
            loss.backward()
            return loss

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    x.grad = None
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss_mib()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
        x.grad = None
    times.sort()
    out = {
        "variant": variant,
        "median_s": times[len(times) // 2],
        "min_s": times[0],
        "iters": iters,
    }
    if device.startswith("cuda"):
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        # Peak resident memory of this process, minus what it held before the timed steps.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_rss_mib"] = peak
        out["rss_before_mib"] = rss0
        out["rss_loaded_mib"] = rss_loaded
        # What the loss step itself needs at its peak: gradients, saved activations, buffers.
        out["step_mem_mib"] = peak - rss_loaded
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.variant:
        import torch

        if a.threads:
            torch.set_num_threads(a.threads)
        print(json.dumps(run_variant(a.variant, a.device, a.batch, a.size, a.iters)))
        return 0

    import torch

    results = {}
    for variant in ("naive", "ours"):
        cmd = [sys.executable, __file__, "--variant", variant, "--device", a.device]
        cmd += ["--batch", str(a.batch), "--size", str(a.size), "--iters", str(a.iters)]
        if a.threads:
            cmd += ["--threads", str(a.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[variant] = json.loads(res.stdout.strip().splitlines()[-1])
    n, o = results["naive"], results["ours"]
    mem_key = "peak_mem_gib" if "peak_mem_gib" in n else "peak_rss_mib"
    unit = "GiB" if mem_key == "peak_mem_gib" else "MiB (peak RSS)"
    info = {
        "device": torch.cuda.get_device_name(0)
        if a.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": a.threads or torch.get_num_threads(),
        "batch": a.batch,
        "size": a.size,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"loss step, ifqa CNN, B={a.batch} at {a.size}x{a.size} -> 256, fp32, {info}")
    step_col = "step_mem_mib" in n
    print(
        f"{'variant':<40} {'median s':>9} {'min s':>8} {'peak ' + unit:>22}"
        + (f" {'step MiB':>9}" if step_col else "")
    )
    labels = {
        "naive": "parameters require grad (naive)",
        "ours": "IFQALoss (frozen D, default)",
    }
    for k in ("naive", "ours"):
        r = results[k]
        line = f"{labels[k]:<40} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {r[mem_key]:>22.1f}"
        print(line + (f" {r['step_mem_mib']:>9.1f}" if step_col else ""))
    speedup = n["median_s"] / o["median_s"]
    mem_ratio = o[mem_key] / n[mem_key]
    print(f"speed-up {speedup:.2f}x; peak memory ratio ours/naive {mem_ratio:.2f}")
    if step_col:
        step_ratio = o["step_mem_mib"] / n["step_mem_mib"]
        print(f"loss-step memory (peak RSS - RSS once loaded) ratio ours/naive {step_ratio:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "results": results, "speedup": speedup}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
