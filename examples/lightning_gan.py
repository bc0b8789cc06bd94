"""Train a restorer with L1 + a co-trained IFQA discriminator in Lightning (manual optimisation).

python examples/lightning_gan.py [--steps 20] [--data DIR] [--accelerator gpu] [--export D]

Needs ``pip install "ifqa-loss[lightning]"`` and, for the bundled sample face (no ``--data``),
scikit-image (``[examples]``). 20 steps at 128 px: about 2 CPU-minutes; unchanged on a GPU.
"""

import argparse
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ifqa_loss import FPR_WEIGHTS, IFQAAdversarialLoss
from ifqa_loss.audit.restorer import TinyRestorer
from ifqa_loss.integrations.torchmetrics import IFQAScore


class DegradedFaces(Dataset):
    """(lq, gt) pairs: aligned clean faces (tensors or files), degraded on the fly (a random
    down/up-sampling blur and noise, drawn from the item's index: the same item, the same pair)."""

    def __init__(self, faces: list, length: int, size: int, seed: int) -> None:
        self.faces, self.length, self.size, self.seed = faces, length, size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        gt = self.faces[i % len(self.faces)]
        if not isinstance(gt, torch.Tensor):  # a file
            img = Image.open(gt).convert("RGB").resize((self.size, self.size), Image.BICUBIC)
            gt = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
        factor = int(torch.randint(2, 5, (1,), generator=g))
        lq = F.interpolate(F.avg_pool2d(gt[None], factor), size=gt.shape[-2:], mode="bilinear")[0]
        lq = lq + 0.05 * torch.rand(1, generator=g) * torch.randn(lq.shape, generator=g)
        return lq.clamp(0, 1), gt


LR = 5e-4  # the restorer's and the discriminator's: the recipe ties the two


class GANRestorer(L.LightningModule):
    def __init__(self, model: str = "auto", warmup: int = 200) -> None:
        super().__init__()
        self.automatic_optimization = False  # two optimizers, stepped in a set order
        self.restorer = TinyRestorer()
        # Starts from IFQA's weights; resize=False: runs at the crops' own size. Its term is 0
        # until the discriminator has taken `warmup` steps (200 is the default and the recipe).
        self.adv = IFQAAdversarialLoss(
            model, resize=False, region_weights=FPR_WEIGHTS, warmup=warmup
        )
        self.val_ifqa = IFQAScore(model)  # a frozen IFQA: never the discriminator being trained

    def configure_optimizers(self):
        # The restorer's optimizer holds the restorer alone: adv.parameters() are the
        # discriminator's and go to their own optimizer (adv's defaults: Adam, betas 0.9/0.99).
        opt_g = torch.optim.Adam(self.restorer.parameters(), lr=LR)
        opt_d = torch.optim.Adam(self.adv.parameters(), lr=LR, betas=(0.9, 0.99))
        return opt_g, opt_d

    def training_step(self, batch, batch_idx):
        lq, gt = batch
        opt_g, opt_d = self.optimizers()
        # 1. The restorer's step. adv(out, gt) sends no gradient to the discriminator.
        out = self.restorer(lq)
        l1, gan = F.l1_loss(out, gt), self.adv(out, gt)
        opt_g.zero_grad()
        self.manual_backward(l1 + gan)
        opt_g.step()
        # 2. Then the discriminator's, on the detached output (it changes the weights step 1's
        # backward needed). adv.d_loss + manual_backward + a Lightning optimizer, not
        # adv.discriminator_step, whose plain backward() and own Adam bypass the strategy and
        # precision plugins: under "16-mixed" its loss is not scaled (fp16 gradients underflow,
        # inf steps are not skipped); under DDP the reducer is not prepared for that backward,
        # so each rank keeps its own gradients and the discriminator copies drift apart.
        d_loss = self.adv.d_loss(gt, out.detach())
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        logs = {"l1": l1, "gan": gan, **self.adv.stats()}  # + d_loss, acc_real, acc_fake
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        lq, gt = batch
        out = self.restorer(lq).clamp(0, 1)
        self.val_ifqa.update(out)
        # The Metric object itself: Lightning calls compute() at the epoch's end, then reset().
        self.log_dict({"val/ifqa": self.val_ifqa, "val/l1": F.l1_loss(out, gt)}, prog_bar=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="training steps (one epoch)")
    p.add_argument("--data", help="a folder of aligned face images (default: the sample face)")
    p.add_argument("--size", type=int, default=128, help="crop side, a multiple of 32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--model", default="auto", help="IFQA model of the warm start and the metric")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="discriminator steps before its term reaches the restorer (default: 200, the "
        "recipe, or half of --steps when fewer)",
    )
    p.add_argument("--accelerator", default="auto", help="cpu, gpu, auto")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--out", default="lightning_logs", help="Lightning's logs and checkpoints")
    p.add_argument("--export", help="write the trained discriminator here (safetensors)")
    return p.parse_args(argv)


def load_faces(data: str | None, size: int) -> list:
    if data is None:
        from ifqa_loss.samples import astronaut_face

        return [astronaut_face(size)[0]]
    files = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in (".png", ".jpg"))
    if not files:
        raise SystemExit(f"no .png or .jpg images in {data}")
    return files


def fit(model: GANRestorer, args: argparse.Namespace) -> L.Trainer:
    faces = load_faces(args.data, args.size)
    val_faces, train_faces = faces[:4], faces[4:] or faces  # hold out 4 faces when there are more
    train = DegradedFaces(train_faces, args.steps * args.batch, args.size, seed=0)
    val = DegradedFaces(val_faces, 4, args.size, seed=1)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        # Each backward leaves the other network without gradients, which DDP must be told.
        strategy="ddp_find_unused_parameters_true" if args.devices > 1 else "auto",
        max_epochs=1,  # one epoch of --steps batches, then validation
        num_sanity_val_steps=0,
        log_every_n_steps=min(10, args.steps),
        default_root_dir=args.out,
    )
    trainer.fit(model, DataLoader(train, args.batch, shuffle=True), DataLoader(val, args.batch))
    return trainer


def main(argv=None) -> L.Trainer:
    args = parse_args(argv)
    torch.manual_seed(0)
    warmup = min(200, args.steps // 2) if args.warmup is None else args.warmup
    model = GANRestorer(args.model, warmup)
    trainer = fit(model, args)
    if trainer.is_global_zero:  # once, not on every DDP rank
        print({k: round(float(v), 4) for k, v in sorted(trainer.callback_metrics.items())})
        if args.export:  # IFQAMetric(weights=path) scores with it
            print("discriminator written to", model.adv.export(args.export))
    return trainer


if __name__ == "__main__":
    main()
