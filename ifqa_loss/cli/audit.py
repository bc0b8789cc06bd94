"""The ``ifqa audit`` command: which faces, which loss, which judge; then run and write."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from .._io import IMAGE_EXTS, atomic_write_image, atomic_write_text, list_images
from ..audit.measures import DEGRADATIONS, MIN_AUDIT_SIZE, AuditOptions, run_audit
from ..loss import FORMS
from .exits import EXIT_OK, EXIT_USAGE

DEFAULT_CONFIG = "lite_cpu"  # whose held-out faces (audit) and training faces (setting C)
MAX_ASPECT = 1.1  # aligned face crops are square


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"faces folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise ValueError(
            f"no face images in {folder} (looked for {', '.join(IMAGE_EXTS)} files); the audit "
            "takes a folder of clean, aligned face crops"
        )
    return files


def load_faces(files: list[Path], size: int) -> list[torch.Tensor]:
    """Read every file as a (3, size, size) face, or raise one error naming every bad file.

    Accepted: readable images, square within 10% (aligned face crops), at least 64 px a side.
    """
    import cv2

    from ..faces.images import load_face

    bad = []
    for f in files:
        img = cv2.imread(os.fspath(f), cv2.IMREAD_UNCHANGED)
        if img is None:
            bad.append(f"{f}: unreadable as an image")
            continue
        h, w = img.shape[:2]
        if min(h, w) < MIN_AUDIT_SIZE or max(h, w) / min(h, w) > MAX_ASPECT:
            bad.append(f"{f}: {w}x{h}")
    if bad:
        raise ValueError(
            f"{len(bad)} file(s) cannot be audited; the audit takes aligned face crops: "
            f"readable, square within {MAX_ASPECT:g}:1, at least {MIN_AUDIT_SIZE} px a side:\n  "
            + "\n  ".join(bad[:10])
        )
    return [load_face(f, size) for f in files]


def default_split(data_root: str | None) -> tuple[list[Path], list[Path]]:
    """(training faces, held-out faces) of the default audit's config: the held-out ones are
    what ``ifqa audit`` scores when no folder is given."""
    from ..faces.images import split_faces
    from ..train.config import load_config

    cfg = load_config(DEFAULT_CONFIG)
    return split_faces(cfg.faces_root(data_root), cfg.data)


def choose_faces(args: argparse.Namespace) -> tuple[list[Path], list[Path] | None, str]:
    """(audit faces, restorer training faces or None, description)."""
    split: tuple[list[Path], list[Path]] | None = None
    if args.faces is None or (args.train_faces is None and "C" in args.settings):
        try:
            split = default_split(args.data_root)
        except (FileNotFoundError, ValueError) as e:
            if args.faces is None:
                raise FileNotFoundError(
                    "no faces folder given: pass FACES_DIR (ifqa audit FACES_DIR, a folder of "
                    "clean, aligned face crops), or --data-root DIR (or $IFQA_FACES_DIR) for the "
                    f"held-out faces of config {DEFAULT_CONFIG}, which were not found: {e}"
                ) from None
    if args.faces is None:
        faces, what = split[1], f"held-out faces of config {DEFAULT_CONFIG}"
    else:
        faces, what = _images_in(Path(args.faces)), f"all images in {args.faces}"
    train = _images_in(Path(args.train_faces)) if args.train_faces else split and split[0]
    if "C" in args.settings and not train:
        raise ValueError(
            "setting C trains a small restorer and needs training faces disjoint from the audit "
            "faces: pass --train-faces DIR (or --settings AB)"
        )
    if train:
        overlap = {p.resolve() for p in faces} & {p.resolve() for p in train}
        if overlap:
            raise ValueError(
                f"{len(overlap)} audit face(s) are also training faces, e.g. "
                f"{sorted(overlap)[0]}; the audit faces must be held out"
            )
    return faces[: args.limit] if args.limit else faces, train or None, what


def _criterion(args: argparse.Namespace):
    from ..loss import FPR_WEIGHTS, IFQALoss

    regions = None
    if args.region_weights:
        regions = (
            FPR_WEIGHTS if args.region_weights == "fpr" else yaml.safe_load(args.region_weights)
        )
        if not isinstance(regions, dict):
            raise ValueError(
                f"--region-weights must be 'fpr' or a mapping such as '{{eyes: 2, mouth: 2}}', "
                f"got {args.region_weights!r}"
            )
    if args.loss == "adversarial":
        return _adversarial(args, regions)
    return IFQALoss(model=args.model, weights=args.weights, form=args.form, region_weights=regions)


def _adversarial(args: argparse.Namespace, regions: dict | None):
    """``--loss adversarial``: a co-trained discriminator (setting C only), run at the
    restorer's image size; its weight is ``--ifqa-weight``."""
    from ..adversarial import IFQAAdversarialLoss

    if set(args.settings) - {"C"}:
        raise ValueError(
            "--loss adversarial trains its discriminator beside a restorer: it applies to "
            f"setting C only; pass --settings C (got --settings {args.settings})"
        )
    if args.form != "one_minus":
        raise ValueError("--form is for --loss frozen; the adversarial term has one form")
    resize = args.restorer_size % 32 != 0
    return IFQAAdversarialLoss(
        model=args.model,
        weights=args.weights,
        loss_weight=1.0,
        region_weights=regions,
        resize=resize,
        warmup=0,  # the audit measures the term itself from the first step
    )


def _own_scorer(criterion) -> Any:
    """The loss's own score: its (frozen) discriminator; for a co-trained loss, a frozen copy
    of its starting point (the co-trained one is never a judge of what it trained)."""
    import copy

    from ..metric import IFQAMetric

    net = getattr(criterion, "discriminator", None)
    if net is None:
        net = copy.deepcopy(criterion.net).freeze()
    return IFQAMetric(model=net, device="cpu", batch_size=8)


def _judge(args: argparse.Namespace, criterion) -> Any:
    from ..metric import IFQAMetric

    if args.judge == "none":
        return None
    judge = IFQAMetric(model=args.judge, weights=args.judge_weights, device="cpu", batch_size=8)
    if judge.weights_origin == criterion.weights_origin:
        raise ValueError(
            f"the judge ({args.judge}) is the loss's own discriminator; pick another --judge"
        )
    return judge


def _other_judges(args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    """The ``--judges`` of other families (NIQE, BRISQUE, piq's), and notes on missing ones."""
    from ..audit.judges import resolve

    try:
        return resolve(args.judges)
    except ImportError as e:
        raise ValueError(f"--judges {args.judges}: {e}") from None


def _restorer_faces(n: int | None) -> str:
    return "setting C not run" if n is None else f"restorer training faces: {n}"


def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
    """Resolve everything, check every input, run the audit; returns (result, meta, faces)."""
    from ..audit.identity import identity_distance, identity_note

    opts = AuditOptions(
        settings=args.settings,
        size=args.size,
        steps=args.steps,
        lr=args.lr,
        fidelity_weight=args.fidelity_weight,
        all_degradations=args.all_degradations,
        restorer_size=args.restorer_size,
        restorer_warmup=args.restorer_warmup,
        restorer_steps=args.restorer_steps,
        ifqa_weight=args.ifqa_weight,
        seed=args.seed,
    )
    opts.check()
    others, judge_notes = _other_judges(args)
    files, train_files, what = choose_faces(args)
    faces = load_faces(files, opts.size)
    train = load_faces(train_files, opts.size) if train_files and "C" in opts.settings else None
    criterion = _criterion(args)
    judge = _judge(args, criterion)
    own = _own_scorer(criterion)
    meta = {
        "model": criterion.model_name,
        "weights": criterion.weights_origin,
        "loss": repr(criterion),
        "judge": judge.model_name if judge else None,
        "judge_weights": judge.weights_origin if judge else None,
        "faces": what,
        "face_files": [os.fspath(f) for f in files],
        "train_faces": len(train) if train else None,  # None: setting C not run
        "judges": {j.name: j.describe() for j in others},
        "judges_missing": judge_notes,
    }
    print(f"# loss: {criterion!r}")
    print(f"# judge: {meta['judge']} ({meta['judge_weights']})")
    print(f"# judges of other families: {', '.join(meta['judges']) or 'none'}")
    for note in judge_notes:
        print(f"#   not installed: {note}")
    print(f"# faces: {len(files)} ({what}); {_restorer_faces(meta['train_faces'])}")
    ident = identity_distance()
    res = run_audit(
        criterion,
        faces,
        own=own,
        judge=judge,
        train_faces=train,
        options=opts,
        identity=ident,
        judges=others,
        progress=args.progress if args.progress is not None else sys.stderr.isatty(),
    )
    res["identity_note"] = identity_note() if ident is None else ""
    meta["seconds"] = round(res["seconds"], 1)
    return res, meta, files


def cmd_audit(args: argparse.Namespace) -> int:
    """``ifqa audit``: 0 when the audit ran (whatever its verdicts), 2 for bad input."""
    from ..audit.report import format_table, picture_grid, to_json

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    try:
        res, meta, files = run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"ifqa audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(format_table(res))
    out = Path(args.out)
    grid = atomic_write_image(out / "grid.png", picture_grid(res, [f.name for f in files]))
    doc = atomic_write_text(out / "audit.json", to_json(res, meta))
    print(f"\nwrote {grid} and {doc} ({time.time() - t0:.0f} s)")
    return EXIT_OK


def configure(a: argparse.ArgumentParser) -> None:
    """Give the ``audit`` sub-parser its arguments (``ifqa audit``)."""
    d = AuditOptions()
    a.description = (
        "Optimise against the loss as configured (A: pixels alone; B: pixels with a "
        "fidelity term; C: a small restorer trained with L1 vs L1 + w * IFQA) and measure "
        "the results with what the loss never sees: PSNR/SSIM to the clean face and an "
        "independent judge. Degradations: "
        + "; ".join(f"{x.name}: {x.label}" for x in DEGRADATIONS)
        + ". Verdict GAMED when PSNR falls by more than 1 dB on average or more than half "
        "of the faces end realer than real."
    )
    a.add_argument(
        "faces",
        nargs="?",
        default=None,
        metavar="FACES_DIR",
        help="folder of clean aligned faces (default: the held-out faces of the bundled "
        "model's training config, under --data-root, else $IFQA_FACES_DIR, else "
        "../shared/data/faces beside a source checkout)",
    )
    a.add_argument("--out", default="audit", help="output folder (default: audit)")
    a.add_argument("--model", default="auto", help="the loss's model (auto | ifqa | ifqa-lite ...)")
    a.add_argument("--weights", default=None, help="checkpoint for --model")
    a.add_argument(
        "--loss",
        default="frozen",
        choices=("frozen", "adversarial"),
        help="frozen: IFQALoss (default); adversarial: IFQAAdversarialLoss, a discriminator "
        "trained beside the setting-C restorer from --model's weights (needs --settings C)",
    )
    a.add_argument(
        "--form",
        default="one_minus",
        choices=FORMS,
        help="IFQALoss form (default one_minus; features and map compare with the clean face)",
    )
    a.add_argument(
        "--region-weights",
        default=None,
        help="'fpr' (eyes 2, nose 1.5, mouth 2) or a mapping, e.g. '{eyes: 2, mouth: 2}'",
    )
    a.add_argument(
        "--judge",
        default="ifqa-judge",
        help="independent judge model, or 'none' (default ifqa-judge)",
    )
    a.add_argument("--judge-weights", default=None, help="checkpoint for --judge")
    a.add_argument(
        "--judges",
        default="auto",
        help="judges of other families, comma-separated: niqe, brisque, ms_ssim, gmsd, "
        "haarpsi, vif, or piq (its four); 'auto' (default): all installed; 'none'",
    )
    a.add_argument(
        "--train-faces",
        default=None,
        metavar="DIR",
        help="clean faces to train the setting-C restorer on (default: the bundled model's "
        "training faces, when available)",
    )
    a.add_argument("--data-root", default=None, help="faces root of the default split")
    a.add_argument(
        "--limit", type=int, default=16, help="audit at most N faces (default 16; 0: all)"
    )
    a.add_argument("--settings", default=d.settings, help="which of A, B, C to run (default ABC)")
    a.add_argument("--size", type=int, default=d.size, help=f"image side (default {d.size})")
    a.add_argument("--steps", type=int, default=d.steps, help=f"A/B Adam steps (default {d.steps})")
    a.add_argument("--lr", type=float, default=d.lr, help="A/B learning rate (default 1/255)")
    a.add_argument(
        "--fidelity-weight",
        type=float,
        default=d.fidelity_weight,
        help="B: weight of the 3x3-box L1 term to the degraded input "
        f"(default {d.fidelity_weight:g})",
    )
    a.add_argument(
        "--all-degradations",
        action="store_true",
        help="every face under every degradation (default: face i gets degradation i mod 4)",
    )
    a.add_argument(
        "--restorer-size",
        type=int,
        default=d.restorer_size,
        help=f"C: face side for the restorer (default {d.restorer_size})",
    )
    a.add_argument("--restorer-warmup", type=int, default=d.restorer_warmup, help="C: L1 steps")
    a.add_argument(
        "--restorer-steps", type=int, default=d.restorer_steps, help="C: steps per branch"
    )
    a.add_argument(
        "--ifqa-weight", type=float, default=d.ifqa_weight, help="C: w in L1 + w * IFQA (0.1)"
    )
    a.add_argument("--seed", type=int, default=d.seed)
    a.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tqdm progress bar (default: when stderr is a terminal)",
    )
    a.set_defaults(func=cmd_audit)
