"""The naive GAN loop a new user writes, with ``IFQAAdversarialLoss``'s defaults and variants.

Each branch starts from the restorer study's L1 warm-up of the seed (``UNetRestorer``, 400 L1
steps; read from, or written to, the study folder's ``warmup/``) and takes ``--steps`` steps of
the documented two-step loop, on the study's training batches (128 px crops, batch 4), Adam at
5e-4::

    out = net(lq)
    loss = F.l1_loss(out, gt) + adv(out, gt)
    opt.zero_grad(); loss.backward(); opt.step()
    adv.discriminator_step(gt, out.detach())

Branches (all with ``IFQAAdversarialLoss``'s other defaults: the bundled model, weight 0.01, the
discriminator at its native 256 px, no region weights):

- ``l1``: no term;
- ``no-warmup``: ``IFQAAdversarialLoss(warmup=0)``, the defaults before the warm-up;
- ``defaults``: ``IFQAAdversarialLoss()``: the term waits for 200 discriminator steps;
- ``recipe``: ``IFQAAdversarialLoss(lr=opt)`` and the restorer judged by a moving average of
  its weights (decay 0.995), the parts of the study's recipe a user adds.

The restorers are judged on the study's held-out cases (16 faces x 4 blind degradations, 256
px) with the study's measures and its dark-edge count; one JSON per branch and seed in
``OUT/gan_defaults/``, and a table.

    python benchmarks/gan_defaults.py --out study --steps 400 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the study and the outline count

from dark_outlines import dark_edges
from restorer_study import (
    Measures,
    Settings,
    UNetRestorer,
    held_out_cases,
    load_split,
    pinned,
    restore,
    summary,
    training_batch,
    warmed_up,
)

from ifqa_loss import IFQAAdversarialLoss
from ifqa_loss._io import atomic_write_text, strict_json
from ifqa_loss.masks import face_region_masks
from ifqa_loss.train.ema import ema_update

BRANCHES = ("l1", "no-warmup", "defaults", "recipe")
LR = 5e-4
EMA = 0.995


def make_term(branch: str, opt: torch.optim.Optimizer) -> IFQAAdversarialLoss | None:
    if branch == "l1":
        return None
    if branch == "no-warmup":
        return IFQAAdversarialLoss(warmup=0)
    if branch == "defaults":
        return IFQAAdversarialLoss()
    return IFQAAdversarialLoss(lr=opt)


def train(branch: str, seed: int, steps: int, faces: torch.Tensor, out: Path, st: Settings):
    """The branch's restorer after ``steps`` steps (its moving average for ``recipe``)."""
    net = UNetRestorer()
    net.load_state_dict(warmed_up(out, faces, seed, st))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    torch.manual_seed(seed)
    adv = make_term(branch, opt)
    avg = copy.deepcopy(net) if branch == "recipe" else None
    fooled = []
    for step in range(steps):
        lq, gt, _ = training_batch(faces, seed, st.warmup + step, st.batch, st.crop)
        out = net(lq)
        loss = F.l1_loss(out, gt) + (adv(out, gt) if adv is not None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if avg is not None:
            ema_update(avg, net, EMA)
        if adv is not None:
            fooled.append(adv.discriminator_step(gt, out.detach())["acc_fake"])
    return (avg if avg is not None else net).eval(), fooled


def main(argv: list[str] | None = None) -> int:
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--out", default="study", help="the restorer study's folder")
    a.add_argument("--steps", type=int, default=400)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--only", help="comma-separated branches (default: all)")
    args = a.parse_args(argv)
    torch.set_num_threads(args.threads)
    out, st = Path(args.out), Settings()
    train_faces, held = load_split(None, st.size)
    lq, gt = held_out_cases(held)
    measures = Measures(pinned(out))
    regions = face_region_masks(None, st.size, ("eyes", "nose", "mouth"))[0].sum(0) > 0.5
    folder = out / "gan_defaults"
    folder.mkdir(parents=True, exist_ok=True)
    for branch in args.only.split(",") if args.only else BRANCHES:
        t0 = time.time()
        net, fooled = train(branch, args.seed, args.steps, train_faces, out, st)
        x = restore(net, lq)
        row = summary(measures(x, gt), [], 0)
        inside, outside = dark_edges((x * 255).round().to(torch.uint8), _u8(gt), regions)
        row |= {
            "dark_edges_regions": float(inside.mean()),
            "dark_edges_rest": float(outside.mean()),
        }
        if fooled:
            row["d_acc_fake_last100"] = sum(fooled[-100:]) / len(fooled[-100:])
        row["seconds"] = round(time.time() - t0, 1)
        name = f"{branch}_s{args.seed}_{args.steps}"
        atomic_write_text(folder / f"{name}.json", strict_json(row))
        torch.save(_u8(x), folder / f"{name}.pt")
        print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    return 0


def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


if __name__ == "__main__":
    sys.exit(main())
