"""``ifqa compare``: the command line of :func:`ifqa_loss.compare.comparison.compare`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .exits import EXIT_ALL_FAILED, EXIT_OK, EXIT_USAGE
from .score import add_max_pixels, model_line

DESCRIPTION = (
    "Score the same faces restored by several methods (one folder per method, files "
    "matched by their path inside each folder) and write an HTML report: ranking with "
    "bootstrap intervals, region means, wins, score distribution, and each face's "
    "images and heatmaps, worst faces first."
)


def configure(c: argparse.ArgumentParser) -> None:
    """Give the ``compare`` sub-parser its arguments."""
    c.description = DESCRIPTION
    c.add_argument("dirs", nargs="+", metavar="DIR", help="one folder of restored faces per method")
    c.add_argument(
        "--names",
        nargs="+",
        default=None,
        metavar="NAME",
        help="method names, one per folder (default: the folder names)",
    )
    c.add_argument("--out", default="report", help="report folder (default: report)")
    c.add_argument("--model", default="auto", help="auto | ifqa | ifqa++ | ifqa-lite ...")
    c.add_argument("--weights", default=None, help="checkpoint file or folder")
    c.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if any)")
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument(
        "--bootstrap",
        type=int,
        default=2000,
        help="bootstrap resamples for the 95%% intervals (0: none; default 2000)",
    )
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_max_pixels(c)
    c.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    """Run ``ifqa compare``: 0 written, 2 usage error, 4 no face readable in every folder."""
    from ..compare.comparison import LINKED_PAGE, PAGE, _fmt, compare

    if args.max_pixels is not None:  # before cv2 loads: OpenCV reads its own limit once
        from ..preprocess import limit_opencv

        limit_opencv(args.max_pixels)
    try:
        summary = compare(
            args.dirs,
            names=args.names,
            out=args.out,
            model=args.model,
            weights=args.weights,
            device=args.device or _default_device(),
            batch_size=args.batch_size,
            bootstrap=args.bootstrap,
            seed=args.seed,
            max_pixels=args.max_pixels,
        )
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"ifqa compare: {e}", file=sys.stderr)
        return EXIT_USAGE
    meta = summary["meta"]
    print(model_line(meta["model"], meta["weights_origin"], meta["device"], args))
    print(f"# faces: {meta['n_faces']} compared, {meta['n_excluded']} excluded (unreadable)")
    width = max(len(r["method"]) for r in summary["ranking"])
    for rank, r in enumerate(summary["ranking"], 1):
        ci = "" if r["ci_low"] is None else f"  [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        print(
            f"{rank}. {r['method']:<{width}}  {_fmt(r['mean'])}{ci}  wins {r['wins']}"
            f"  near-constant {r['near_constant']}  no face {r['no_face']}"
        )
    for r in summary["ranking"]:
        for key, what in (("near_constant", "are near-constant"), ("no_face", "show no face")):
            if r[key]:
                print(
                    f"# {r[key]} of {meta['n_faces']} outputs of {r['method']} {what}: "
                    "their scores mean nothing"
                )
    out = Path(summary["out"])
    print(f"wrote {out / PAGE} (one file, pictures inside; {LINKED_PAGE} links to the folder's)")
    return EXIT_OK if meta["n_valid"] else EXIT_ALL_FAILED


def _default_device() -> str:
    """A command runs where it is fastest: the GPU when there is one (the library's modules
    start on the CPU, as any module; the commands choose for the user)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
