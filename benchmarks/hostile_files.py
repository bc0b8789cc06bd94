"""Hostile files: time and peak memory of ``ifqa score`` on a decompression bomb, side by side.

Rows, each a fresh ``ifqa score`` process (wall time, peak RSS of the process and its decoding
workers, exit code):

- ``ordinary``: one 256 px image, scored (the cost of starting: Python, torch, the model);
- ``bomb``: a black 30000 x 30000 8-bit grey PNG (0.87 MB), refused from its header;
- the refusal alone: ``read_image_bgr`` on the bomb, in milliseconds;
- ``bomb, limit off`` (``--baseline``): the same file with ``--max-pixels`` and OpenCV's own
  limit raised, so it is decoded whole as before the limit (needs about 6 GB of memory).

Then the memory one decode takes in a worker: the peak RSS growth of one decode of a
``--side`` x ``--side`` RGB PNG with a smooth pattern, per preprocessing pipeline.

The images are written row by row (zlib), never held in memory.

    python benchmarks/hostile_files.py
    python benchmarks/hostile_files.py --baseline --side 10000 --json hostile.json
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

# Runs a command and prints its wall time and the peak RSS over it and its descendants.
MEASURE = """
import resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, code)
"""
# The refusal itself: milliseconds from the call to the error, torch not involved.
REFUSAL = """
import sys, time
from ifqa_loss.preprocess import read_image_bgr
t = time.perf_counter()
try:
    read_image_bgr(sys.argv[1])
except ValueError:
    print((time.perf_counter() - t) * 1000)
"""
# One decode through the scoring dataset, after a warm-up decode; prints MB of peak RSS growth.
ONE_DECODE = """
import resource, sys, cv2, numpy as np
from ifqa_loss.models.registry import get_model_config
from ifqa_loss.files.scoring import _FileDataset
def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cfg = get_model_config(sys.argv[1])
cv2.imwrite(sys.argv[3], np.zeros((32, 32, 3), np.uint8))
_FileDataset([sys.argv[3]], cfg)[0]
base = rss()
item = _FileDataset([sys.argv[2]], cfg)[0]
assert item[2] is None, item[2]
print(rss() - base)
"""


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def write_png(path: Path, width: int, height: int, rgb: bool) -> Path:
    """Black gray (``rgb=False``) or a smooth RGB pattern, compressed row by row."""
    comp = zlib.compressobj(6)
    x = np.arange(width)
    parts = []
    for y in range(height):
        if rgb:
            channels = [(x // 40 + y // 40) % 256, (x // 97) % 256, np.full(width, y // 50)]
            row = np.stack(channels, -1)
            raw = row.astype(np.uint8).tobytes()
        else:
            raw = bytes(width)
        parts.append(comp.compress(b"\x00" + raw))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2 if rgb else 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    path.write_bytes(data + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b""))
    return path


def measure(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, env=env
    )
    wall, rss, code = out.stdout.split()
    return {"wall_s": round(float(wall), 2), "peak_mb": round(float(rss)), "exit": int(code)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ifqa-lite")
    ap.add_argument("--bomb-side", type=int, default=30000)
    ap.add_argument("--side", type=int, default=5000, help="side of the decode-memory image")
    ap.add_argument("--baseline", action="store_true", help="also decode the bomb whole")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ifqa = [sys.executable, "-m", "ifqa_loss.cli", "score", "--model", args.model]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        small = write_png(d / "ordinary.png", 256, 256, rgb=True)
        bomb = write_png(d / "bomb.png", args.bomb_side, args.bomb_side, rgb=False)
        print(f"bomb: {args.bomb_side} x {args.bomb_side}, {bomb.stat().st_size} bytes")
        rows["ordinary"] = measure([*ifqa, str(small)])
        rows["bomb"] = measure([*ifqa, str(bomb)])
        if args.baseline:
            env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS=str(2**31))
            rows["bomb, limit off"] = measure([*ifqa, str(bomb), "--max-pixels", "2000000000"], env)
        out = subprocess.run(
            [sys.executable, "-c", REFUSAL, str(bomb)], capture_output=True, text=True, check=True
        )
        refusal_ms = float(out.stdout)
        print(f"refusal of the bomb (read_image_bgr): {refusal_ms:.1f} ms")
        for name, r in rows.items():
            print(f"{name:16s} {r['wall_s']:7.2f} s  {r['peak_mb']:6d} MB  exit {r['exit']}")
        big = write_png(d / "big.png", args.side, args.side, rgb=True)
        decode = {}
        for model in ("ifqa-lite", "ifqa++"):
            out = subprocess.run(
                [sys.executable, "-c", ONE_DECODE, model, str(big), str(d / "warm.png")],
                capture_output=True,
                text=True,
                check=True,
            )
            mb = float(out.stdout.split()[-1])
            per_px = mb * 2**20 / args.side**2
            decode[model] = {"mb": round(mb), "bytes_per_pixel": round(per_px, 1)}
            print(f"one decode, {args.side}^2 RGB, {model}: +{mb:.0f} MB")
    doc = {"runs": rows, "refusal_ms": refusal_ms, "decode": decode}
    doc |= {"side": args.side, "bomb_side": args.bomb_side}
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
