"""Training the face gate (:class:`ifqa_loss.gate.FaceGate`): faces against degenerate images.

The gate must pass every face, whatever its quality, colour, age, pose or framing, and stop
only images that are not faces. Positives are the training faces of ``lite_degenerate_cpu``,
the aligned crops of ``more/``, the real low-quality, grayscale and old-photograph crops of
:data:`~ifqa_loss.train.gate_faces.REAL_TRAIN` and the faces dlib finds in the training
photographs (never the held-out faces, nor the test set of :mod:`~ifqa_loss.train.gate_faces`).
Each is moved and recoloured, and may be degraded (the trainer's blur / down-up / noise / JPEG
chain), shrunk to a few dozen pixels and back, given a restorer's artefact, turned gray or
sepia, padded at an edge, or partly covered. Negatives are
:func:`~ifqa_loss.train.degenerate.random_degenerate` images at several sizes: flat and
near-flat colours, gradients, noise and patterns, posterised faces, and corners of the
training photographs (``data.backgrounds``; never the validation's ``TEST_BACKGROUNDS``) as the
non-face kind; never blurred faces, which are faces of low quality. Both go through either of
the metric's two resizes to the discriminators' 256 px (OpenCV bilinear for files, antialiased
bilinear for tensors), then to the gate's 128 px. A fixed pool of each is made once, then the
gate trains on it::

    python -m ifqa_loss.train.face_gate --out runs/gate \
        --export ifqa_loss/bundled/face-gate.safetensors
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .._io import list_images
from ..faces.degrade import down_up, to_gray
from ..faces.images import load_face, split_faces
from ..gate import FaceGate
from ..preprocess import resize_map
from .artefacts import random_artefact
from .config import DataConfig, DegradationConfig, load_config
from .data import augment
from .degenerate import KINDS, _resized, random_degenerate
from .degradations import random_degradation
from .gate_faces import REAL_TRAIN, SIDES, aligned_faces, pad_edge, sepia
from .trainer import load_backgrounds

log = logging.getLogger("ifqa_loss.train.face_gate")

DISCRIMINATOR_SIZE = 256  # the bundled discriminators' native side
EXTRA_FACES = ("more/*/*.png", "more/*/*.jpg")  # aligned crops; the *_whole folders are skipped


@dataclass
class GateConfig:
    """The gate's recipe (all of it; ``--set``-style overrides are the CLI's options)."""

    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    decay_from: float = 0.7  # fraction of the steps after which the rate falls linearly to 0
    pool: int = 6000  # images of each class made once
    monitor: int = 400  # images of each class from the monitor faces and photographs
    width: int = 32
    seed: int = 0
    degraded_prob: float = 0.6
    artefact_prob: float = 0.2  # restorers' artefacts (over-sharpening, ringing, casts...)
    gray_prob: float = 0.25
    sepia_prob: float = 0.1  # of the gray ones: tinted like an old print
    fade_prob: float = 0.1  # an old colour print: low contrast, warm cast
    lowres_prob: float = 0.2  # shrunk to lowres_sides pixels and back (a small face in a photo)
    lowres_sides: tuple[int, int] = (28, 96)
    pad_prob: float = 0.2  # a band of pad_fraction at one edge: black, gray or white
    pad_fraction: tuple[float, float] = (0.05, 0.35)
    occlude_prob: float = 0.1  # a blob of colour over part of the face (a hand, a microphone)
    weight_decay: float = 1e-4
    face_sizes: tuple[int, ...] = (128, 256, 512)
    face_size_probs: tuple[float, ...] = (0.15, 0.35, 0.5)
    degenerate_sizes: tuple[int, ...] = (96, 128, 192, 256, 384, 512)
    # constant, near_constant, gradient, noise, nonface, smooth, posterise: never a blurred face
    degenerate_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.5, 4.0, 0.0, 3.0)


def gate_sources(
    data_root: str | os.PathLike | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(faces, backgrounds)``: (512, 512, 3) float32 faces and whole photographs in [0, 1]."""
    cfg = load_config("lite_degenerate_cpu")
    files = face_files(cfg.faces_root(data_root))
    faces = [load_face(p, 512).numpy().transpose(1, 2, 0).copy() for p in files]
    log.info("%d aligned faces", len(faces))
    return faces, load_backgrounds(cfg, data_root)


def face_files(root: Path) -> list[Path]:
    """The aligned crops the gate trains on: the training faces of ``lite_degenerate_cpu``,
    the aligned folders of ``more/`` and :data:`~ifqa_loss.train.gate_faces.REAL_TRAIN`."""
    train, _held_out = split_faces(root, load_config("lite_degenerate_cpu").data)
    extra = [p for p in list_images(root, EXTRA_FACES) if not p.parent.name.endswith("_whole")]
    return train + extra + list_images(root, REAL_TRAIN)


def photo_faces(photos: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Each photograph's faces, aligned to the FFHQ 512 crop (dlib, the ``[align]`` extra);
    empty lists when dlib is missing."""
    from ..align import require

    try:
        require()
    except ImportError as e:
        log.warning("no faces from the photographs: %s", e)
        return [[] for _ in photos]
    return [aligned_faces(photo) for photo in photos]


def split_monitor(
    faces: list[np.ndarray], backgrounds: list[np.ndarray], every: int = 10
) -> tuple[tuple[list, list], tuple[list, list]]:
    """``((faces, backgrounds), (monitor faces, monitor backgrounds))``: every ``every``-th
    face and photograph is kept out of training, to watch the gate on images it never saw
    (the validation's held-out faces and photographs are not used at all)."""

    def cut(items: list) -> tuple[list, list]:
        return [v for i, v in enumerate(items) if i % every], items[::every]

    (f, mf), (b, mb) = cut(faces), cut(backgrounds)
    return (f, b), (mf, mb)


def to_gate_input(img: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) in [0, 1] -> ((3, 128, 128), (2,)) as the gate sees it inside the metric.

    The metric resizes files with OpenCV's bilinear (no antialiasing) and tensors with an
    antialiased bilinear; each is drawn half the time.
    """
    n = DISCRIMINATOR_SIZE
    if rng.random() < 0.5:
        x = torch.from_numpy(cv2.resize(img, (n, n), interpolation=cv2.INTER_LINEAR))
        x = x.permute(2, 0, 1)
    else:
        x = resize_map(torch.from_numpy(img).permute(2, 0, 1).contiguous(), n)
    small, stats = FaceGate.prepare(x[None].clamp(0, 1) * 2 - 1)
    return small[0], stats[0]


# Wider than the discriminators' training: the gate must hold for any face crop.
_AUGMENT = DataConfig(aug_scale=[0.85, 1.15], aug_rotate=10.0, aug_shift=0.06, aug_color=0.25)


def make_positive(face: np.ndarray, cfg: GateConfig, rng: np.random.Generator) -> np.ndarray:
    """A face, moved and recoloured, changed by :func:`appearance`, maybe covered in part or
    padded at an edge; at one of ``cfg.face_sizes``."""
    moved = augment(torch.from_numpy(face.transpose(2, 0, 1)), _AUGMENT, rng)
    face = np.ascontiguousarray(moved.numpy().transpose(1, 2, 0))
    face = appearance(face, cfg, rng)
    if rng.random() < cfg.occlude_prob:
        face = occlude(face, rng)
    if rng.random() < cfg.pad_prob:
        side = SIDES[int(rng.integers(len(SIDES)))]
        value = float(rng.choice([0.0, 0.0, 135 / 255, 1.0]))
        face = pad_edge(face, side, float(rng.uniform(*cfg.pad_fraction)), value)
    size = int(rng.choice(cfg.face_sizes, p=cfg.face_size_probs))
    return _resized(np.ascontiguousarray(face, dtype=np.float32), size)


def appearance(img: np.ndarray, cfg: GateConfig, rng: np.random.Generator) -> np.ndarray:
    """Maybe gray or sepia, faded, degraded (the trainer's chain), shrunk to a few dozen
    pixels and back, with an artefact. Faces and the non-face crops both go through it, so
    that none of these is a cue to a face."""
    if rng.random() < cfg.gray_prob:
        img = sepia(img) if rng.random() < cfg.sepia_prob / cfg.gray_prob else to_gray(img)
    if rng.random() < cfg.fade_prob:
        img = fade(img, rng)
    if rng.random() < cfg.degraded_prob:
        _, img, _ = random_degradation(img, _degradation(), rng)
    if rng.random() < cfg.lowres_prob:
        side = rng.uniform(*cfg.lowres_sides)
        img = down_up(img, img.shape[0] / side, "area", ("linear", "cubic")[rng.integers(2)])
    if rng.random() < cfg.artefact_prob:
        img, _ = random_artefact(np.ascontiguousarray(img), _degradation(), rng)
    return np.ascontiguousarray(img, dtype=np.float32)


def fade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An old colour print: contrast lowered towards a light mean and a warm cast."""
    k = rng.uniform(0.4, 0.8)
    tint = np.array([1.0, 0.97, 0.85], np.float32) * rng.uniform(0.9, 1.1)
    out = (img - img.mean()) * k + rng.uniform(0.5, 0.75)
    return np.clip(out * tint, 0, 1).astype(np.float32)


def occlude(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged ellipse of one colour (skin-like or any) over part of the lower half or
    across the eyes, as a hand, a microphone or dark glasses would cover it."""
    h, w = face.shape[:2]
    mask = np.zeros((h, w), np.float32)
    centre = (int(rng.uniform(0.25, 0.75) * w), int(rng.uniform(0.35, 0.9) * h))
    axes = (int(rng.uniform(0.08, 0.25) * w), int(rng.uniform(0.06, 0.18) * h))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.01 * w)[..., None]
    skin = np.array([0.85, 0.65, 0.55], np.float32) * rng.uniform(0.4, 1.1)
    colour = skin if rng.random() < 0.5 else rng.random(3).astype(np.float32) * 0.6
    shade = colour * (1 + 0.1 * rng.standard_normal((h, w, 1)).astype(np.float32))
    return np.clip(face * (1 - mask) + shade * mask, 0, 1).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _degradation() -> DegradationConfig:
    return load_config("lite_degenerate_cpu").degradation


def make_negative(
    face: np.ndarray,
    backgrounds: list[np.ndarray],
    cfg: GateConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str]:
    """``(image, kind)``: a degenerate image at one of ``cfg.degenerate_sizes``; a non-face
    crop goes through the faces' :func:`appearance` changes."""
    size = int(rng.choice(cfg.degenerate_sizes))
    img, p = random_degenerate(_resized(face, size), cfg.degenerate_weights, rng, backgrounds)
    if p["kind"] == "nonface":
        img = appearance(img, cfg, rng)
    return img, p["kind"]


def make_pool(
    faces: list[np.ndarray],
    backgrounds: list[np.ndarray],
    cfg: GateConfig,
    n: int,
    seed: int,
) -> Pool:
    """``n`` faces then ``n`` degenerate images as the gate sees them."""
    rng = np.random.default_rng([seed, 29])
    xs, stats, kinds = [], [], []
    for i in range(2 * n):
        face = faces[int(rng.integers(len(faces)))]
        if i < n:
            img, kind = make_positive(face, cfg, rng), "face"
        else:
            img, kind = make_negative(face, backgrounds, cfg, rng)
        x, s = to_gate_input(img, rng)
        xs.append(x.half())
        stats.append(s)
        kinds.append(kind)
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    return Pool(torch.stack(xs), torch.stack(stats), y, kinds)


@dataclass
class Pool:
    """Gate inputs: ``x`` (N, 3, 128, 128) float16, ``stats`` (N, 2), ``y`` (N,) 1 = face,
    ``kinds`` ("face" or the degenerate kind) per image."""

    x: torch.Tensor
    stats: torch.Tensor
    y: torch.Tensor
    kinds: list[str]


def _lr(cfg: GateConfig, step: int) -> float:
    start = int(cfg.decay_from * cfg.steps)
    if step < start:
        return cfg.lr
    return cfg.lr * max(0.0, 1.0 - (step - start) / max(1, cfg.steps - start))


def train_gate(pool: Pool, cfg: GateConfig, log_every: int = 100) -> tuple[FaceGate, list[dict]]:
    """Train a gate on a pool (balanced batches, random horizontal flips); returns the log."""
    torch.manual_seed(cfg.seed)
    gate = FaceGate(cfg.width)
    opt = torch.optim.AdamW(gate.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pos, neg = torch.nonzero(pool.y > 0.5)[:, 0], torch.nonzero(pool.y < 0.5)[:, 0]
    half = cfg.batch // 2
    history, t0, running = [], time.perf_counter(), []
    for step in range(cfg.steps):
        idx = torch.cat([_draw(pos, half), _draw(neg, half)])
        xb = pool.x[idx].float()
        flip = torch.rand(len(idx)) < 0.5
        xb[flip] = xb[flip].flip(-1)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        logits = gate.logits_prepared(xb, pool.stats[idx])
        loss = F.binary_cross_entropy_with_logits(logits, pool.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            rec = {"step": step + 1, "loss": float(np.mean(running)), "s": time.perf_counter() - t0}
            history.append(rec)
            log.info("step %(step)d  loss %(loss).4f  %(s).0f s", rec)
            running = []
    return gate.eval().requires_grad_(False), history


def _draw(index: torch.Tensor, k: int) -> torch.Tensor:
    return index[torch.randint(len(index), (k,))]


@torch.no_grad()
def summarise(gate: FaceGate, pool: Pool) -> dict:
    """P(face) on a pool: faces' minimum and 1st percentile, each degenerate kind's maximum."""
    chunks = zip(pool.x.split(256), pool.stats.split(256), strict=True)
    p = torch.cat([torch.sigmoid(gate.logits_prepared(x.float(), s)) for x, s in chunks])
    kinds_arr = np.array(pool.kinds)
    faces = p[torch.from_numpy(kinds_arr == "face")].numpy()
    out = {"faces_min": float(faces.min()), "faces_p1": float(np.percentile(faces, 1))}
    for kind in KINDS:
        sel = kinds_arr == kind
        if sel.any():
            out[f"max_{kind}"] = float(p[torch.from_numpy(sel)].max())
    return out


def export_gate(gate: FaceGate, path: str | os.PathLike, cfg: GateConfig) -> Path:
    """Write the gate as safetensors (its width and recipe in the header)."""
    from ..weights import export_face_gate

    return export_face_gate(gate, path, {"recipe": json.dumps(asdict(cfg))})


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ifqa_loss.train.face_gate",
        description="Train the face gate (faces against degenerate images).",
    )
    p.add_argument("--out", required=True, help="run folder (log.json, gate.safetensors)")
    p.add_argument("--steps", type=int, default=GateConfig.steps)
    p.add_argument("--pool", type=int, default=GateConfig.pool, help="images of each class")
    p.add_argument("--seed", type=int, default=GateConfig.seed)
    p.add_argument("--data-root", default=None, help="faces folder (else $IFQA_FACES_DIR)")
    p.add_argument("--export", default=None, help="also write the gate here (.safetensors)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command; returns an exit code."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = GateConfig(steps=args.steps, pool=args.pool, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    faces, backgrounds = gate_sources(args.data_root)
    (faces, backgrounds), (m_faces, m_backgrounds) = split_monitor(faces, backgrounds)
    faces += [f for found in photo_faces(backgrounds) for f in found]
    m_faces += [f for found in photo_faces(m_backgrounds) for f in found]
    log.info("with the photographs' faces: %d training, %d monitor", len(faces), len(m_faces))
    pool = make_pool(faces, backgrounds, cfg, cfg.pool, cfg.seed)
    monitor = make_pool(m_faces, m_backgrounds, cfg, cfg.monitor, cfg.seed + 1000)
    log.info("pools made in %.0f s", time.perf_counter() - t0)
    gate, history = train_gate(pool, cfg)
    summary = summarise(gate, monitor)
    log.info("monitor pool: %s", json.dumps(summary))
    export_gate(gate, out / "gate.safetensors", cfg)
    if args.export:
        export_gate(gate, args.export, cfg)
    record = {"config": asdict(cfg), "history": history, "monitor": summary}
    record["wall_s"] = math.floor(time.perf_counter() - t0)
    (out / "log.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
