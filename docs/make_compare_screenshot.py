"""Remake ``docs/images/compare_report.png``: the ``ifqa compare`` report of the astronaut sample.

    python docs/make_compare_screenshot.py [--out docs/images/compare_report.png]

Four views of the public-domain astronaut face (``ifqa_loss.samples.astronaut_face``: as
aligned, flipped, zoomed, zoomed and flipped), each degraded three ways (Gaussian blur, strong
JPEG, Gaussian noise) standing in for three restoration methods, scored with the bundled
``ifqa-lite`` on the CPU; the report page is then photographed with headless Chromium at
1280x2000. Needs scikit-image (``pip install "ifqa-loss[examples]"``), matplotlib (the plot)
and ``chromium`` on the PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ifqa_loss import IFQAMetric
from ifqa_loss._io import atomic_write
from ifqa_loss.compare.comparison import compare
from ifqa_loss.samples import astronaut_face

METHODS = ("Gaussian blur", "JPEG q≈10-20", "Gaussian noise")


def views() -> dict[str, np.ndarray]:
    """The four clean 512 px BGR faces: a as aligned, b flipped, c zoomed, d zoomed + flipped."""
    face = (astronaut_face(512)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    face = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    zoom = cv2.resize(face[32:480, 32:480], (512, 512), interpolation=cv2.INTER_CUBIC)
    return {"a": face, "b": face[:, ::-1], "c": zoom, "d": zoom[:, ::-1]}


def degrade(img: np.ndarray, method: str, rng: np.random.Generator) -> np.ndarray:
    if method == METHODS[0]:
        return cv2.GaussianBlur(img, (0, 0), sigmaX=2.5)
    if method == METHODS[1]:
        q = int(rng.integers(10, 21))
        return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 1)
    noise = rng.normal(0.0, 12.0, img.shape)
    return np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/images/compare_report.png")
    args = p.parse_args()
    exe = shutil.which("chromium")
    if exe is None:
        raise SystemExit("chromium is not on the PATH (Debian: apt-get install chromium)")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = []
        for j, method in enumerate(METHODS):
            d = root / f"method{j}"
            d.mkdir()
            for name, img in views().items():
                cv2.imwrite(str(d / f"astronaut_{name}.png"), degrade(img, method, rng))
            dirs.append(d)
        metric = IFQAMetric(model="ifqa-lite", device="cpu")
        # shown relative to the working folder, so the picture names no folder of this machine
        metric.discriminator.weights_origin = os.path.relpath(metric.weights_origin)
        compare(dirs, names=list(METHODS), out=root / "report", metric=metric)
        shot = root / "shot.png"
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        cmd += ["--no-first-run", "--disable-background-networking", "--disable-sync"]
        cmd += [f"--user-data-dir={root / 'profile'}", "--virtual-time-budget=5000"]
        cmd += ["--window-size=1280,2000", f"--screenshot={shot}"]
        subprocess.run([*cmd, (root / "report" / "index.html").as_uri()], check=True)
        atomic_write(args.out, lambda tmp: shutil.copyfile(shot, tmp))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
