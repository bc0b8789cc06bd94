"""The adversarial trainer for IFQA discriminators (single process or ``torchrun`` DDP).

One step:
1. a batch of clean faces and their degraded copies (see :mod:`ifqa_loss.train.data`);
2. the generator restores part of the degraded faces; the fakes are those restorations plus
   the remaining degraded faces as they are;
3. region-swapped (CutMix) samples mix real and fake faces in the eyes/nose/mouth regions;
4. the discriminator takes one step on region-weighted per-pixel BCE over real (target 1),
   fake (target 0) and mixed (target = the swap mask) samples;
5. the generator takes one step on a region-weighted L1 reconstruction loss plus the
   adversarial term (per-pixel BCE of the discriminator's logits against "real").

Optional hardening (``hardening.py``, all off by default): attacks on the current discriminator
replace some fakes (``loss.pgd_*``, optionally continued from a ring buffer), and the
discriminator step adds an R1 penalty on the reals and a gradient-alignment term on the fakes.

Every random draw of a step is a pure function of ``(seed, step, rank)``, so a resumed run
repeats an uninterrupted one exactly (on the same device, thread count and world size).
Checkpoints hold both networks, both optimisers, the RNG states and the step, and are written
by rank 0 only, atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import weights
from .._io import atomic_write, atomic_write_text, list_images, strict_json
from ..faces.images import split_faces
from ..models.cnn import IFQACNN
from ..models.registry import list_models
from ..regions import RegionWeights
from ..weights import find_weights
from .config import TrainConfig
from .data import FaceStream, StreamSampler, load_faces_uint8, photo_faces_uint8, photo_files
from .degenerate import load_photo
from .ema import ema_update
from .fpr import (
    jittered_landmarks,
    mix,
    paired_rank_loss,
    pixel_accuracy,
    region_rank_loss,
    swap_masks,
    visibility,
    weighted_bce,
)
from .generator import RestorationGenerator
from .hardening import (
    AttackBuffer,
    adversarial_fakes,
    gradient_alignment_loss,
    input_gradient_penalty,
    pgd_slots,
)
from .validation import evaluate

log = logging.getLogger("ifqa_loss.train")

CKPT_NAME = "last.pt"
CKPT_VERSION = 1


class SimulatedCrash(RuntimeError):
    """Raised by ``train(..., crash_at_step=k)`` after step ``k`` (a testing aid)."""


class _Logits(nn.Module):
    """Wraps a discriminator so that ``forward`` returns logits (what DDP calls)."""

    def __init__(self, d: IFQACNN) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d.forward_logits(x)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    want = cfg.run.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(want)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return DistInfo()
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, here)


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed derived from (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, 3, step, rank]).generate_state(2, np.uint64)[0] >> 1)


def _rng_state() -> dict[str, Any]:
    st = np.random.get_state()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": st[0],
            "keys": torch.from_numpy(st[1].astype(np.int64)),
            "pos": int(st[2]),
            "has_gauss": int(st[3]),
            "cached": float(st[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``: tensors and plain containers only)."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)


def _lr_scale(cfg: TrainConfig, step: int) -> float:
    frac, total = cfg.optim.decay_fraction, cfg.run.steps
    if frac <= 0 or total <= 0:
        return 1.0
    start = total * (1.0 - frac)
    if step < start:
        return 1.0
    t = min(1.0, (step - start) / max(1.0, total - start))
    return 1.0 + t * (cfg.optim.final_lr_scale - 1.0)


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record))
        except Exception:
            self.handleError(record)


def _setup_logging(out: Path, main: bool) -> list[logging.Handler]:
    handlers: list[logging.Handler] = []
    if not main:
        return handlers
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    fh = logging.FileHandler(out / "train.log")
    th = _TqdmHandler()
    for h in (fh, th):
        h.setFormatter(fmt)
        log.addHandler(h)
        handlers.append(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    threads = torch.get_num_threads()
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{threads} torch threads, torch {torch.__version__}"
    )


def build_models(cfg: TrainConfig) -> tuple[IFQACNN, RestorationGenerator]:
    d = IFQACNN(width=cfg.model.width, native_size=cfg.model.native_size)
    g = RestorationGenerator(cfg.generator.channels, cfg.generator.blocks, cfg.generator.unshuffle)
    return d, g


def export_discriminator(d: IFQACNN, path: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write the discriminator as safetensors, its model named (``float16`` halves the file)."""
    tdt = torch.float16 if dtype == "float16" else torch.float32
    return weights.export_discriminator(d, path, dtype=tdt)


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    data_root: str | os.PathLike | None = None,
    export_path: str | os.PathLike | None = None,
    faces: list[torch.Tensor] | None = None,
    val_faces: list[torch.Tensor] | None = None,
    crash_at_step: int | None = None,
) -> dict[str, Any]:
    """Train a discriminator (and its generator) as configured; returns a summary dict.

    Args:
        cfg: the configuration.
        out_dir: run folder: ``config.yaml``, ``train.log``, ``ckpt/last.pt``,
            ``discriminator.safetensors``, ``summary.json``.
        resume: continue from ``out_dir/ckpt/last.pt`` when it exists.
        data_root: faces folder (overrides ``$IFQA_FACES_DIR`` and ``data.root``).
        export_path: also write the final discriminator there (safetensors).
        faces: clean training faces as (3, H, W) uint8 tensors, instead of reading files.
        val_faces: held-out faces as (3, 512, 512) float tensors in [0, 1], instead of files.
        crash_at_step: raise :class:`SimulatedCrash` once this many steps are done (tests).
    """
    out = Path(out_dir)
    t_start = time.time()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    di = setup_distributed(device)
    if cfg.run.threads:
        torch.set_num_threads(int(cfg.run.threads))
    elif di.active and device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", di.world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if di.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if di.active:
        dist.barrier()
    handlers = _setup_logging(out, di.is_main)
    try:
        return _train(
            cfg,
            out,
            di,
            device,
            resume,
            data_root,
            export_path,
            faces,
            val_faces,
            crash_at_step,
            t_start,
        )
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
        if di.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


LOG_KEYS = (
    "loss_d",
    "d_real",
    "d_fake",
    "d_mix",
    "d_rank",
    "d_r1",
    "d_align",
    "loss_g",
    "g_rec",
    "g_adv",
    "acc_real",
    "acc_fake",
    "acc_gen",
    "acc_pgd",
    "acc_mix",
)


@dataclass
class _Run:
    """What a training run carries from step to step."""

    cfg: TrainConfig
    out: Path
    di: DistInfo
    device: torch.device
    d_core: IFQACNN
    g_core: RestorationGenerator
    d_net: nn.Module
    g_net: nn.Module
    opt_d: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer
    d_ema: IFQACNN | None
    start: int = 0
    elapsed_before: float = 0.0
    t_start: float = 0.0
    buffer: AttackBuffer | None = None

    @property
    def d_final(self) -> IFQACNN:
        """What validation and export use: the averaged weights when EMA is on."""
        return self.d_ema if self.d_ema is not None else self.d_core


@dataclass
class _Batch:
    real: torch.Tensor
    deg: torch.Tensor
    wmap: torch.Tensor
    target: torch.Tensor  # region-swap labels of the first n_mix samples
    n_mix: int


def _train(
    cfg: TrainConfig,
    out: Path,
    di: DistInfo,
    device: torch.device,
    resume: bool,
    data_root: str | os.PathLike | None,
    export_path: str | os.PathLike | None,
    faces: list[torch.Tensor] | None,
    val_faces: list[torch.Tensor] | None,
    crash_at_step: int | None,
    t_start: float,
) -> dict[str, Any]:
    _seed_everything(cfg.run.seed)
    faces, val_faces, train_files, val_files = _load_data(cfg, di, data_root, faces, val_faces)
    stream = FaceStream(
        faces,
        cfg.data,
        cfg.degradation,
        cfg.model.native_size,
        cfg.run.seed,
        di.rank,
        di.world,
        backgrounds=load_backgrounds(cfg, data_root),
    )
    run = _build_run(cfg, out, di, device, resume, t_start)
    if di.is_main:
        _write_run_files(out, cfg, train_files, val_files)
    loader = DataLoader(
        stream,
        batch_size=cfg.run.batch_size,
        sampler=StreamSampler(run.start * cfg.run.batch_size, cfg.run.steps * cfg.run.batch_size),
        num_workers=cfg.data.num_workers,
        drop_last=True,
    )
    _log_start(run, len(faces))
    step, val_history = _loop(run, loader, val_faces, crash_at_step)
    return _finish(run, step, val_history, export_path, val_faces)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_data(
    cfg: TrainConfig,
    di: DistInfo,
    data_root: str | os.PathLike | None,
    faces: list[torch.Tensor] | None,
    val_faces: list[torch.Tensor] | None,
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, list[Path], list[Path]]:
    """Training faces (uint8) and held-out faces (float, main rank), from files unless given."""
    train_files: list[Path] = []
    val_files: list[Path] = []
    if faces is None:
        root = cfg.faces_root(data_root)
        train_files, val_files = split_faces(root, cfg.data)
        faces = load_faces_uint8(train_files, cfg.data.base_size)
        photos = photo_files(root, cfg.data)
        if photos:
            d = cfg.data
            found = photo_faces_uint8(
                photos, d.base_size, d.photo_max_upscale, d.photo_min_confidence
            )
            log.info("%d faces aligned from %d photographs", len(found), len(photos))
            faces += found
            train_files = train_files + photos
        if val_faces is None and di.is_main and val_files:
            from ..faces.images import load_face

            val_faces = [load_face(p, 512) for p in val_files]
    return faces, val_faces, train_files, val_files


def load_backgrounds(cfg: TrainConfig, data_root: str | os.PathLike | None) -> list[np.ndarray]:
    """Whole photographs for non-face fakes (``data.backgrounds``), only when degenerate fakes
    are on; (H, W, 3) float32 in [0, 1], long side at most 1024."""
    if not (cfg.degradation.degenerate_prob and cfg.data.backgrounds):
        return []
    root = cfg.faces_root(data_root)
    files = list_images(root, cfg.data.backgrounds)
    if not files:
        raise FileNotFoundError(
            f"no background photographs under {root} match {cfg.data.backgrounds}"
        )
    log.info("%d background photographs for non-face fakes", len(files))
    return [load_photo(f) for f in files]


def init_weights(d: IFQACNN, spec: str) -> None:
    """Load the discriminator's starting weights: a registered model name or a file path."""
    names = {m.name for m in list_models()}
    path = find_weights(spec) if spec in names else Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model.init {spec!r}: no such file, and not a registered model ({sorted(names)})"
        )
    weights.load_into(d, path)
    log.info("discriminator initialised from %s", path)


def _build_run(
    cfg: TrainConfig, out: Path, di: DistInfo, device: torch.device, resume: bool, t0: float
) -> _Run:
    """Both networks and optimisers, from the run's checkpoint, ``model.init`` or at random."""
    if (cfg.loss.r1_weight or cfg.loss.align_weight) and di.active:
        raise ValueError(
            "loss.r1_weight and loss.align_weight are single-process only (not with torchrun)"
        )
    d_core, g_core = build_models(cfg)
    if cfg.model.init:
        init_weights(d_core, cfg.model.init)
    d_core.to(device)
    g_core.to(device)
    o = cfg.optim
    opt_d = torch.optim.Adam(
        d_core.parameters(), lr=o.lr_d, betas=tuple(o.betas_d), weight_decay=o.weight_decay
    )
    opt_g = torch.optim.Adam(
        g_core.parameters(), lr=o.lr_g, betas=tuple(o.betas_g), weight_decay=o.weight_decay
    )
    d_ema = copy.deepcopy(d_core).requires_grad_(False) if o.ema_decay else None
    d_net: nn.Module = _Logits(d_core)
    g_net: nn.Module = g_core
    if di.active:
        ids = [device.index] if device.type == "cuda" else None
        d_net = DDP(d_net, device_ids=ids, broadcast_buffers=False)
        g_net = DDP(g_net, device_ids=ids, broadcast_buffers=False)
    run = _Run(cfg, out, di, device, d_core, g_core, d_net, g_net, opt_d, opt_g, d_ema, t_start=t0)
    if cfg.loss.pgd_buffer:
        run.buffer = AttackBuffer(cfg.loss.pgd_buffer)
    ckpt_path = out / "ckpt" / CKPT_NAME
    if resume and ckpt_path.is_file():
        _restore(run, load_checkpoint(ckpt_path))
        log.info("resumed from %s at step %d", ckpt_path, run.start)
    elif resume:
        log.info("no checkpoint at %s: starting from step 0", ckpt_path)
    return run


def _restore(run: _Run, ck: dict[str, Any]) -> None:
    if ck.get("world_size", 1) != run.di.world:
        log.warning(
            "checkpoint was written with world size %s, now %s: the data order changes",
            ck.get("world_size"),
            run.di.world,
        )
    run.d_core.load_state_dict(ck["D"])
    if run.d_ema is not None:
        run.d_ema.load_state_dict(ck["D_ema"] if "D_ema" in ck else ck["D"])
    run.g_core.load_state_dict(ck["G"])
    run.opt_d.load_state_dict(ck["opt_d"])
    run.opt_g.load_state_dict(ck["opt_g"])
    _set_rng_state(ck["rng"])
    if run.buffer is not None and "pgd_buffer" in ck:
        run.buffer.load_state_dict(ck["pgd_buffer"])
    run.start = int(ck["step"])
    run.elapsed_before = float(ck.get("elapsed_s", 0.0))


def _write_run_files(
    out: Path, cfg: TrainConfig, train_files: list[Path], val_files: list[Path]
) -> None:
    with open(out / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    if train_files:
        split = {"train": [str(p) for p in train_files], "val": [str(p) for p in val_files]}
        (out / "split.json").write_text(json.dumps(split, indent=1))


def _log_start(run: _Run, n_faces: int) -> None:
    cfg = run.cfg
    log.info(
        "training %s: IFQACNN width %g native %d (%.2fM params), generator %.2fM params, "
        "%d faces, world %d, batch %d/rank, steps %d->%d, device %s",
        run.out,
        cfg.model.width,
        cfg.model.native_size,
        sum(p.numel() for p in run.d_core.parameters()) / 1e6,
        sum(p.numel() for p in run.g_core.parameters()) / 1e6,
        n_faces,
        run.di.world,
        cfg.run.batch_size,
        run.start,
        cfg.run.steps,
        run.device,
    )


def _loop(
    run: _Run,
    loader: DataLoader,
    val_faces: list[torch.Tensor] | None,
    crash_at_step: int | None,
) -> tuple[int, list[dict[str, Any]]]:
    """The training steps from ``run.start``; returns the last step and the validations."""
    cfg = run.cfg
    acc = torch.zeros(len(LOG_KEYS) + 1, dtype=torch.float64)
    val_history: list[dict[str, Any]] = []
    bar = tqdm(
        total=cfg.run.steps,
        initial=run.start,
        disable=not (run.di.is_main and cfg.run.progress),
        dynamic_ncols=True,
        mininterval=2.0,
        desc="train",
    )
    t_seg = time.time()
    step = run.start
    run.d_core.train()
    run.g_core.train()
    for batch in loader:
        gen = torch.Generator().manual_seed(step_seed(cfg.run.seed, step, run.di.rank))
        b = _make_batch(run, batch, step, gen)
        scale = _set_learning_rates(run, step)
        stats = _train_step(run, b, step, gen)
        acc[:-1] += torch.tensor([float(stats[k]) for k in LOG_KEYS], dtype=torch.float64)
        acc[-1] += 1
        step += 1
        bar.update(1)
        if step % cfg.run.log_every == 0 or step == cfg.run.steps:
            t_seg = _log_progress(run, acc, step, scale, t_seg, bar)
        if _validation_due(run, val_faces, step):
            res = evaluate(
                _eval_copy(run.d_final),
                val_faces,
                quick=True,
                degenerate=bool(run.cfg.degradation.degenerate_prob),
            )
            val_history.append({"step": step, **_brief(res)})
            log.info("validation at step %d: %s", step, _format_brief(res))
        if step % cfg.run.ckpt_every == 0 or step == cfg.run.steps:
            _save_checkpoint(run, step)
        if crash_at_step is not None and step >= crash_at_step:
            bar.close()
            raise SimulatedCrash(f"simulated crash after step {step}")
    bar.close()
    return step, val_history


def _make_batch(
    run: _Run, batch: dict[str, torch.Tensor], step: int, gen: torch.Generator
) -> _Batch:
    """Move a batch to the device, draw its region weights and swap labels, crop it."""
    cfg, lcfg, dev = run.cfg, run.cfg.loss, run.device
    bsz, size, crop = cfg.run.batch_size, cfg.model.native_size, cfg.run.crop_size
    real = batch["real"].to(dev, non_blocking=True)
    deg = batch["degraded"].to(dev, non_blocking=True)
    n_mix = round(bsz * lcfg.mix_fraction) if step >= round(cfg.run.steps * lcfg.mix_start) else 0
    lm = jittered_landmarks(bsz, size, lcfg.landmark_jitter, gen)
    wmap = RegionWeights(lcfg.region_weights).from_landmarks(lm, (size, size), size, finite=False)
    wmap = wmap.to(dev)
    _, target = swap_masks(
        lm[:n_mix], size, lcfg.mix_regions, lcfg.mix_threshold, lcfg.mix_softness, gen
    )
    target = target.to(dev)
    if crop and step < round(cfg.run.steps * cfg.run.crop_fraction):
        offs = torch.randint(0, size - crop + 1, (bsz, 2), generator=gen)
        real, deg, wmap = (_crop(t, offs, crop) for t in (real, deg, wmap))
        target = _crop(target, offs[:n_mix], crop)
    return _Batch(real, deg, wmap, target, n_mix)


def _set_learning_rates(run: _Run, step: int) -> float:
    scale = _lr_scale(run.cfg, step)
    for o, lr in ((run.opt_d, run.cfg.optim.lr_d), (run.opt_g, run.cfg.optim.lr_g)):
        for grp in o.param_groups:
            grp["lr"] = lr * scale
    return scale


def _train_step(run: _Run, b: _Batch, step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One discriminator step and one generator step; returns the values to log."""
    lcfg, bsz = run.cfg.loss, run.cfg.run.batch_size
    n_gen = bsz - round(bsz * lcfg.fake_degraded_fraction)
    restored = run.g_net(b.deg[:n_gen]) if n_gen else b.deg[:0]
    fake = torch.cat([restored.detach(), b.deg[n_gen:]])
    fake, n_pgd = _with_adversarial_fakes(run, b, fake, step, gen)
    stats = _discriminator_step(run, b, fake, step)
    l_fake = stats.pop("l_fake")
    zero = l_fake.new_zeros(())
    with torch.no_grad():
        stats["acc_gen"] = pixel_accuracy(l_fake[:n_gen], 0.0) if n_gen else zero
        stats["acc_pgd"] = pixel_accuracy(l_fake[bsz - n_pgd :], 0.0) if n_pgd else zero
    stats.update(_generator_step(run, b, restored, n_gen) if n_gen else {})
    for k in ("loss_g", "g_rec", "g_adv"):
        stats.setdefault(k, zero)
    return stats


def _with_adversarial_fakes(
    run: _Run, b: _Batch, fake: torch.Tensor, step: int, gen: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Replace the last fake slots by attacks on the current discriminator (``loss.pgd_*``).

    With a buffer, a slot may continue a stored attack instead: its real sample becomes the
    stored pair's real face, so the pair stays matched for the ranking term.
    """
    lcfg, bsz = run.cfg.loss, run.cfg.run.batch_size
    if not lcfg.pgd_fraction or step < round(run.cfg.run.steps * lcfg.pgd_start):
        return fake, 0
    n_deg, n_real = pgd_slots(bsz, lcfg.pgd_fraction, lcfg.pgd_from_real)
    n = n_deg + n_real
    if not n:
        return fake, 0
    lo = bsz - n
    start = torch.cat([fake[lo : lo + n_deg], b.real[bsz - n_real :]])
    real = b.real[lo:]
    idx = None
    if run.buffer is not None:
        idx = run.buffer.draw(n, lcfg.pgd_persist, start.shape[1:], gen)
        kept = (idx >= 0).nonzero().flatten()
        if len(kept):
            assert run.buffer.fake is not None and run.buffer.real is not None
            start, real = start.clone(), real.clone()
            start[kept] = run.buffer.fake[idx[kept]]
            real[kept] = run.buffer.real[idx[kept]]
            b.real = torch.cat([b.real[:lo], real])
    attacked = adversarial_fakes(run.d_core, start, b.wmap[lo:], lcfg.pgd_steps, lcfg.pgd_step_size)
    if run.buffer is not None and idx is not None:
        run.buffer.put(idx, real, attacked)
    return torch.cat([fake[:lo], attacked]), n


def _discriminator_step(
    run: _Run, b: _Batch, fake: torch.Tensor, step: int
) -> dict[str, torch.Tensor]:
    lcfg, bsz, n_mix = run.cfg.loss, run.cfg.run.batch_size, b.n_mix
    real, wmap, target = b.real, b.wmap, b.target
    mixed = mix(real[:n_mix], fake[:n_mix], target)
    logits = run.d_net(torch.cat([real, fake, mixed]))
    l_real, l_fake, l_mix = logits.split([bsz, bsz, n_mix])
    d_real = weighted_bce(l_real, 1.0, wmap)
    w_fake, w_mix = wmap, wmap[:n_mix]
    if lcfg.fake_visibility_tau > 0:
        vis = visibility(fake, real, lcfg.fake_visibility_tau, lcfg.fake_visibility_floor)
        if lcfg.fake_visibility_normalize:  # every fake image weighs the same in total
            vis = vis / vis.mean((2, 3), keepdim=True)
        w_fake = wmap * vis
        w_mix = wmap[:n_mix] * torch.where(target > 0.5, torch.ones_like(vis[:n_mix]), vis[:n_mix])
    d_fake = weighted_bce(l_fake, 0.0, w_fake)
    d_mix = weighted_bce(l_mix, target, w_mix) if n_mix else logits.new_zeros(())
    loss_d = 0.5 * (d_real + d_fake) + lcfg.mix_weight * d_mix
    d_rank = logits.new_zeros(())
    if lcfg.rank_weight:
        d_rank = d_rank + lcfg.rank_weight * paired_rank_loss(l_real, l_fake, wmap)
    if lcfg.mix_rank_weight and n_mix:
        d_rank = d_rank + lcfg.mix_rank_weight * region_rank_loss(
            l_real[:n_mix], l_fake[:n_mix], l_mix, target, wmap[:n_mix]
        )
    loss_d = loss_d + d_rank
    if lcfg.consistency_weight and n_mix:
        ref = mix(l_real[:n_mix].detach(), l_fake[:n_mix].detach(), target)
        loss_d = loss_d + lcfg.consistency_weight * (l_mix - ref).pow(2).mean()
    d_r1, d_align, extra = _input_gradient_terms(run, b, fake, step)
    loss_d = loss_d + extra
    _apply(run.opt_d, loss_d, run.d_core, run.cfg.optim.grad_clip)
    _update_ema(run)
    with torch.no_grad():
        return {
            "loss_d": loss_d.detach(),
            "d_real": d_real.detach(),
            "d_fake": d_fake.detach(),
            "d_mix": d_mix.detach(),
            "d_rank": d_rank.detach(),
            "d_r1": d_r1.detach(),
            "d_align": d_align.detach(),
            "acc_real": pixel_accuracy(l_real, 1.0),
            "acc_fake": pixel_accuracy(l_fake, 0.0),
            "acc_mix": pixel_accuracy(l_mix, target) if n_mix else logits.new_zeros(()),
            "l_fake": l_fake.detach(),
        }


def _input_gradient_terms(
    run: _Run, b: _Batch, fake: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R1 on the reals and gradient alignment on the fakes, when due: (r1, align, weighted sum)."""
    lcfg = run.cfg.loss
    zero = fake.new_zeros(())
    d_r1 = d_align = total = zero
    if lcfg.r1_weight and step % lcfg.r1_every == 0:
        d_r1 = input_gradient_penalty(run.d_core, b.real, b.wmap)
        total = total + lcfg.r1_weight * lcfg.r1_every * d_r1
    if lcfg.align_weight and step % lcfg.align_every == 0:
        d_align = gradient_alignment_loss(run.d_core, fake, b.real, b.wmap)
        total = total + lcfg.align_weight * lcfg.align_every * d_align
    return d_r1, d_align, total


def _apply(
    opt: torch.optim.Optimizer, loss: torch.Tensor, net: nn.Module, clip: float | None
) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()


def _update_ema(run: _Run) -> None:
    if run.d_ema is None:
        return
    ema_update(run.d_ema, run.d_core, run.cfg.optim.ema_decay)


def _generator_step(
    run: _Run, b: _Batch, restored: torch.Tensor, n_gen: int
) -> dict[str, torch.Tensor]:
    """The generator's step; the discriminator is frozen for it and called outside DDP."""
    lcfg = run.cfg.loss
    run.d_core.requires_grad_(False)
    w = b.wmap[:n_gen]
    g_adv = weighted_bce(run.d_core.forward_logits(restored), 1.0, w)
    g_rec = ((restored - b.real[:n_gen]).abs() * w).sum() / (w.sum() * 3)
    loss_g = lcfg.recon_weight * g_rec + lcfg.adv_weight * g_adv
    _apply(run.opt_g, loss_g, run.g_core, run.cfg.optim.grad_clip)
    run.d_core.requires_grad_(True)
    return {"loss_g": loss_g.detach(), "g_rec": g_rec.detach(), "g_adv": g_adv.detach()}


def _log_progress(
    run: _Run, acc: torch.Tensor, step: int, scale: float, t_seg: float, bar: tqdm
) -> float:
    """Log the means since the last log line (all ranks reduced); returns the new segment start."""
    red = acc.clone()
    if run.di.active:
        dist.all_reduce(red)
    m = (red[:-1] / red[-1].clamp_min(1)).tolist()
    now = time.time()
    sps = (now - t_seg) / max(1, int(acc[-1]))
    acc.zero_()
    r = dict(zip(LOG_KEYS, m, strict=True))
    bar.set_postfix(
        loss_d=f"{r['loss_d']:.3f}", acc_r=f"{r['acc_real']:.2f}", acc_f=f"{r['acc_fake']:.2f}"
    )
    log.info(
        "step %d/%d | D %.4f (real %.4f fake %.4f mix %.4f rank %.4f r1 %.4f align %.4f) "
        "| G %.4f (rec %.4f adv %.4f) "
        "| D acc real px %.3f fake px %.3f (gen %.3f pgd %.3f) mix px %.3f | %.2f s/step lr x%.2f",
        step,
        run.cfg.run.steps,
        *(r[k] for k in ("loss_d", "d_real", "d_fake", "d_mix", "d_rank", "d_r1", "d_align")),
        *(r[k] for k in ("loss_g", "g_rec", "g_adv")),
        *(r[k] for k in ("acc_real", "acc_fake", "acc_gen", "acc_pgd", "acc_mix")),
        sps,
        scale,
    )
    return now


def _validation_due(run: _Run, val_faces: list[torch.Tensor] | None, step: int) -> bool:
    every = run.cfg.run.val_every
    return bool(
        run.di.is_main and val_faces and every and step % every == 0 and step < run.cfg.run.steps
    )


def _save_checkpoint(run: _Run, step: int) -> None:
    if run.di.is_main:
        atomic_torch_save(
            {
                "version": CKPT_VERSION,
                "step": step,
                "D": run.d_core.state_dict(),
                **({"D_ema": run.d_ema.state_dict()} if run.d_ema is not None else {}),
                "G": run.g_core.state_dict(),
                "opt_d": run.opt_d.state_dict(),
                "opt_g": run.opt_g.state_dict(),
                "rng": _rng_state(),
                "config": run.cfg.to_dict(),
                "world_size": run.di.world,
                **({"pgd_buffer": run.buffer.state_dict()} if run.buffer is not None else {}),
                "elapsed_s": run.elapsed_before + time.time() - run.t_start,
            },
            run.out / "ckpt" / CKPT_NAME,
        )
    if run.di.active:
        dist.barrier()


def _finish(
    run: _Run,
    step: int,
    val_history: list[dict[str, Any]],
    export_path: str | os.PathLike | None,
    val_faces: list[torch.Tensor] | None,
) -> dict[str, Any]:
    """Export, final validation and ``summary.json`` (main rank); returns the summary."""
    cfg, out = run.cfg, run.out
    summary: dict[str, Any] = {
        "steps": step,
        "world_size": run.di.world,
        "batch_size_per_rank": cfg.run.batch_size,
        "wall_time_s": round(run.elapsed_before + time.time() - run.t_start, 1),
        "hardware": hardware_description(run.device),
        "params_d": sum(p.numel() for p in run.d_core.parameters()),
        "validation_history": val_history,
    }
    if run.di.is_main:
        export_discriminator(run.d_final, out / "discriminator.safetensors", cfg.run.export_dtype)
        if export_path:
            export_discriminator(run.d_final, export_path, cfg.run.export_dtype)
        if val_faces:
            t0 = time.time()
            res = evaluate(
                _eval_copy(run.d_final, cfg.run.export_dtype),
                val_faces,
                quick=False,
                degenerate=bool(cfg.degradation.degenerate_prob),
            )
            summary["validation"] = res
            log.info(
                "final validation (%.0f s, %d held-out faces):\n%s",
                time.time() - t0,
                len(val_faces),
                format_table_safe(res),
            )
        summary["wall_time_s"] = round(run.elapsed_before + time.time() - run.t_start, 1)
        atomic_write_text(out / "summary.json", strict_json(summary, default=str))
        log.info(
            "done: %d steps, %.1f s wall (incl. final validation)", step, summary["wall_time_s"]
        )
    if run.di.active:
        dist.barrier()
    return summary


def _crop(x: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample square crops: ``x[i, :, y:y+size, x:x+size]`` with ``(y, x) = offsets[i]``."""
    if len(offsets) == 0:  # e.g. no region-mixed samples (loss.mix_fraction 0)
        return x[:0, :, :size, :size]
    return torch.stack(
        [
            x[i, :, int(o[0]) : int(o[0]) + size, int(o[1]) : int(o[1]) + size]
            for i, o in enumerate(offsets)
        ]
    )


def _eval_copy(d: IFQACNN, dtype: str = "float32") -> IFQACNN:
    """A frozen copy for validation; with ``float16`` its weights are rounded as exported."""
    c = copy.deepcopy(d).cpu()
    if dtype == "float16":
        with torch.no_grad():
            for p in c.parameters():
                p.copy_(p.half().float())
    c.model_name = "ifqa-lite"
    return c.freeze()


def _brief(res: dict[str, Any]) -> dict[str, float]:
    out = {f: v["pair_accuracy"] for f, v in res["families"].items()}
    if "degenerate" in res:
        out["degenerate_above"] = res["degenerate"]["above"]
        out["degenerate_margin"] = res["degenerate"]["worst_margin"]
    return out


def _format_brief(res: dict[str, Any]) -> str:
    parts = []
    for f, v in res["families"].items():
        gap = v["clean_mean"] - v["degraded_mean"]
        parts.append(f"{f} clean>deg {v['pair_accuracy'] * 100:.0f}% (gap {gap:+.4f})")
    if "degenerate" in res:
        d = res["degenerate"]
        parts.append(f"degenerate {d['above']}/{d['n']} above (margin {d['worst_margin']:+.4f})")
    return ", ".join(parts)


def format_table_safe(res: dict[str, Any]) -> str:
    from .validation import format_table

    try:
        return format_table(res)
    except Exception as e:
        return f"(table unavailable: {e})"


def checkpoint_step(out_dir: str | os.PathLike) -> int | None:
    """The step stored in ``out_dir/ckpt/last.pt``, or None."""
    p = Path(out_dir) / "ckpt" / CKPT_NAME
    return int(load_checkpoint(p)["step"]) if p.is_file() else None


__all__ = [
    "SimulatedCrash",
    "atomic_torch_save",
    "build_models",
    "checkpoint_step",
    "export_discriminator",
    "load_checkpoint",
    "step_seed",
    "train",
]
