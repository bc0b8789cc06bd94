"""Score a folder of face crops from Python, worst first, with heatmaps of the worst ones.

    python examples/score_folder.py FOLDER [--model auto] [--out heatmaps/] [--worst 5]

Without FOLDER it scores a few degraded versions of the bundled astronaut sample (written to a
temporary folder), so it runs anywhere. The same job from the shell is
``ifqa score FOLDER --heatmaps heatmaps/ --csv scores.csv``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from ifqa_loss import IFQAMetric
from ifqa_loss.files.heatmap import colorize, overlay
from ifqa_loss.preprocess import read_image_bgr

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def sample_folder() -> Path:
    """The bundled astronaut face, clean and degraded three ways, as PNG files."""
    from ifqa_loss.samples import astronaut_face

    face = (astronaut_face(512)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    d = Path(tempfile.mkdtemp(prefix="ifqa_samples_"))
    cv2.imwrite(str(d / "clean.png"), bgr)
    cv2.imwrite(str(d / "blur.png"), cv2.GaussianBlur(bgr, (0, 0), 3))
    small = cv2.resize(bgr, (64, 64), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(d / "down8x.png"), cv2.resize(small, (512, 512), cv2.INTER_CUBIC))
    _, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 10])
    cv2.imwrite(str(d / "jpeg10.png"), cv2.imdecode(jpg, cv2.IMREAD_COLOR))
    return d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", nargs="?", help="folder of aligned face crops (default: samples)")
    p.add_argument("--model", default="auto")
    p.add_argument("--out", default="heatmaps", help="where the worst faces' heatmaps go")
    p.add_argument("--worst", type=int, default=5, help="how many heatmaps to write")
    args = p.parse_args()

    folder = Path(args.folder) if args.folder else sample_folder()
    files = sorted(str(f) for f in folder.iterdir() if f.suffix.lower() in EXTS)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metric = IFQAMetric(model=args.model, device=device, batch_size=16)
    print(f"model {metric.model_name} ({metric.weights_origin}), {len(files)} files")

    records = metric.score_files(files, regions=True, return_maps=True, workers=1)
    good = sorted((r for r in records if r["score"] is not None), key=lambda r: r["score"])
    for r in records:
        if r["error"]:
            print(f"  could not read {r['path']}: {r['error']}")
    print(f"{'score':>8} {'eyes':>7} {'nose':>7} {'mouth':>7} {'rest':>7}  file")
    for r in good:
        print(
            f"{r['score']:8.4f} {r['eyes']:7.4f} {r['nose']:7.4f} {r['mouth']:7.4f} "
            f"{r['rest']:7.4f}  {Path(r['path']).name}"
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for r in good[: args.worst]:
        stem = Path(r["path"]).stem
        cv2.imwrite(str(out / f"{stem}_map.png"), colorize(r["map"]))
        cv2.imwrite(str(out / f"{stem}_overlay.png"), overlay(read_image_bgr(r["path"]), r["map"]))
    print(f"heatmaps of the {min(args.worst, len(good))} lowest-scoring faces in {out}/")


if __name__ == "__main__":
    main()
