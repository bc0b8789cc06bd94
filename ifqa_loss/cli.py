"""The ``ifqa`` console command."""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import statistics
import sys
from pathlib import Path

from ._io import IMAGE_EXTS, atomic_write_text

# Exit codes of `ifqa score`.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3
EXIT_ALL_FAILED = 4


def _expand(inputs: list[str], recursive: bool) -> tuple[list[str], list[str]]:
    """(files to score, files skipped) for the command line's files, folders and globs.

    Files named explicitly are always tried (an unreadable one becomes an error record).
    Inside folders and glob matches, only image extensions (``IMAGE_EXTS``) are taken; other
    files are returned as skipped, so a log or a CSV beside the images is not a failure.
    """
    out: list[str] = []
    skipped: list[str] = []

    def take(files) -> None:
        for f in sorted(files):
            if not os.path.isfile(f) or os.path.basename(f).startswith("."):
                continue
            (out if Path(f).suffix.lower() in IMAGE_EXTS else skipped).append(str(f))

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            take(str(f) for f in (p.rglob("*") if recursive else p.iterdir()))
        elif not p.exists() and any(ch in item for ch in "*?["):
            take(glob.glob(item, recursive=recursive))
        else:
            out.append(item)  # a missing or unreadable file is reported as a failed record
    return out, skipped


def _heatmap_names(paths: list[str]) -> list[str]:
    """File-name stems for the heatmaps: the image's stem, made unique with a path hash."""
    import hashlib

    stems = [Path(p).stem for p in paths]
    seen: dict[str, int] = {}
    for st in stems:
        seen[st] = seen.get(st, 0) + 1
    return [
        st if seen[st] == 1 else f"{st}_{hashlib.sha1(p.encode()).hexdigest()[:8]}"
        for st, p in zip(stems, paths, strict=True)
    ]


def _heatmap_writer(folder: str, names: dict[str, str]):
    """``on_batch`` callback writing ``<name>_map.png`` and ``<name>_overlay.png`` per face."""
    from ._io import atomic_write_image as save
    from .heatmap import colorize, overlay
    from .preprocess import read_image_bgr

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    def on_batch(records: list[dict]) -> None:
        for rec in records:
            if rec["score"] is None:
                continue
            name = names[rec["path"]]
            save(out / f"{name}_map.png", colorize(rec["map"]))
            try:
                face = read_image_bgr(rec["path"])
            except (OSError, ValueError):  # pragma: no cover - it was just decoded
                continue
            save(out / f"{name}_overlay.png", overlay(face, rec["map"]))
            rec["heatmap"] = str(out / f"{name}_overlay.png")

    return on_batch


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def cmd_score(args: argparse.Namespace) -> int:
    import csv
    import io

    import torch

    from . import __version__
    from .metric import IFQAMetric
    from .scoring import default_workers

    rank, world, local_rank = _distributed()
    paths, skipped = _expand(args.paths, args.recursive)
    if not paths:
        print(
            "ifqa score: no image files found in the given paths (extensions taken from "
            f"folders and globs: {', '.join(sorted(IMAGE_EXTS))})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if skipped and rank == 0:
        print(
            f"ifqa score: skipped {len(skipped)} non-image file(s), e.g. {skipped[0]}",
            file=sys.stderr,
        )
    workers = default_workers() if args.workers is None else args.workers
    device = args.device
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    regions = args.regions or bool(args.heatmaps)
    metric = IFQAMetric(
        model=args.model,
        weights=args.weights,
        device=device,
        batch_size=args.batch_size,
        amp=args.amp,
        compile=args.compile,
    )
    if world > 1:
        import torch.distributed as dist

        if metric.device.type == "cuda":
            torch.cuda.set_device(metric.device)
        dist.init_process_group("nccl" if metric.device.type == "cuda" else "gloo")
    meta = {
        "model": metric.model_name,
        "weights": metric.weights_origin,
        "device": str(metric.device) if world == 1 else f"{metric.device.type} x{world}",
        "ifqa_loss": __version__,
    }
    if rank == 0:
        print(f"# model: {meta['model']}  weights: {meta['weights']}  device: {meta['device']}")
    mine = list(range(rank, len(paths), world))  # rank r scores every world-th file from r
    on_batch = None
    if args.heatmaps:
        names = dict(zip(paths, _heatmap_names(paths), strict=True))
        on_batch = _heatmap_writer(args.heatmaps, names)
    try:
        part = metric.score_files(
            [paths[i] for i in mine],
            regions=regions,
            workers=workers,
            progress=args.progress,
            on_batch=on_batch,
        )
    except KeyboardInterrupt:
        print("ifqa score: interrupted; no result file was written", file=sys.stderr)
        return 130
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, list(zip(mine, part, strict=True)))
        dist.destroy_process_group()
        records = [None] * len(paths)
        for pairs in gathered:
            for i, rec in pairs:
                records[i] = rec
    else:
        records = part
    ok = [r["score"] for r in records if r["score"] is not None]
    code = EXIT_ALL_FAILED if not ok else EXIT_SOME_FAILED if len(ok) < len(records) else EXIT_OK
    if rank != 0:
        return code
    for r in records:
        if r["score"] is None:
            print(f"{r['path']}\tERROR\t{r['error']}")
        else:
            print(f"{r['path']}\t{r['score']:.6f}")
    summary = {
        "count": len(records),
        "scored": len(ok),
        "failed": len(records) - len(ok),
        "skipped": len(skipped),
    }
    if ok:
        summary.update(
            mean=statistics.fmean(ok),
            std=statistics.stdev(ok) if len(ok) > 1 else 0.0,
            min=min(ok),
            max=max(ok),
        )
        print(
            f"# scored {len(ok)} of {len(records)} (failed {summary['failed']}): "
            f"mean {summary['mean']:.6f} std {summary['std']:.6f} "
            f"min {summary['min']:.6f} max {summary['max']:.6f}"
        )
    else:
        print(f"# scored 0 of {len(records)}: every file failed", file=sys.stderr)
    cols = ["path", "score", "error"]
    if regions:
        cols += ["eyes", "nose", "mouth", "rest"]
    if args.heatmaps:
        cols.append("heatmap")
    if args.csv:
        buf = io.StringIO()
        buf.write("# " + " ".join(f"{k}={v}" for k, v in meta.items()) + "\n")
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(records)
        atomic_write_text(args.csv, buf.getvalue())
    if args.json:
        doc = {"meta": meta, "summary": summary, "records": records, "skipped": skipped}
        atomic_write_text(args.json, json.dumps(doc, indent=1))
    return code


def cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models
    from .weights import find_weights

    print(f"{'name':<11} {'size':>4} {'params':>7}  weights")
    for cfg in list_models():
        try:
            where = str(find_weights(cfg.name))
        except FileNotFoundError:
            where = f"not found ({cfg.weight_file}: {cfg.source})"
        print(f"{cfg.name:<11} {cfg.native_size:>4} {cfg.params:>7}  {where}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from .weights import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, model=args.model)
    print(f"wrote {out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ifqa", description="IFQA face quality: score, compare, audit, convert, train"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what is loaded")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score image files (higher is better)")
    s.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    s.add_argument("--model", default="auto", help="auto | ifqa | ifqa++ | ifqa-lite ...")
    s.add_argument("--weights", default=None, help="checkpoint file or folder")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if any)")
    s.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding worker processes (default: CPU cores - 1, at most 8; 0: none)",
    )
    s.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    s.add_argument("--regions", action="store_true", help="add eyes/nose/mouth/rest means")
    s.add_argument("--csv", default=None, help="write results to this CSV file (atomically)")
    s.add_argument("--json", default=None, help="write results to this JSON file (atomically)")
    s.add_argument(
        "--heatmaps",
        default=None,
        metavar="DIR",
        help="write <name>_map.png (original colour map) and <name>_overlay.png per face; "
        "adds the region means to the CSV",
    )
    s.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="CUDA autocast")
    s.add_argument(
        "--compile", action="store_true", help="torch.compile the network (one-time cost)"
    )
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar with images/s (default: when stderr is a terminal)",
    )
    s.set_defaults(func=cmd_score)

    from .report import add_compare_parser

    add_compare_parser(sub)

    from .audit_cli import add_audit_parser

    add_audit_parser(sub)

    m = sub.add_parser("models", help="list the registered models and where their weights are")
    m.set_defaults(func=cmd_models)

    c = sub.add_parser("convert", help="convert a .pth checkpoint to .safetensors")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--model", default=None, help="check the keys against this architecture")
    c.set_defaults(func=cmd_convert)

    for name, helptext in (("train", "train a new discriminator"), ("validate", "validate one")):
        t = sub.add_parser(name, help=helptext, add_help=False)
        t.add_argument("rest", nargs=argparse.REMAINDER)
        t.set_defaults(func=None, entry=name)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("train", "validate"):
        # Hand everything after the sub-command to the trainer's own parser, so that its
        # options (``-h`` included, which argparse's REMAINDER would not capture) work.
        from .train import cli as train_cli

        entry = train_cli.train_main if argv[0] == "train" else train_cli.validate_main
        return entry(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    if args.func is None:
        from .train import cli as train_cli

        entry = train_cli.train_main if args.entry == "train" else train_cli.validate_main
        return entry(args.rest)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"ifqa {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
