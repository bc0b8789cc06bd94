"""The ``ifqa`` console command."""

from __future__ import annotations

import argparse
import glob
import json
import logging
import statistics
import sys
from pathlib import Path

from ._io import atomic_write_text

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

# Exit codes of `ifqa score`.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3
EXIT_ALL_FAILED = 4


def _expand(inputs: list[str], recursive: bool) -> list[str]:
    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(str(f) for f in it if f.is_file() and f.suffix.lower() in IMAGE_EXTS))
        elif any(ch in item for ch in "*?["):
            out.extend(sorted(glob.glob(item, recursive=recursive)))
        else:
            out.append(item)  # a missing file is reported as a failed record
    return out


def cmd_score(args: argparse.Namespace) -> int:
    import csv
    import io

    from .metric import IFQAMetric

    paths = _expand(args.paths, args.recursive)
    if not paths:
        print("ifqa score: no image files found in the given paths", file=sys.stderr)
        return EXIT_USAGE
    metric = IFQAMetric(
        model=args.model, weights=args.weights, device=args.device, batch_size=args.batch_size
    )
    print(
        f"# model: {metric.model_name}  weights: {metric.weights_origin}  device: {metric.device}"
    )
    records = metric.score_files(paths, regions=args.regions)
    ok = [r["score"] for r in records if r["score"] is not None]
    for r in records:
        if r["score"] is None:
            print(f"{r['path']}\tERROR\t{r['error']}")
        else:
            print(f"{r['path']}\t{r['score']:.6f}")
    if ok:
        std = statistics.stdev(ok) if len(ok) > 1 else 0.0
        print(
            f"# scored {len(ok)} of {len(records)} (failed {len(records) - len(ok)}): "
            f"mean {statistics.fmean(ok):.6f} std {std:.6f} min {min(ok):.6f} max {max(ok):.6f}"
        )
    meta = {"model": metric.model_name, "weights": metric.weights_origin}
    cols = ["path", "score", "error"] + (["eyes", "nose", "mouth", "rest"] if args.regions else [])
    if args.csv:
        buf = io.StringIO()
        buf.write(f"# model={meta['model']} weights={meta['weights']}\n")
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)
        atomic_write_text(args.csv, buf.getvalue())
    if args.json:
        atomic_write_text(args.json, json.dumps({"meta": meta, "records": records}, indent=1))
    if not ok:
        return EXIT_ALL_FAILED
    return EXIT_SOME_FAILED if len(ok) < len(records) else EXIT_OK


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
    p = argparse.ArgumentParser(prog="ifqa", description="IFQA face quality: score, convert, train")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is loaded")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score image files (higher is better)")
    s.add_argument("paths", nargs="+", help="files, folders or glob patterns")
    s.add_argument("--model", default="auto", help="auto | ifqa | ifqa++ | ifqa-lite ...")
    s.add_argument("--weights", default=None, help="checkpoint file or folder")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if any)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    s.add_argument("--regions", action="store_true", help="add eyes/nose/mouth/rest means")
    s.add_argument("--csv", default=None, help="write results to this CSV file")
    s.add_argument("--json", default=None, help="write results to this JSON file")
    s.set_defaults(func=cmd_score)

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
