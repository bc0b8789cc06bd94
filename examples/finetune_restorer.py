"""Fine-tune a small face restorer with L1 alone and with L1 + w * IFQALoss, side by side.

Plain PyTorch, no BasicSR. Both branches start from the same L1-pretrained weights, see the same
batches in the same order and differ only in the loss; at the end both are evaluated on faces
not used for training (PSNR against the clean face, and the IFQA score).

    python examples/finetune_restorer.py                     # scikit-image's astronaut face
    python examples/finetune_restorer.py --data my_faces/    # a folder of aligned face crops

What is held out:
- ``--data DIR``: the last 20% of the images (sorted by name, at least one) are never trained on.
- default (the astronaut, the one face the package may ship): there is a single face, so training
  uses random augmentations (flips, small shifts and zooms, colour jitter) of it, each with a
  fresh random degradation, and the test set is the un-augmented face under degradations drawn
  from a separate seed. Only the degradation samples are held out, not the identity: read the
  numbers as a demonstration of the mechanics, and use ``--data`` for a real comparison.

The IFQA score of the second branch is measured with the same discriminator it was trained
against, so it is not an independent judge of that branch; PSNR and your own eyes are.
Runs in a few minutes on a CPU with the defaults.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ifqa_loss import IFQALoss, IFQAMetric
from ifqa_loss.audit.restorer import TinyRestorer, fine_tune_pair, train_l1

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, downsample and back, noise, JPEG: HWC float32 RGB [0,1] -> same."""
    h, w = img.shape[:2]
    x = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 2.5))
    f = rng.uniform(2.0, 4.0)
    x = cv2.resize(x, (max(8, int(w / f)), max(8, int(h / f))), interpolation=cv2.INTER_AREA)
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    x = x + rng.normal(0.0, rng.uniform(0.005, 0.03), x.shape).astype(np.float32)
    x8 = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    _, buf = cv2.imencode(
        ".jpg", x8[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 80))]
    )
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0


def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip, small zoom/shift (keeps the face roughly aligned), brightness/contrast jitter."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    s = rng.uniform(0.95, 1.08)
    tx, ty = rng.uniform(-0.03, 0.03, 2) * w
    m = np.array([[s, 0, (1 - s) * w / 2 + tx], [0, s, (1 - s) * h / 2 + ty]], np.float32)
    img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), borderMode=cv2.BORDER_REFLECT)
    img = (img - 0.5) * rng.uniform(0.9, 1.1) + 0.5 + rng.uniform(-0.05, 0.05)
    return np.clip(img, 0, 1).astype(np.float32)


def load_faces(data: Path | None, size: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """(train faces, test faces, description): HWC float32 RGB [0,1] at ``size``."""
    if data is None:
        from ifqa_loss.samples import astronaut_face

        face = astronaut_face(size)[0].permute(1, 2, 0).numpy().astype(np.float32)
        return [face], [face], "astronaut face (same face; held out: the test degradations)"
    files = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in EXTS)
    if len(files) < 2:
        raise SystemExit(f"--data {data}: need at least 2 images, found {len(files)}")
    faces = []
    for p in files:
        im = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if im is None:
            raise SystemExit(f"cannot read {p}")
        im = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
        faces.append(im[:, :, ::-1].astype(np.float32) / 255.0)
    n_test = max(1, len(faces) // 5)
    desc = f"{data}: {len(faces) - n_test} training faces, {n_test} held-out faces"
    return faces[:-n_test], faces[-n_test:], desc


def to_tensor(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a.clamp(0, 1) - b) ** 2).mean((1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description="L1 vs L1 + w * IFQALoss on a small face restorer")
    ap.add_argument("--data", type=Path, default=None, help="folder of aligned face crops")
    ap.add_argument("--size", type=int, default=128, help="face size for training/testing")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=40, help="shared L1 pre-training steps")
    ap.add_argument("--steps", type=int, default=60, help="fine-tuning steps per branch")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--ifqa-weight", type=float, default=0.5, help="w in L1 + w * IFQALoss (docs/loss.md: 0.5)"
    )
    ap.add_argument("--model", default="auto", help="IFQA model (auto, ifqa, ifqa-lite, ...)")
    ap.add_argument(
        "--form",
        default="features",
        help="IFQALoss form: features (default; matches D's features of the clean face) or "
        "one_minus (no reference; `ifqa audit` finds it gamed with the bundled model)",
    )
    ap.add_argument("--weights", default=None, help="IFQA checkpoint for --model")
    ap.add_argument("--n-test", type=int, default=8, help="test degradations per test face")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    test_rng = np.random.default_rng(a.seed + 10_000)  # a separate stream: held-out samples

    train_faces, test_faces, desc = load_faces(a.data, a.size)
    gt_test = to_tensor([f for f in test_faces for _ in range(a.n_test)])
    lq_test = to_tensor([degrade(f, test_rng) for f in test_faces for _ in range(a.n_test)])

    criterion = IFQALoss(model=a.model, weights=a.weights, form=a.form)  # images in [0, 1]
    metric = IFQAMetric(model=a.model, weights=a.weights, device="cpu")
    print(f"data: {desc}")
    print(f"IFQA model: {criterion.model_name} ({criterion.weights_origin}), form {a.form}")

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(0, len(train_faces), a.batch)
        gts = [augment(train_faces[i], rng) for i in idx]
        return to_tensor([degrade(g, rng) for g in gts]), to_tensor(gts)

    base = TinyRestorer()
    t0 = time.time()
    train_l1(base, batch, a.warmup, a.lr)
    print(f"shared L1 warm-up: {a.warmup} steps, {time.time() - t0:.0f}s")

    names = ("L1", f"L1 + {a.ifqa_weight:g}*IFQA")
    t0 = time.time()

    def report(step: int) -> None:
        if step % max(1, a.steps // 4) == 0 or step == a.steps:
            print(f"  step {step}/{a.steps}  ({time.time() - t0:.0f}s)")

    branches = fine_tune_pair(
        base,
        batch,
        lambda out, gt: a.ifqa_weight * criterion(out, gt),
        steps=a.steps,
        lr=a.lr,
        names=names,
        on_step=report,
    )

    results: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        rows = {"degraded input": lq_test, "ground truth": gt_test}
        rows.update({k: net(lq_test).clamp(0, 1) for k, net in branches.items()})
        for k, x in rows.items():
            results[k] = {"psnr": psnr(x, gt_test).mean().item(), "ifqa": metric(x).mean().item()}
    n = len(lq_test)
    print(f"\nheld-out evaluation ({n} degraded images; IFQA higher = more real):")
    print(f"  {'':24s} {'PSNR (dB)':>10s} {'IFQA':>8s}")
    for k, r in results.items():
        p = "inf" if k == "ground truth" else f"{r['psnr']:.2f}"
        print(f"  {k:24s} {p:>10s} {r['ifqa']:8.4f}")
    return results


if __name__ == "__main__":
    main()
