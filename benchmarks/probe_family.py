"""Can a discriminator of a given width learn one degradation family at all? A quick probe.

Trains an ``IFQACNN`` alone (no generator, no region mix, no augmentation) with per-pixel BCE on
clean faces against the same faces degraded by single operations of the chosen families (the
trainer's ``FaceStream`` and degradation ranges), then scores the held-out faces with
``ifqa validate``'s protocol (``ifqa_loss.train.validation.evaluate``). Used to tell "too
small to see it" from "the full recipe dilutes it" (``docs/training.md``, lessons).

    python benchmarks/probe_family.py --width 0.25 --families jpeg --steps 300
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from ifqa_loss.faces.images import load_face, split_faces
from ifqa_loss.models import IFQACNN
from ifqa_loss.train.config import load_config
from ifqa_loss.train.data import FaceStream, load_faces_uint8
from ifqa_loss.train.validation import evaluate, format_table

FAMILIES = ("blur", "down", "noise", "jpeg")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--native", type=int, default=256)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--families", default="jpeg", help=f"comma-separated, from {FAMILIES}")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--faces", default=os.environ.get("IFQA_FACES_DIR", "../shared/data/faces"))
    a = p.parse_args()
    fams = a.families.split(",")
    if unknown := [f for f in fams if f not in FAMILIES]:
        p.error(f"unknown families {unknown}; choose from {FAMILIES}")

    torch.manual_seed(0)
    cfg = load_config("lite_cpu")
    cfg.degradation.single_op_prob = 1.0
    cfg.degradation.single_op_weights = [float(f in fams) for f in FAMILIES]
    train, val = split_faces(a.faces, cfg.data)
    stream = FaceStream(load_faces_uint8(train, 512), cfg.data, cfg.degradation, a.native, seed=0)
    net = IFQACNN(a.width, a.native)
    opt = torch.optim.Adam(net.parameters(), a.lr, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(
        stream, batch_size=8, sampler=range(a.steps * 8), num_workers=1
    )
    t0 = time.time()
    for i, b in enumerate(loader):
        o = torch.randint(0, a.native - a.crop + 1, (2,))
        sl = (..., slice(o[0], o[0] + a.crop), slice(o[1], o[1] + a.crop))
        logits = net.forward_logits(torch.cat([b["real"][sl], b["degraded"][sl]]))
        target = torch.cat([torch.ones_like(logits[:8]), torch.zeros_like(logits[8:])])
        loss = F.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 50 == 0 or i == a.steps - 1:
            print(f"step {i}: BCE {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)

    faces = [load_face(path, 512) for path in val]
    res = evaluate(net.freeze(), faces)
    print(f"trained on {fams}, width {a.width}, {a.steps} steps")
    print(format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
