"""Command-line entry points: ``ifqa train`` and ``ifqa validate``.

``train_main`` also runs under ``torchrun`` (one process per rank), e.g.::

    torchrun --nproc_per_node=2 -m ifqa_loss.train --config lite_cpu --out runs/lite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .validation import validate_main

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

    from .config import load_config
    from .trainer import train

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
        return 2
    out = args.out or str(Path("runs") / Path(str(args.config)).stem)
    try:
        summary = train(
            cfg, out, resume=args.resume, data_root=args.data_root, export_path=args.export
        )
    except FileNotFoundError as e:
        print(f"ifqa train: {e}", file=sys.stderr)
        return 2
    if "validation" in summary:
        from .validation import meets_targets

        ok = meets_targets(summary["validation"])
        print(f"validation targets {'met' if ok else 'NOT met'}; run folder: {out}")
    return 0
