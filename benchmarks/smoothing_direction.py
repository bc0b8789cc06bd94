"""Does smoothing the no-reference loss over input noise point its gradient to the clean face?

The loss averaged over Gaussian noise added to its input, ``mean_k IFQALoss()(x + sigma n_k)``
(randomised smoothing), at each of the audit's degraded faces, measured with the audit's own
descent-direction measure (cosine and sign agreement with ``clean - degraded``). Faces: the
default audit's 16 held-out faces under its four degradations (needs ``../shared`` or
``--data-root``). The noise draws are the same for every face and sigma (seed 0).

    python benchmarks/smoothing_direction.py                       # ifqa-lite, ~2 min, 1 thread
    python benchmarks/smoothing_direction.py --sigmas 0 0.1 --samples 4
"""

from __future__ import annotations

import argparse
import time

import torch

from ifqa_loss import IFQALoss
from ifqa_loss.audit import AuditOptions, descent_direction, make_cases, prepare_faces
from ifqa_loss.cli.audit import default_split, load_faces


def smoothed(criterion: torch.nn.Module, sigma: float, samples: int):
    """``(x, clean) -> loss`` averaged over ``samples`` noise draws of std ``sigma``."""

    def objective(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        total = x.new_zeros(())
        for _ in range(samples):
            total = total + criterion(x + sigma * torch.randn(x.shape, generator=gen)).mean()
        return total / samples

    return objective


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ifqa-lite")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.03, 0.1, 0.2])
    p.add_argument("--samples", type=int, default=8, help="noise draws per sigma > 0")
    p.add_argument("--data-root", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    opts = AuditOptions()
    _, held_out = default_split(args.data_root)
    cases = make_cases(prepare_faces(load_faces(held_out, opts.size), opts.size), opts)
    criterion = IFQALoss(model=args.model)
    print(f"{args.model}, {len(cases.degraded)} degraded faces at {opts.size} px")
    for sigma in args.sigmas:
        k = args.samples if sigma > 0 else 1
        t = time.time()
        r = descent_direction(smoothed(criterion, sigma, k), cases.degraded, cases.clean, batch=4)
        print(
            f"sigma {sigma:.2f} ({k} draws): cos {r['cos'].mean():+.3f}, "
            f"sign agreement {r['sign'].nanmean() * 100:.1f}%  ({time.time() - t:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
