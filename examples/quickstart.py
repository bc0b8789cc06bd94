"""Quick start: score a face and its degraded versions, take one training step, save a heatmap.

The recommended uses: IFQAMetric to score faces, and IFQALoss(form="features") beside L1 at half
the L1 weight to train a restorer. Runs out of the box with the model bundled in the package (or
the original ``ifqa`` weights when they are in ./weights/, $IFQA_WEIGHTS or the cache), on CUDA
when it is available. The face is scikit-image's public-domain ``astronaut``.

    python examples/quickstart.py [--heatmap quickstart-heatmap.png] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from ifqa_loss import IFQALoss, IFQAMetric
from ifqa_loss.files.heatmap import overlay
from ifqa_loss.samples import astronaut_face


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of a (1, 3, H, W) RGB image in [0, 1], on the image's device."""
    img = (x[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    _, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return torch.from_numpy(dec).permute(2, 0, 1)[None].to(x.device, torch.float32) / 255


def to_bgr(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) RGB in [0, 1] on any device -> (H, W, 3) uint8 BGR, as OpenCV writes it."""
    rgb = (x[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="auto", help="auto, ifqa, ifqa-lite, ...")
    p.add_argument("--weights", default=None, help="checkpoint file or folder")
    p.add_argument("--heatmap", default="quickstart-heatmap.png", help="PNG to write")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(a.device)

    # 1. Score a face and degraded versions of it: higher is better, in [0, 1].
    metric = IFQAMetric(model=a.model, weights=a.weights, device=device)
    print(f"model: {metric.model_name} on {device} (weights: {metric.weights_origin})")
    face = astronaut_face(512).to(device)  # (1, 3, 512, 512) RGB in [0, 1]
    variants = {
        "clean": face,
        "blurred": gaussian_blur2d(face, (13, 13), (2.0, 2.0)),
        "noisy": (face + torch.randn_like(face) * 15 / 255).clamp(0, 1),
        "JPEG q20": jpeg(face, 20),
    }
    scores = dict(zip(variants, metric(torch.cat(list(variants.values()))).tolist(), strict=True))
    print("\nIFQA score (higher is better)")
    for name, s in scores.items():
        print(f"  {name:<9} {s:.4f}")

    # 2. One restorer training step with the recommended loss: L1 + 0.5 * IFQA features.
    criterion = IFQALoss(form="features", model=a.model, weights=a.weights, device=device)
    restorer = torch.nn.Conv2d(3, 3, 3, padding=1).to(device)  # a stand-in restorer
    torch.nn.init.zeros_(restorer.weight)
    torch.nn.init.zeros_(restorer.bias)
    opt = torch.optim.Adam(restorer.parameters(), lr=1e-4)
    lq, gt = variants["blurred"], face

    def loss_of(out: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(out, gt) + 0.5 * criterion(out, gt)  # the recommended start

    loss = loss_of(lq + restorer(lq))  # the restorer starts as the identity
    opt.zero_grad()
    loss.backward()  # gradients reach the restorer, never the discriminator
    opt.step()
    with torch.no_grad():
        after = loss_of(lq + restorer(lq))
    print(f"\nL1 + 0.5 * IFQA features: {loss.item():.4f} -> {after.item():.4f} after one step")

    # 3. Where the model sees fake pixels: the realness map over the face (yellow = real).
    maps = metric.maps(torch.cat([face, variants["blurred"]])).cpu()
    picture = np.hstack([overlay(to_bgr(face), maps[0]), overlay(to_bgr(lq), maps[1])])
    if not cv2.imwrite(a.heatmap, picture):
        raise OSError(f"could not write {a.heatmap}")
    print(f"\nclean | blurred realness maps written to {a.heatmap}")
    return scores


if __name__ == "__main__":
    main()
