"""Does a model's heatmap fall where a face was degraded, or everywhere? Held-out faces.

Blurs only the eyes of each held-out face (Gaussian sigma 6 at 512, inside the soft eyes mask
above 0.2), scores clean and degraded through ``IFQAMetric.maps`` and reports, per face and on
average, the drop of the map inside the eyes and on the rest of the face (the same regions as
``tests/test_train.py::test_heatmap_is_lower_where_the_eyes_were_blurred``). A model that
localises drops much more inside; one that judges the whole image drops about equally.

    python benchmarks/heatmap_locality.py --model ifqa-lite
    python benchmarks/heatmap_locality.py --weights runs/x/discriminator.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifqa_loss.faces.degrade import gaussian_blur
from ifqa_loss.faces.images import load_face, split_faces
from ifqa_loss.masks import face_region_masks
from ifqa_loss.metric import IFQAMetric
from ifqa_loss.train.config import load_config

SIZE = 512


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ifqa-lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--config", default="lite_cpu", help="config whose held-out list is used")
    p.add_argument("--faces", default=os.environ.get("IFQA_FACES_DIR", "../shared/data/faces"))
    p.add_argument("--sigma", type=float, default=6.0, help="blur sigma in pixels at 512")
    a = p.parse_args()
    _, val = split_faces(a.faces, load_config(a.config).data)
    metric = IFQAMetric(model=a.model, weights=a.weights, device="cpu")
    n = metric.native_size
    eyes_n = face_region_masks(None, n, ("eyes",))[0, 0]
    inside = eyes_n > 0.5
    outside = (face_region_masks(None, n, ("face",))[0, 0] > 0.5) & (eyes_n < 0.05)
    sel = (face_region_masks(None, SIZE, ("eyes",))[0, 0].numpy() > 0.2).astype(np.float32)
    sel = sel[..., None]
    d_in, d_out = [], []
    for path in val:
        img = load_face(path, SIZE).numpy().transpose(1, 2, 0)
        img = (img * 255).round() / 255
        deg = sel * gaussian_blur(img, a.sigma) + (1 - sel) * img
        x = torch.from_numpy(np.stack([img, deg]).transpose(0, 3, 1, 2).astype(np.float32))
        maps = metric.maps(x)[:, 0]
        drop = maps[0] - maps[1]
        d_in.append(drop[inside].mean().item())
        d_out.append(drop[outside].mean().item())
        print(f"{path.name:>14}  drop inside eyes {d_in[-1]:+.4f}  rest of face {d_out[-1]:+.4f}")
    di, do = np.array(d_in), np.array(d_out)
    print(
        f"{metric.model_name}: mean drop inside {di.mean():.4f}, outside {do.mean():.4f}; "
        f"inside > outside for {(di > do).sum()}/{len(di)} faces"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
