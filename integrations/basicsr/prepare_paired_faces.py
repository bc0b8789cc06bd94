"""Make a small paired (GT, degraded LQ) face folder for BasicSR's PairedImageDataset.

    python integrations/basicsr/prepare_paired_faces.py SRC_DIR OUT_DIR --size 128 --val 2

SRC_DIR holds aligned face images (FFHQ-style crops). Writes OUT_DIR/{train,val}/{gt,lq}/NAME.png:
GT resized to --size, LQ = GT blurred, downsampled, noised and JPEG-compressed (fixed seed),
at the same size (a scale-1 restoration task). The last --val images (sorted by name) are
held out for validation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur (sigma 1-3), downsample x2-4 and back, Gaussian noise (2-8 /255), JPEG 40-80."""
    h, w = img.shape[:2]
    x = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(1.0, 3.0))
    f = rng.uniform(2.0, 4.0)
    x = cv2.resize(x, (max(8, int(w / f)), max(8, int(h / f))), interpolation=cv2.INTER_AREA)
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    x = x + rng.normal(0.0, rng.uniform(2.0, 8.0), x.shape)
    x = np.clip(x, 0, 255).astype(np.uint8)
    q = int(rng.integers(40, 81))
    _, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def prepare(src: Path, out: Path, size: int = 128, n_val: int = 2, seed: int = 0) -> dict:
    files = sorted(p for p in Path(src).iterdir() if p.suffix.lower() in EXTS)
    if len(files) <= n_val:
        raise SystemExit(f"{src} has {len(files)} images; need more than --val {n_val}")
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    for i, p in enumerate(files):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read {p}")
        gt = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        split = "val" if i >= len(files) - n_val else "train"
        for sub, im in (("gt", gt), ("lq", degrade(gt, rng))):
            d = out / split / sub
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{p.stem}.png"), im)
        counts[split] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--val", type=int, default=2, help="images held out for validation")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(prepare(a.src, a.out, a.size, a.val, a.seed))


if __name__ == "__main__":
    main()
