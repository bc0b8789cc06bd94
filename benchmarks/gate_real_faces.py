"""The face gate on real faces it never trained on: P(face), and the score it leaves.

    python benchmarks/gate_real_faces.py --out runs/gate_real [--gate FILE] [--model ifqa-lite]

For every face of :func:`ifqa_loss.train.gate_faces.gate_test_faces` (real low-quality crops,
grayscale and old photographs, faces aligned from test photographs with black padding, gray,
sepia and padded copies of the held-out clean faces) it writes P(face), the score without the
gate and the gated score to ``faces.csv``, a summary per kind to ``summary.json``, and a sheet
of the faces that miss the targets (P(face) < 0.5 or a gated score under half the ungated one)
to ``misses.png``. ``--diagnose`` adds P(face) with the gate's two flatness statistics replaced
by the clean faces' median: how much of a rejection the statistics explain. ``--degenerate``
adds the degenerate images of ``ifqa validate`` (kind ``degenerate``) and compares two uses of
P(face) in ``summary.json``'s ``rules``: the metric's product (score x P) and a cap (score x
min(1, P / 0.5)), each by the faces that keep under half their score and the degenerate images
at or above the lowest clean face.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifqa_loss import IFQAMetric
from ifqa_loss._io import list_images
from ifqa_loss.preprocess import to_model_input
from ifqa_loss.train.config import load_config
from ifqa_loss.train.degenerate import degenerate_test_set, load_photo
from ifqa_loss.train.gate_faces import TARGET_KINDS, GateFace, gate_test_faces
from ifqa_loss.train.validation import TEST_BACKGROUNDS

TILE = 160


@torch.no_grad()
def measure(faces, model: str, gate_path: str | None, diagnose: bool) -> list[dict]:
    """One row per face: P(face), ungated and gated scores (and P with median statistics)."""
    metric = IFQAMetric(model, device="cpu", face_gate=False)
    gated = IFQAMetric(model, device="cpu", face_gate=gate_path or True)
    rows, images = [], []
    for f in faces:
        t = torch.from_numpy(f.image.transpose(2, 0, 1).copy())[None]
        images.append(t)
        ungated, p = float(metric(t)[0]), float(gated.p_face(t)[0])
        rows.append(
            {"name": f.name, "kind": f.kind, "p_face": p, "ungated": ungated, "gated": ungated * p}
        )
    if diagnose:
        gate = gated.face_gate
        # the gate's own view: the network input (native size) in [-1, 1]
        xs = [gated.gate_input(to_model_input(t, gated.config)) for t in images]
        prepared = [gate.prepare(x) for x in xs]
        clean = [s for (_, s), r in zip(prepared, rows, strict=True) if r["kind"] == "clean"]
        median = torch.cat(clean).median(0).values if clean else None
        for (small, stats), r in zip(prepared, rows, strict=True):
            r["flat"], r["top4"] = float(stats[0, 0]), float(stats[0, 1])
            if median is not None:
                logit = gate.logits_prepared(small, median[None])
                r["p_median_stats"] = float(torch.sigmoid(logit)[0])
    return rows


RULES = {"product": lambda p: p, "cap": lambda p: min(1.0, p / 0.5)}


def degenerate_faces(root: Path, val: list[str]) -> list[GateFace]:
    """The validation's degenerate images (held-out faces posterised, test photographs'
    corners, flat images, gradients, noise) as gate test records."""
    faces = [load_photo(root / v, 512) for v in val]
    photos = [load_photo(f) for f in list_images(root, TEST_BACKGROUNDS)]
    return [GateFace(n, "degenerate", img) for n, img in degenerate_test_set(faces, photos)]


def compare_rules(rows: list[dict]) -> dict:
    """Per use of P(face): target faces keeping under half their score, and degenerate images
    at or above the lowest clean face."""
    out = {}
    for name, rule in RULES.items():
        gated = [r["ungated"] * rule(r["p_face"]) for r in rows]
        clean = [g for g, r in zip(gated, rows, strict=True) if r["kind"] == "clean"]
        deg = [g for g, r in zip(gated, rows, strict=True) if r["kind"] == "degenerate"]
        halved = sum(
            g < 0.5 * r["ungated"]
            for g, r in zip(gated, rows, strict=True)
            if r["kind"] in TARGET_KINDS
        )
        out[name] = {
            "target_faces_below_half": int(halved),
            "degenerate_at_or_above_lowest_clean": sum(d >= min(clean) for d in deg),
            "lowest_clean": min(clean),
            "highest_degenerate": max(deg) if deg else None,
        }
    return out


def summarise(rows: list[dict]) -> dict:
    """Per kind and over the target kinds: count, P(face) < 0.5, gated < half of ungated."""

    def part(sel: list[dict]) -> dict:
        low = [r for r in sel if r["p_face"] < 0.5]
        halved = [r for r in sel if r["gated"] < 0.5 * r["ungated"]]
        p = np.array([r["p_face"] for r in sel])
        return {
            "n": len(sel),
            "p_below_0.5": len(low),
            "gated_below_half": len(halved),
            "share_p_at_least_0.5": 1 - len(low) / max(len(sel), 1),
            "min_p": float(p.min()) if len(p) else None,
        }

    out = {k: part([r for r in rows if r["kind"] == k]) for k in sorted({r["kind"] for r in rows})}
    out["targets"] = part([r for r in rows if r["kind"] in TARGET_KINDS])
    out["misses"] = [
        r["name"]
        for r in rows
        if r["kind"] in TARGET_KINDS and (r["p_face"] < 0.5 or r["gated"] < 0.5 * r["ungated"])
    ]
    return out


def sheet(faces, rows: list[dict], path: Path) -> None:
    """A picture of the faces that miss, each labelled with its P(face)."""
    tiles = []
    for f, r in zip(faces, rows, strict=True):
        if r["kind"] not in TARGET_KINDS or not (
            r["p_face"] < 0.5 or r["gated"] < 0.5 * r["ungated"]
        ):
            continue
        img = (f.image * 255).round().astype(np.uint8)
        tile = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA).copy()
        cv2.putText(tile, f"P {r['p_face']:.2f}", (4, 16), 0, 0.5, (255, 255, 0), 1)
        cv2.putText(tile, r["name"][-22:], (4, TILE - 6), 0, 0.33, (255, 255, 0), 1)
        tiles.append(tile)
    if not tiles:
        return
    cols = min(8, len(tiles))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    grid = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--gate", default=None, help="a gate's .safetensors (default: the bundled)")
    ap.add_argument("--model", default="ifqa-lite")
    ap.add_argument("--data-root", default=None, help="faces folder (else $IFQA_FACES_DIR)")
    ap.add_argument("--no-photos", action="store_true", help="skip the photographs' faces")
    ap.add_argument("--diagnose", action="store_true")
    ap.add_argument("--degenerate", action="store_true", help="add ifqa validate's degenerate set")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = load_config("lite_degenerate_cpu")
    root = cfg.faces_root(args.data_root)
    faces = gate_test_faces(root, cfg.data.val, not args.no_photos)
    if args.degenerate:
        faces += degenerate_faces(root, cfg.data.val)
    rows = measure(faces, args.model, args.gate, args.diagnose)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "faces.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows)
    if args.degenerate:
        summary["rules"] = compare_rules(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    sheet(faces, rows, out / "misses.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "misses"}, indent=1))
    print(f"{len(summary['misses'])} misses: {summary['misses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
