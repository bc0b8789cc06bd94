"""Seconds per face of each judge of ``ifqa audit``, beside the audit's own measures.

The judges of other families (:mod:`ifqa_loss.audit.judges`) run on the CPU, one image at a
time for NIQE and BRISQUE (NumPy/SciPy) and batched for piq's. The baseline, measured in the
same run on the same faces: the measures every audit already takes, PSNR + SSIM (kornia) and
the ``ifqa-judge`` model. Faces: the first 8 of the shared folder's ``gpen/ffhq-10``, each with a
blurred copy (full-reference judges compare it with the clean face). The median of 3 rounds.

    OMP_NUM_THREADS=1 python benchmarks/judge_timing.py --threads 1 --size 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def faces(size: int, n: int) -> torch.Tensor:
    from ifqa_loss.faces.images import load_face

    root = Path(os.environ.get("IFQA_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
    paths = sorted((root / "gpen" / "ffhq-10").glob("*.png"))[:n]
    if not paths:
        sys.exit(f"no faces under {root}/gpen/ffhq-10: set IFQA_FACES_DIR")
    return torch.stack([load_face(p, size) for p in paths])


def per_face(fn, images: torch.Tensor, clean: torch.Tensor, rounds: int) -> tuple[float, float]:
    """Medians over ``rounds`` of the wall and the CPU seconds per image of ``fn(images, clean)``.

    The CPU time of this process is what a machine shared with other jobs does not inflate
    (with one thread, it is the wall time of an idle machine).
    """
    fn(images[:1], clean[:1])  # warm-up: first-use costs are reported apart
    wall, cpu = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        fn(images, clean)
        wall.append((time.perf_counter() - t) / len(images))
        cpu.append((time.process_time() - c) / len(images))
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import kornia

    from ifqa_loss.audit import judges as J
    from ifqa_loss.audit.measures import psnr_ssim
    from ifqa_loss.metric import IFQAMetric

    clean = faces(args.size, args.n)
    blurred = kornia.filters.gaussian_blur2d(clean, (9, 9), (1.5, 1.5))
    metric = IFQAMetric(model="ifqa-judge", device="cpu", batch_size=8)
    rows = [
        ("PSNR + SSIM (kornia)", "baseline", per_face(psnr_ssim, blurred, clean, args.rounds)),
        ("ifqa-judge", "baseline", per_face(lambda x, c: metric(x), blurred, clean, args.rounds)),
    ]
    for name in J.JUDGE_NAMES:
        t = time.perf_counter()
        try:
            judge = J.get_judge(name)
        except ImportError as e:
            rows.append((name, f"not installed ({e})", (float("nan"),) * 2))
            continue
        first = time.perf_counter() - t
        sec = per_face(judge, blurred, clean, args.rounds)
        rows.append((judge.label, f"first use {first:.1f} s", sec))
    print(f"{args.n} faces at {args.size} px, {args.threads} thread(s), torch {torch.__version__}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'measure':<22} {'CPU ms/face':>12} {'wall ms/face':>13}  note")
    for label, note, (wall, cpu) in rows:
        print(f"{label:<22} {cpu * 1000:>12.1f} {wall * 1000:>13.1f}  {note}")


if __name__ == "__main__":
    main()
