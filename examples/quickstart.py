"""Quick start: score a face and its degraded versions, then take one IFQA loss step.

Runs out of the box with the model bundled in the package (or the original ``ifqa`` weights
when they are in ./weights/, $IFQA_WEIGHTS or the cache). The face is scikit-image's
public-domain ``astronaut``, aligned to the FFHQ template.

    python examples/quickstart.py [--model auto|ifqa|ifqa-lite] [--heatmap out.png]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from ifqa_loss import IFQALoss, IFQAMetric
from ifqa_loss.samples import astronaut_face


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from kornia.filters import gaussian_blur2d

    k = 2 * int(3 * sigma) + 1
    return gaussian_blur2d(x, (k, k), (sigma, sigma))


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    import cv2

    img = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    _, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()
    return torch.from_numpy(dec).permute(2, 0, 1)[None].float() / 255


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="auto")
    p.add_argument("--weights", default=None)
    p.add_argument("--heatmap", default=None, help="save the clean face's realness map (PNG)")
    a = p.parse_args()
    torch.manual_seed(0)

    metric = IFQAMetric(model=a.model, weights=a.weights)
    print(f"model: {metric.model_name}  (weights: {metric.weights_origin})")

    face = astronaut_face(512)  # (1, 3, 512, 512) in [0, 1]
    down_up = F.interpolate(
        F.interpolate(face, scale_factor=0.25, mode="bicubic", antialias=True), size=(512, 512),
        mode="bicubic",
    ).clamp(0, 1)  # fmt: skip
    variants = {
        "clean": face,
        "blur sigma 2": gaussian_blur(face, 2.0),
        "4x down-up": down_up,
        "noise 15/255": (face + torch.randn_like(face) * 15 / 255).clamp(0, 1),
        "JPEG q20": jpeg(face, 20),
    }
    scores = metric(torch.cat(list(variants.values())))
    print("\nIFQA score (higher is better)")
    for name, s in zip(variants, scores.tolist(), strict=True):
        print(f"  {name:<14} {s:.4f}")
    regions = metric.region_scores(face)
    print("clean face by region: " + ", ".join(f"{k} {v.item():.4f}" for k, v in regions.items()))

    # The loss: lower = more real. One gradient step on a blurred face.
    criterion = IFQALoss(model=a.model, weights=a.weights, region_weights={"eyes": 2.0})
    x = variants["blur sigma 2"].clone().requires_grad_(True)
    loss = criterion(x)
    loss.backward()
    print(f"\nIFQALoss of the blurred face: {loss.item():.4f}; |grad| {x.grad.abs().mean():.2e}")

    if a.heatmap:
        import cv2

        m = metric.maps(face)[0, 0].numpy()
        cv2.imwrite(a.heatmap, cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET))
        print(f"heatmap written to {a.heatmap}")


if __name__ == "__main__":
    main()
