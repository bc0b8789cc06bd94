"""Train a restorer with L1 + a co-trained IFQA discriminator (plain PyTorch, CPU friendly).

python examples/adversarial_restorer.py [--steps 20] [--export d.safetensors]
"""

import argparse

import torch
import torch.nn.functional as F

from ifqa_loss import FPR_WEIGHTS, IFQAAdversarialLoss
from ifqa_loss.audit.restorer import TinyRestorer
from ifqa_loss.samples import astronaut_face

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--steps", type=int, default=20)
p.add_argument(
    "--warmup", type=int, default=10, help="discriminator steps first (the recipe and default: 200)"
)
p.add_argument("--export", help="write the trained discriminator here (safetensors)")
args = p.parse_args()

torch.manual_seed(0)
gt = astronaut_face(128)  # (1, 3, 128, 128) in [0, 1]; use your (degraded, clean) pairs
lq = F.interpolate(F.avg_pool2d(gt, 4), scale_factor=4, mode="bilinear")
restorer = TinyRestorer()
opt = torch.optim.Adam(restorer.parameters(), lr=5e-4)
# A warm start from IFQA, with its own Adam inside at the restorer's learning rate; its term
# is 0 until the discriminator has taken --warmup steps.
adv = IFQAAdversarialLoss(resize=False, region_weights=FPR_WEIGHTS, lr=opt, warmup=args.warmup)

for step in range(args.steps):
    out = restorer(lq)
    loss = F.l1_loss(out, gt) + adv(out, gt)  # restorer's step first ...
    opt.zero_grad()
    loss.backward()
    opt.step()
    stats = adv.discriminator_step(gt, out.detach())  # ... then the discriminator's
    print(f"step {step}: loss {loss.item():.4f}, D accuracy on fakes {stats['acc_fake']:.2f}")

if args.export:
    adv.export(args.export)  # IFQAMetric(weights=path) scores with it
