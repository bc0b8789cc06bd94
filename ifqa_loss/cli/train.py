"""``ifqa train`` and ``ifqa validate``: each parses its own options (``-h`` included).

``train_main`` also runs under ``torchrun`` (one process per rank), e.g.::

    torchrun --nproc_per_node=2 -m ifqa_loss.train --config lite_cpu --out runs/lite
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import atomic_write_text, list_images, strict_json
from ..gate import GATE_CHOICES
from ..train.degenerate import degenerate_test_set
from ..train.validation import (
    EVAL_SIZE,
    FAMILIES,
    FAMILY_NAMES,
    TEST_BACKGROUNDS,
    Family,
    evaluate,
    format_table,
    meets_targets,
)
from .exits import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    import torch

__all__ = ["train_main", "validate_main"]


def train_main(argv: list[str] | None = None) -> int:
    """``ifqa train --config FILE [--resume] [--out DIR] [--steps N] ...``; returns an exit code."""
    p = argparse.ArgumentParser(
        prog="ifqa train",
        description="Train an IFQA discriminator (adversarially, with a small restoration "
        "generator). Runs as one process or under torchrun (DDP).",
    )
    p.add_argument(
        "--config",
        default="lite_cpu",
        help="YAML config file, or the name of a packaged config (default lite_cpu)",
    )
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    p.add_argument(
        "--resume", action="store_true", help="continue from <out>/ckpt/last.pt if present"
    )
    p.add_argument("--steps", type=int, default=None, help="total steps (overrides run.steps)")
    p.add_argument("--batch-size", type=int, default=None, help="per-rank batch (run.batch_size)")
    p.add_argument("--seed", type=int, default=None, help="run.seed")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (run.device)")
    p.add_argument(
        "--data-root", default=None, help="faces folder (else $IFQA_FACES_DIR, data.root)"
    )
    p.add_argument(
        "--export", default=None, help="also write the final discriminator here (.safetensors)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config value (YAML syntax), repeatable",
    )
    args = p.parse_args(argv)

    from ..train.config import load_config
    from ..train.trainer import train

    overrides = list(args.overrides)
    for key, val in (
        ("run.steps", args.steps),
        ("run.batch_size", args.batch_size),
        ("run.seed", args.seed),
        ("run.device", args.device),
    ):
        if val is not None:
            overrides.append(f"{key}={val}")
    if args.no_progress:
        overrides.append("run.progress=false")
    try:
        cfg = load_config(args.config, overrides)
    except (FileNotFoundError, ValueError) as e:
        print(f"ifqa train: {e}", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or str(Path("runs") / Path(str(args.config)).stem)
    try:
        summary = train(
            cfg, out, resume=args.resume, data_root=args.data_root, export_path=args.export
        )
    except FileNotFoundError as e:
        print(f"ifqa train: {e}", file=sys.stderr)
        return EXIT_USAGE
    if "validation" in summary:
        ok = meets_targets(summary["validation"])
        print(f"validation targets {'met' if ok else 'NOT met'}; run folder: {out}")
    return EXIT_OK


def _faces_from_args(args: argparse.Namespace) -> tuple[list[Path], str]:
    from ..faces.images import split_faces
    from ..train.config import load_config

    if args.data:
        files = list_images(args.data, ["**/*"])
        if not files:
            raise FileNotFoundError(f"no images found under {args.data}")
        return files, f"all images under {args.data}"
    cfg = load_config(args.config)
    root = cfg.faces_root(args.data_root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"no faces folder: pass --data DIR (a folder of clean, aligned face crops), or "
            f"--data-root DIR (or $IFQA_FACES_DIR) for the held-out faces of config "
            f"{args.config}; {root} does not exist"
        )
    _, val = split_faces(root, cfg.data)
    if not val:
        raise ValueError(
            f"config {args.config} lists no held-out faces (data.val); pass --data DIR"
        )
    return val, f"held-out faces of config {args.config} under {root}"


def _parse_families(text: str) -> tuple[tuple[Family, ...], bool]:
    """``"blur,degenerate"`` -> (the Family objects, whether degenerate is on)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = sorted(set(names) - set(FAMILY_NAMES))
    if unknown or not names:
        raise ValueError(f"--families: unknown {unknown or 'none given'}; use {FAMILY_NAMES}")
    return tuple(f for f in FAMILIES if f.name in names), "degenerate" in names


def _hwc(face: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(face.clamp(0, 1).numpy().transpose(1, 2, 0), dtype=np.float32)


def _test_backgrounds(args: argparse.Namespace) -> list[np.ndarray]:
    """The degenerate family's whole photographs (none when the faces root lacks them)."""
    from ..train.config import load_config
    from ..train.degenerate import load_photo

    root = load_config(args.config).faces_root(args.data_root)
    return [load_photo(f) for f in list_images(root, TEST_BACKGROUNDS)] if root.is_dir() else []


def validate_main(argv: list[str] | None = None) -> int:
    """``ifqa validate``: print the validation table for a model on held-out faces."""
    p = argparse.ArgumentParser(
        prog="ifqa validate",
        description="Clean-vs-degraded ranking and strength/score Spearman on held-out faces.",
    )
    p.add_argument("--model", default="ifqa-lite", help="registered model name (default ifqa-lite)")
    p.add_argument("--weights", default=None, help="weights file or folder (default: search)")
    p.add_argument("--data", default=None, help="folder of clean aligned faces (all images used)")
    p.add_argument(
        "--config",
        default="lite_cpu",
        help="training config whose held-out list is used without --data (default lite_cpu)",
    )
    p.add_argument(
        "--data-root", default=None, help="faces root for --config (else $IFQA_FACES_DIR)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None, help="use at most N faces")
    p.add_argument("--quick", action="store_true", help="pair accuracy only (no strength sweep)")
    p.add_argument(
        "--families",
        default=",".join(FAMILY_NAMES),
        help=f"comma-separated families to run (default all: {','.join(FAMILY_NAMES)})",
    )
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument(
        "--face-gate",
        choices=sorted(GATE_CHOICES),
        default="auto",
        help="the metric's face gate (auto: on for the bundled models)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 unless every family meets >=90%% and rho <= -0.8 and no"
        " degenerate image scores at or above the lowest clean face",
    )
    args = p.parse_args(argv)
    from ..faces.images import load_face
    from ..metric import IFQAMetric

    try:
        files, what = _faces_from_args(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"ifqa validate: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        families, degenerate = _parse_families(args.families)
    except ValueError as e:
        print(f"ifqa validate: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.limit:
        files = files[: args.limit]
    metric = IFQAMetric(
        model=args.model,
        weights=args.weights,
        device=args.device,
        batch_size=8,
        face_gate=GATE_CHOICES[args.face_gate],
    )
    origin = getattr(metric.discriminator, "weights_origin", "?")
    gated = "none" if metric.face_gate is None else metric.face_gate.weights_origin
    print(f"model: {metric.model_name} (weights: {origin}; face gate: {gated})")
    print(f"faces: {len(files)} ({what})")
    faces = [load_face(f, EVAL_SIZE) for f in files]
    images: bool | list[tuple[str, np.ndarray]] = False
    if degenerate:
        photos = _test_backgrounds(args)
        images = degenerate_test_set([_hwc(f) for f in faces], photos)
        print(f"degenerate set: {len(images)} images ({len(photos)} background photographs)")
    res = evaluate(
        metric,
        faces,
        families=families,
        quick=args.quick,
        names=[os.fspath(f) for f in files],
        degenerate=images,
    )
    res["weights"] = origin
    print(format_table(res))
    if args.json:
        atomic_write_text(args.json, strict_json(res))
    if args.check and not meets_targets(res):
        print(
            "targets NOT met (>=90% clean>degraded and Spearman <= -0.8 in every family;"
            " every degenerate image below the lowest clean face)"
        )
        return EXIT_CHECK_FAILED
    return EXIT_OK
