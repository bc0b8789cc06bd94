"""Why a face's tensor score differs from its file score, and by how much, per image size.

The file path (``IFQAMetric.score_files``) is the original release's: uint8 RGB, OpenCV
``INTER_LINEAR`` resize to the native size (no antialiasing; the result rounded to uint8), then
``Normalize(0.5, 0.5)``. The tensor path (``metric(x)``, the loss) resizes the float image with
an antialiased bilinear ``F.interpolate``. This script scores every square face crop of the
shared faces through both and through the steps in between, one cause changed at a time:

- ``tensor``: the tensor path as shipped (antialiased, float);
- ``no-aa``: ``F.interpolate(..., antialias=False)`` on the float image (OpenCV's filter);
- ``no-aa+u8``: the same, rounded to the uint8 grid after the resize (OpenCV's rounding);
- ``file-float``: OpenCV's resize on the float image (the file path without the rounding).

and prints, per size, the median, 90th percentile and maximum of ``|file - variant|``, the share
of crops over 0.01, and which way the tensor path errs.

    python benchmarks/tensor_vs_file.py                      # ifqa-lite, every 512/1024 crop
    python benchmarks/tensor_vs_file.py --model ifqa --sizes 512
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifqa_loss.metric import IFQAMetric
from ifqa_loss.preprocess import official_array_tensor, to_model_input

EXTS = {".png", ".jpg", ".jpeg"}
VARIANTS = ("tensor", "no-aa", "no-aa+u8", "file-float")


def default_faces() -> Path:
    """``$IFQA_FACES_DIR``, else ``../shared/data/faces`` beside the repository."""
    env = os.environ.get("IFQA_FACES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/faces"


def square_crops(root: Path, sizes: set[int]) -> dict[int, list[tuple[Path, np.ndarray]]]:
    """Decoded (H, W, 3) uint8 RGB crops of the given square sizes, whole photos left out."""
    import cv2

    found: dict[int, list[tuple[Path, np.ndarray]]] = {s: [] for s in sizes}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in EXTS or any(q.endswith("_whole") for q in p.parts):
            continue
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[0] != bgr.shape[1] or bgr.shape[0] not in sizes:
            continue
        found[bgr.shape[0]].append((p, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return found


def variant_inputs(rgb: np.ndarray, metric: IFQAMetric) -> dict[str, torch.Tensor]:
    """Network-ready (1, 3, S, S) inputs in [-1, 1] of one crop, one per path."""
    import cv2

    cfg, s = metric.config, metric.config.native_size
    x = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255)[None]
    plain = F.interpolate(x, size=(s, s), mode=cfg.interpolation, antialias=False)
    interp = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}[cfg.interpolation]
    flt = cv2.resize(rgb.astype(np.float32) / 255, (s, s), interpolation=interp)
    return {
        "file": official_array_tensor(rgb, cfg)[None],
        "tensor": to_model_input(x, cfg),
        "no-aa": plain * 2 - 1,
        "no-aa+u8": (plain * 255).round().clamp(0, 255) / 255 * 2 - 1,
        "file-float": torch.from_numpy(flt.transpose(2, 0, 1))[None] * 2 - 1,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ifqa-lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--faces", type=Path, default=default_faces())
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    a = p.parse_args()
    torch.manual_seed(0)
    metric = IFQAMetric(model=a.model, weights=a.weights, device="cpu")
    if metric.config.file_pipeline != "resize_then_normalize":
        print(f"note: {metric.model_name} normalises before resizing; file-float is then exact")
    print(f"model {metric.model_name}, faces {a.faces}")
    for size, crops in square_crops(a.faces, set(a.sizes)).items():
        if not crops:
            print(f"{size} px: no square crops found")
            continue
        diffs = {v: [] for v in VARIANTS}
        signed = []
        file_scores, tensor_scores, worst = [], [], (0.0, None)
        for path, rgb in crops:
            xs = variant_inputs(rgb, metric)
            scores = metric._maps_normalised(torch.cat(list(xs.values()))).mean((1, 2, 3))
            by = dict(zip(xs, scores.tolist(), strict=True))
            file_scores.append(by["file"])
            tensor_scores.append(by["tensor"])
            signed.append(by["file"] - by["tensor"])
            for v in VARIANTS:
                diffs[v].append(abs(by[v] - by["file"]))
            if diffs["tensor"][-1] > worst[0]:
                worst = (diffs["tensor"][-1], path)
        print(
            f"\n{size} px, {len(crops)} crops; median score: file {np.median(file_scores):.3f}, "
            f"tensor {np.median(tensor_scores):.3f}"
        )
        print(f"  {'|file - x|':<12} {'median':>8} {'p90':>8} {'max':>8} {'>0.01':>9}")
        for v in VARIANTS:
            d = np.array(diffs[v])
            over = (d > 0.01).mean()
            print(
                f"  {v:<12} {np.median(d):8.4f} {np.percentile(d, 90):8.4f} {d.max():8.4f}"
                f" {over:9.0%}"
            )
        higher = np.mean(np.array(signed) > 0)
        print(f"  file - tensor: mean {np.mean(signed):+.4f}, file higher on {higher:.0%}")
        print(f"  worst tensor-vs-file crop: {worst[1].relative_to(a.faces)} ({worst[0]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
