"""``ifqa score``: score image files, folders and globs (one line per file or face)."""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
from pathlib import Path

from .._io import IMAGE_EXTS, atomic_write_text, list_images, strict_json
from .exits import (
    EXIT_ALL_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_FACE,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
)

BOX_COLUMNS = ("x0", "y0", "x1", "y1")


def _expand(inputs: list[str], recursive: bool) -> tuple[list[str], list[str]]:
    """(files to score, files skipped) for the command line's files, folders and globs.

    Files named explicitly are always tried (an unreadable one becomes an error record).
    Inside folders and glob matches, only image extensions (``IMAGE_EXTS``) are taken; other
    files are returned as skipped, so a log or a CSV beside the images is not a failure.
    Hidden files (and, in folders, hidden sub-folders) are passed over.
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
            found = list_images(p, ["**/*"] if recursive else ["*"], skipped)
            out.extend(sorted(map(str, found)))
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


def _heatmap_writer(folder: str, names: dict[str, str], limit: dict):
    """``on_batch`` callback writing ``<name>_map.png`` and ``<name>_overlay.png`` per face;
    ``limit``: the ``max_pixels`` keyword of the run, if given."""
    from .._io import atomic_write_image as save
    from ..files.heatmap import colorize, overlay
    from ..preprocess import read_image_bgr

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    def on_batch(records: list[dict]) -> None:
        for rec in records:
            if rec["score"] is None:
                continue
            name = names[rec["path"]]
            save(out / f"{name}_map.png", colorize(rec["map"]))
            try:
                face = read_image_bgr(rec["path"], **limit)
            except (OSError, ValueError):  # pragma: no cover - it was just decoded
                continue
            save(out / f"{name}_overlay.png", overlay(face, rec["map"]))
            rec["heatmap"] = str(out / f"{name}_overlay.png")

    return on_batch


def _photo_heatmap_writer(folder: str, names: dict[str, str], crop_size: int, limit: dict):
    """``on_batch`` callback for ``--align``: ``<name>_face<k>_map.png`` per face (the
    original colour map on the aligned crop) and ``<name>_overlay.png``, the photo with every
    face's map warped back over it, labelled with the face index and score."""
    import numpy as np

    from .._io import atomic_write_image as save
    from ..files.heatmap import colorize, paste_heatmaps
    from ..preprocess import read_image_bgr

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)

    def on_batch(records: list[dict]) -> None:
        for group in _group_by_file(records, align=True):
            group = [r for r in group if r["score"] is not None]
            if not group:
                continue
            name = names[group[0]["path"]]
            for r in group:
                save(out / f"{name}_face{r['face']}_map.png", colorize(r["map"]))
            try:
                photo = read_image_bgr(group[0]["path"], **limit)
            except (OSError, ValueError):  # pragma: no cover - it was just decoded
                continue
            picture = paste_heatmaps(
                photo,
                [r["map"] for r in group],
                [np.asarray(r["matrix"]) for r in group],
                crop_size,
                labels=[f"{r['face']}: {r['score']:.3f}" for r in group],
            )
            save(out / f"{name}_overlay.png", picture)
            for r in group:
                r["heatmap"] = str(out / f"{name}_overlay.png")

    return on_batch


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _align_options(args: argparse.Namespace):
    """The ``--align`` settings, or None without ``--align`` (checks that dlib is there)."""
    if not args.align:
        return None
    from ..align import AlignOptions, require

    require()
    return AlignOptions(size=args.align_size, upsample=args.upsample)


def _build_metric(args: argparse.Namespace, local_rank: int):
    """The metric of ``ifqa score``, on ``--device`` or this rank's GPU, else the CPU."""
    import torch

    from ..gate import GATE_CHOICES
    from ..metric import IFQAMetric

    device = args.device
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return IFQAMetric(
        model=args.model,
        weights=args.weights,
        device=device,
        batch_size=args.batch_size,
        amp=args.amp,
        compile=args.compile,
        face_gate=GATE_CHOICES[args.face_gate],
    )


def _init_distributed(metric) -> None:
    import torch
    import torch.distributed as dist

    if metric.device.type == "cuda":
        torch.cuda.set_device(metric.device)
    dist.init_process_group("nccl" if metric.device.type == "cuda" else "gloo")


def _score_meta(metric, world: int, align) -> dict:
    """Provenance of a run: written in the JSON's ``meta`` and the first line of stdout."""
    from dataclasses import asdict

    from .. import __version__

    meta = {
        "model": metric.model_name,
        "weights": metric.weights_origin,
        "device": str(metric.device) if world == 1 else f"{metric.device.type} x{world}",
        "ifqa_loss": __version__,
        "face_gate": None if metric.face_gate is None else metric.face_gate.weights_origin,
    }
    if align is not None:
        meta["align"] = {"detector": "dlib HOG + 68-point predictor", **asdict(align)}
    return meta


def model_line(model: str, weights: str, device: str, args: argparse.Namespace) -> str:
    """The ``# model:`` line of ``score`` and ``compare``; when ``--model auto`` fell back to a
    bundled model, it says so (instead of a log warning beside it: see ``cli.main``)."""
    line = f"# model: {model}  weights: {weights}  device: {device}"
    if args.model == "auto" and args.weights is None and model != "ifqa":
        line += (
            "  (auto: the original IFQA weights were not found; --model ifqa --weights PATH "
            "scores with the original metric)"
        )
    return line


def _group_by_file(records: list[dict], align: bool) -> list[list[dict]]:
    """Split one rank's records into one list per input file (a face 0 starts a photo)."""
    if not align:
        return [[r] for r in records]
    groups: list[list[dict]] = []
    for r in records:
        if r.get("face") in (None, 0) or not groups:
            groups.append([])
        groups[-1].append(r)
    return groups


def _score_all(args, metric, paths: list[str], rank: int, world: int, align) -> list[dict]:
    """Score this rank's share of ``paths`` (every world-th file from rank); with torchrun,
    gather every rank's records in input order (all ranks get them)."""
    from ..files.scoring import default_workers

    mine = list(range(rank, len(paths), world))
    on_batch = None
    limit = {} if args.max_pixels is None else {"max_pixels": args.max_pixels}
    if args.heatmaps:
        names = dict(zip(paths, _heatmap_names(paths), strict=True))
        if align is None:
            on_batch = _heatmap_writer(args.heatmaps, names, limit)
        else:
            on_batch = _photo_heatmap_writer(args.heatmaps, names, align.size, limit)
    part = metric.score_files(
        [paths[i] for i in mine],
        regions=args.regions or bool(args.heatmaps),
        workers=default_workers() if args.workers is None else args.workers,
        progress=args.progress,
        on_batch=on_batch,
        align=align or False,
        check_face=args.check_face,
        **limit,
    )
    if world == 1:
        return part
    import torch.distributed as dist

    gathered: list = [None] * world
    groups = _group_by_file(part, align is not None)
    dist.all_gather_object(gathered, list(zip(mine, groups, strict=True)))
    dist.destroy_process_group()
    per_file: list = [None] * len(paths)
    for pairs in gathered:
        for i, group in pairs:
            per_file[i] = group
    return [r for group in per_file for r in group]


def _exit_code(records: list[dict]) -> int:
    """0 all scored; 3 some files unreadable; 5 (``--align``) some photos without a face and
    none unreadable; 4 nothing scored at all."""
    if not any(r["score"] is not None for r in records):
        return EXIT_ALL_FAILED
    if any(r["error"] is not None and r.get("faces") is None for r in records):
        return EXIT_SOME_FAILED
    if any(r.get("faces") == 0 for r in records):
        return EXIT_NO_FACE
    return EXIT_OK


def _print_records(records: list[dict]) -> None:
    for r in records:
        where = r["path"] if r.get("face") is None else f"{r['path']}\t#{r['face']}"
        if r.get("faces") == 0:
            print(f"{where}\tNO FACE")
        elif r["score"] is None:
            print(f"{where}\tERROR\t{r['error']}")
        else:
            flag = f"\t{r['flag']}" if r.get("flag") else ""
            print(f"{where}\t{r['score']:.6f}{flag}")


def _summarise(records: list[dict], skipped: list[str], align: bool) -> dict:
    """Counts and statistics of the scores; printed and written in the JSON's ``summary``."""
    ok = [r["score"] for r in records if r["score"] is not None]
    if align:
        files = _group_by_file(records, True)
        no_face = sum(1 for g in files if g[0].get("faces") == 0)
        failed = sum(1 for g in files if g[0].get("faces") is None)
        summary = {"count": len(files), "faces": len(ok), "no_face": no_face, "failed": failed}
        what = f"{len(ok)} face(s) in {len(files) - no_face - failed} of {len(files)} photos"
        what += f" (no face {no_face}, failed {failed})"
    else:
        summary = {"count": len(records), "scored": len(ok), "failed": len(records) - len(ok)}
        what = f"{len(ok)} of {len(records)} (failed {summary['failed']})"
    summary["skipped"] = len(skipped)
    if not ok:
        why = "no face could be scored" if align else "every file failed"
        print(f"# scored 0 of {summary['count']}: {why}", file=sys.stderr)
        return summary
    summary.update(
        mean=statistics.fmean(ok),
        std=statistics.stdev(ok) if len(ok) > 1 else 0.0,
        min=min(ok),
        max=max(ok),
    )
    print(
        f"# scored {what}: mean {summary['mean']:.6f} std {summary['std']:.6f} "
        f"min {summary['min']:.6f} max {summary['max']:.6f}"
    )
    _flag_lines(records, summary)
    return summary


def _flag_lines(records: list[dict], summary: dict) -> None:
    """Count the flagged inputs into ``summary["flagged"]`` and print one line per kind."""
    from ..files.flags import FLAGS, flag_summary

    summary["flagged"] = {f: sum(r.get("flag") == f for r in records) for f in FLAGS}
    for line in flag_summary(records):
        print(f"# {line}")


def _csv_columns(args: argparse.Namespace) -> list[str]:
    cols = ["path", "face", "faces", *BOX_COLUMNS] if args.align else ["path"]
    cols += ["score", "error", "flag"]
    if args.regions or args.heatmaps:
        cols += ["eyes", "nose", "mouth", "rest"]
    if args.heatmaps:
        cols.append("heatmap")
    return cols


def _write_results(args, meta: dict, summary: dict, records: list[dict], skipped) -> None:
    """The CSV (a plain table, header first) and the JSON (``meta``, ``summary``,
    ``records``, ``skipped``), each written atomically."""
    import csv
    import io

    if args.csv:
        buf = io.StringIO()
        w = csv.DictWriter(
            buf, fieldnames=_csv_columns(args), extrasaction="ignore", lineterminator="\n"
        )
        w.writeheader()
        for r in records:
            box = r.get("box") or [None] * 4
            w.writerow(r | dict(zip(BOX_COLUMNS, box, strict=True)))
        atomic_write_text(args.csv, buf.getvalue())
    if args.json:
        doc = {"meta": meta, "summary": summary, "records": records, "skipped": skipped}
        atomic_write_text(args.json, strict_json(doc))


def _inputs(args: argparse.Namespace, rank: int) -> tuple[list[str], list[str]] | None:
    """(files to score, files skipped), or None after saying why there is nothing to score.

    Named paths that do not exist are reported at once, before the model loads: when none
    exists, there is nothing to score; otherwise they become failed records."""
    paths, skipped = _expand(args.paths, args.recursive)
    if not paths:
        print(
            "ifqa score: no image files found in the given paths (extensions taken from "
            f"folders and globs: {', '.join(sorted(IMAGE_EXTS))})",
            file=sys.stderr,
        )
        return None
    missing = [p for p in paths if not os.path.exists(p)]
    if missing and rank == 0:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        then = "nothing to score" if len(missing) == len(paths) else "reported as failed"
        print(
            f"ifqa score: no such file or folder: {', '.join(missing[:3])}{more} ({then})",
            file=sys.stderr,
        )
    if len(missing) == len(paths):
        return None
    if skipped and rank == 0:
        print(
            f"ifqa score: skipped {len(skipped)} non-image file(s), e.g. {skipped[0]}",
            file=sys.stderr,
        )
    return paths, skipped


def cmd_score(args: argparse.Namespace) -> int:
    rank, world, local_rank = _distributed()
    inputs = _inputs(args, rank)
    if inputs is None:
        return EXIT_USAGE
    paths, skipped = inputs
    if args.max_pixels is not None:  # before cv2 loads: OpenCV reads its own limit once
        from ..preprocess import limit_opencv

        limit_opencv(args.max_pixels)
    try:
        align = _align_options(args)
        if args.check_face:
            from ..align import require

            require()
    except ImportError as e:
        print(f"ifqa score: {e}", file=sys.stderr)
        return EXIT_USAGE
    metric = _build_metric(args, local_rank)
    if world > 1:
        _init_distributed(metric)
    meta = _score_meta(metric, world, align)
    if rank == 0:
        print(model_line(meta["model"], meta["weights"], meta["device"], args))
    try:
        records = _score_all(args, metric, paths, rank, world, align)
    except KeyboardInterrupt:
        print("ifqa score: interrupted; no result file was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    code = _exit_code(records)
    if rank != 0:
        return code
    _print_records(records)
    summary = _summarise(records, skipped, align is not None)
    _write_results(args, meta, summary, records, skipped)
    return code


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``1e8`` and ``100_000_000`` accepted too)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = 0.0
    if not (value.is_integer() and value >= 1):  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """The ``--max-pixels`` option of ``ifqa score`` and ``ifqa compare``."""
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help="refuse images of more than N pixels (width x height, read from the file's "
        "header before decoding) with an error row; default 100 million (1e8). Each decoding "
        "worker holds one image: about 6 bytes per pixel (docs/robustness.md)",
    )


def configure(s: argparse.ArgumentParser) -> None:
    """Give the ``score`` sub-parser its arguments."""
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
    s.add_argument(
        "--align",
        action="store_true",
        help="photos: find every face (dlib), align it to the FFHQ crop and score each face; "
        'one row per face (pip install "ifqa-loss[align]")',
    )
    s.add_argument(
        "--align-size", type=int, default=512, help="side of the aligned crops (default 512)"
    )
    s.add_argument(
        "--upsample",
        type=int,
        default=1,
        help="--align: times the detector doubles the photo (0: faces >= ~80 px, fastest; "
        "1: >= ~40 px, default)",
    )
    s.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="CUDA autocast")
    s.add_argument(
        "--compile", action="store_true", help="torch.compile the network (one-time cost)"
    )
    add_max_pixels(s)
    s.add_argument(
        "--check-face",
        action="store_true",
        help='flag images in which dlib finds no face (flag "no_face"; '
        'pip install "ifqa-loss[align]")',
    )
    s.add_argument(
        "--face-gate",
        choices=("auto", "off", "on"),
        default="auto",
        help="multiply each score by the face gate's P(face), so that images that are not "
        "faces score near 0 (auto: for the bundled models; docs/robustness.md)",
    )
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar with images/s (default: when stderr is a terminal)",
    )
    s.set_defaults(func=cmd_score)
