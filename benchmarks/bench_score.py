"""Files-to-scores throughput: ``ifqa score``'s pipeline against the original one-at-a-time loop.

Both sides read the same image files from disk and produce the same scores:

- baseline ("original-style"): for each file, ``cv2.imread`` -> RGB -> albumentations
  ``Resize`` + ``Normalize`` -> ``(1, 3, S, S)`` -> network -> ``.item()``, fp32, as the original
  release's ``test.py`` does;
- ours: ``IFQAMetric.score_files`` (what ``ifqa score`` runs): decoding in DataLoader workers,
  batches through the network.

Weights: the registered model's own when found, else random (speed does not depend on them).
The two sides run alternately, ``--rounds`` times each, in one process; the median is reported.

    python benchmarks/bench_score.py --faces ../shared/data/faces --count 200
    python benchmarks/bench_score.py --model ifqa-lite --json score.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

EXTS = {".png", ".jpg", ".jpeg"}


def find_files(root: Path, count: int) -> list[str]:
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in EXTS and p.is_file())
    if not files:
        raise SystemExit(f"no images under {root}")
    return [files[i % len(files)] for i in range(count)]


def build(model: str, device: str):
    from ifqa_loss import IFQAMetric, create_model

    try:
        metric = IFQAMetric(model=model, device=device)
        origin = metric.weights_origin
    except FileNotFoundError:  # the original weights are not bundled: random ones
        net = create_model(model).eval().to(device)
        metric = IFQAMetric(model=net, device=device)
        origin = "random (weights not found)"
    return metric, origin


def original_loop(net, cfg, files: list[str], device: str) -> list[float]:
    import cv2

    from ifqa_loss.preprocess import official_array_tensor

    scores = []
    with torch.no_grad():
        for f in files:
            rgb = cv2.cvtColor(cv2.imread(f), cv2.COLOR_BGR2RGB)
            x = official_array_tensor(rgb, cfg)[None].to(device)
            scores.append(net(x).mean().item())
    return scores


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faces", default="../shared/data/faces", help="folder searched recursively")
    p.add_argument("--count", type=int, default=200, help="files per round (repeated if fewer)")
    p.add_argument("--model", default="ifqa")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="default: ifqa score's default")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from ifqa_loss.files.scoring import default_workers

    if args.threads:
        torch.set_num_threads(args.threads)
    workers = default_workers() if args.workers is None else args.workers
    files = find_files(Path(args.faces), args.count)
    metric, origin = build(args.model, args.device)
    metric.batch_size = args.batch_size
    net = metric.discriminator

    original_loop(net, metric.config, files[:2], args.device)  # warm-up both paths
    metric.score_files(files[:2], workers=0)
    base_t, ours_t = [], []
    max_diff = 0.0
    for _ in range(args.rounds):
        t = time.perf_counter()
        ref = original_loop(net, metric.config, files, args.device)
        base_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        recs = metric.score_files(files, workers=workers)
        ours_t.append(time.perf_counter() - t)
        max_diff = max(max_diff, max(abs(r["score"] - s) for r, s in zip(recs, ref, strict=True)))
    base, ours = statistics.median(base_t), statistics.median(ours_t)
    result = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": metric.model_name,
        "weights": origin,
        "files": len(files),
        "unique_files": len(set(files)),
        "batch_size": args.batch_size,
        "workers": workers,
        "rounds": args.rounds,
        "original_img_s": len(files) / base,
        "ours_img_s": len(files) / ours,
        "speedup": base / ours,
        "max_abs_score_diff": max_diff,
        "python": sys.version.split()[0],
    }
    print(f"# {result['device']} torch {result['torch']} threads {result['threads']}")
    print(f"# model {result['model']} ({origin}), {len(files)} files, {args.rounds} rounds")
    print("| pipeline | img/s | median s |")
    print("| --- | --- | --- |")
    print(f"| original-style loop (one file at a time) | {len(files) / base:.1f} | {base:.2f} |")
    print(
        f"| ifqa score (batch {args.batch_size}, {workers} workers) | "
        f"{len(files) / ours:.1f} | {ours:.2f} |"
    )
    print(f"speed-up {base / ours:.2f}x; largest score difference {max_diff:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
