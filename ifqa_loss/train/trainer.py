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

from .._io import atomic_write
from ..models.cnn import IFQACNN
from ..weights import save_safetensors
from .config import TrainConfig
from .data import FaceStream, StreamSampler, load_faces_uint8, split_faces
from .fpr import (
    jittered_landmarks,
    mix,
    paired_rank_loss,
    pixel_accuracy,
    region_rank_loss,
    region_weight_map,
    swap_masks,
    visibility,
    weighted_bce,
)
from .generator import RestorationGenerator

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
    """Write the discriminator's state dict as safetensors (``float16`` halves the file)."""
    tdt = torch.float16 if dtype == "float16" else torch.float32
    sd = {k: v.detach().to("cpu", tdt).contiguous() for k, v in d.state_dict().items()}
    return save_safetensors(sd, path)


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
    from .validation import evaluate  # local import: validation pulls in the metric

    run, lcfg = cfg.run, cfg.loss
    seed = run.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

    # ---- data
    train_files: list[Path] = []
    val_files: list[Path] = []
    if faces is None:
        root = cfg.faces_root(data_root)
        train_files, val_files = split_faces(root, cfg.data)
        faces = load_faces_uint8(train_files, cfg.data.base_size)
        if val_faces is None and di.is_main and val_files:
            from .data import load_face

            val_faces = [load_face(p, 512) for p in val_files]
    stream = FaceStream(
        faces, cfg.data, cfg.degradation, cfg.model.native_size, seed, di.rank, di.world
    )

    # ---- models and optimisers
    d_core, g_core = build_models(cfg)
    d_core.to(device)
    g_core.to(device)
    opt_d = torch.optim.Adam(
        d_core.parameters(),
        lr=cfg.optim.lr_d,
        betas=tuple(cfg.optim.betas_d),
        weight_decay=cfg.optim.weight_decay,
    )
    opt_g = torch.optim.Adam(
        g_core.parameters(),
        lr=cfg.optim.lr_g,
        betas=tuple(cfg.optim.betas_g),
        weight_decay=cfg.optim.weight_decay,
    )
    d_ema = copy.deepcopy(d_core).requires_grad_(False) if cfg.optim.ema_decay else None
    start, elapsed_before = 0, 0.0
    ckpt_path = out / "ckpt" / CKPT_NAME
    if resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck.get("world_size", 1) != di.world:
            log.warning(
                "checkpoint was written with world size %s, now %s: the data order changes",
                ck.get("world_size"),
                di.world,
            )
        d_core.load_state_dict(ck["D"])
        if d_ema is not None:
            d_ema.load_state_dict(ck["D_ema"] if "D_ema" in ck else ck["D"])
        g_core.load_state_dict(ck["G"])
        opt_d.load_state_dict(ck["opt_d"])
        opt_g.load_state_dict(ck["opt_g"])
        _set_rng_state(ck["rng"])
        start = int(ck["step"])
        elapsed_before = float(ck.get("elapsed_s", 0.0))
        log.info("resumed from %s at step %d", ckpt_path, start)
    elif resume:
        log.info("no checkpoint at %s: starting from step 0", ckpt_path)

    if di.is_main:
        with open(out / "config.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
        if train_files:
            (out / "split.json").write_text(
                json.dumps(
                    {"train": [str(p) for p in train_files], "val": [str(p) for p in val_files]},
                    indent=1,
                )
            )

    d_final = d_ema if d_ema is not None else d_core  # what validation and export use
    d_net: nn.Module = _Logits(d_core)
    g_net: nn.Module = g_core
    if di.active:
        ids = [device.index] if device.type == "cuda" else None
        d_net = DDP(d_net, device_ids=ids, broadcast_buffers=False)
        g_net = DDP(g_net, device_ids=ids, broadcast_buffers=False)

    total = run.steps
    crop_steps = round(total * run.crop_fraction) if run.crop_size else 0
    bsz = run.batch_size
    n_fake_deg = round(bsz * lcfg.fake_degraded_fraction)
    n_gen = bsz - n_fake_deg
    n_mix_full = round(bsz * lcfg.mix_fraction)
    mix_from = round(total * lcfg.mix_start)
    size = cfg.model.native_size
    loader = DataLoader(
        stream,
        batch_size=bsz,
        sampler=StreamSampler(start * bsz, total * bsz),
        num_workers=cfg.data.num_workers,
        drop_last=True,
    )
    log.info(
        "training %s: IFQACNN width %g native %d (%.2fM params), generator %.2fM params, "
        "%d faces, world %d, batch %d/rank, steps %d->%d, device %s",
        out,
        cfg.model.width,
        size,
        sum(p.numel() for p in d_core.parameters()) / 1e6,
        sum(p.numel() for p in g_core.parameters()) / 1e6,
        len(faces),
        di.world,
        bsz,
        start,
        total,
        device,
    )
    keys = (
        "loss_d",
        "d_real",
        "d_fake",
        "d_mix",
        "d_rank",
        "loss_g",
        "g_rec",
        "g_adv",
        "acc_real",
        "acc_fake",
        "acc_gen",
        "acc_mix",
    )
    acc = torch.zeros(len(keys) + 1, dtype=torch.float64)
    val_history: list[dict[str, Any]] = []
    bar = tqdm(
        total=total,
        initial=start,
        disable=not (di.is_main and run.progress),
        dynamic_ncols=True,
        mininterval=2.0,
        desc="train",
    )
    t_seg = time.time()
    step = start
    d_core.train()
    g_core.train()
    for batch in loader:
        real = batch["real"].to(device, non_blocking=True)
        deg = batch["degraded"].to(device, non_blocking=True)
        gen = torch.Generator().manual_seed(step_seed(seed, step, di.rank))
        n_mix = n_mix_full if step >= mix_from else 0
        lm = jittered_landmarks(bsz, size, lcfg.landmark_jitter, gen)
        wmap = region_weight_map(lm, size, lcfg.region_weights).to(device)
        _, target = swap_masks(
            lm[:n_mix], size, lcfg.mix_regions, lcfg.mix_threshold, lcfg.mix_softness, gen
        )
        target = target.to(device)
        if run.crop_size and step < crop_steps:
            offs = torch.randint(0, size - run.crop_size + 1, (bsz, 2), generator=gen)
            real, deg, wmap = (_crop(t, offs, run.crop_size) for t in (real, deg, wmap))
            target = _crop(target, offs[:n_mix], run.crop_size)
        scale = _lr_scale(cfg, step)
        for o, lr in ((opt_d, cfg.optim.lr_d), (opt_g, cfg.optim.lr_g)):
            for grp in o.param_groups:
                grp["lr"] = lr * scale

        restored = g_net(deg[:n_gen]) if n_gen else deg[:0]
        fake = torch.cat([restored.detach(), deg[n_gen:]])
        mixed = mix(real[:n_mix], fake[:n_mix], target)

        # ---- discriminator step
        logits = d_net(torch.cat([real, fake, mixed]))
        l_real, l_fake, l_mix = logits.split([bsz, bsz, n_mix])
        d_real = weighted_bce(l_real, 1.0, wmap)
        w_fake, w_mix = wmap, wmap[:n_mix]
        if lcfg.fake_visibility_tau > 0:
            vis = visibility(fake, real, lcfg.fake_visibility_tau, lcfg.fake_visibility_floor)
            if lcfg.fake_visibility_normalize:  # every fake image weighs the same in total
                vis = vis / vis.mean((2, 3), keepdim=True)
            w_fake = wmap * vis
            w_mix = wmap[:n_mix] * torch.where(
                target > 0.5, torch.ones_like(vis[:n_mix]), vis[:n_mix]
            )
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
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(d_core.parameters(), cfg.optim.grad_clip)
        opt_d.step()
        if d_ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(
                    list(d_ema.parameters()), list(d_core.parameters()), 1.0 - cfg.optim.ema_decay
                )

        # ---- generator step (the discriminator is frozen for it, called outside DDP)
        if n_gen:
            d_core.requires_grad_(False)
            adv_logits = d_core.forward_logits(restored)
            g_adv = weighted_bce(adv_logits, 1.0, wmap[:n_gen])
            w = wmap[:n_gen]
            g_rec = ((restored - real[:n_gen]).abs() * w).sum() / (w.sum() * 3)
            loss_g = lcfg.recon_weight * g_rec + lcfg.adv_weight * g_adv
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            if cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(g_core.parameters(), cfg.optim.grad_clip)
            opt_g.step()
            d_core.requires_grad_(True)
        else:
            g_adv = g_rec = loss_g = logits.new_zeros(())

        with torch.no_grad():
            vals = [
                loss_d,
                d_real,
                d_fake,
                d_mix,
                d_rank,
                loss_g,
                g_rec,
                g_adv,
                pixel_accuracy(l_real, 1.0),
                pixel_accuracy(l_fake, 0.0),
                pixel_accuracy(l_fake[:n_gen], 0.0) if n_gen else logits.new_zeros(()),
                pixel_accuracy(l_mix, target) if n_mix else logits.new_zeros(()),
            ]
            acc[:-1] += torch.tensor([float(v) for v in vals], dtype=torch.float64)
            acc[-1] += 1
        step += 1
        bar.update(1)

        if step % run.log_every == 0 or step == total:
            red = acc.clone()
            if di.active:
                dist.all_reduce(red)
            m = (red[:-1] / red[-1].clamp_min(1)).tolist()
            now = time.time()
            sps = (now - t_seg) / max(1, int(acc[-1]))
            t_seg = now
            acc.zero_()
            rec = dict(zip(keys, m, strict=True))
            bar.set_postfix(
                loss_d=f"{rec['loss_d']:.3f}",
                acc_r=f"{rec['acc_real']:.2f}",
                acc_f=f"{rec['acc_fake']:.2f}",
            )
            log.info(
                "step %d/%d | D %.4f (real %.4f fake %.4f mix %.4f rank %.4f) "
                "| G %.4f (rec %.4f adv %.4f) "
                "| D acc real px %.3f fake px %.3f (gen %.3f) mix px %.3f | %.2f s/step lr x%.2f",
                step,
                total,
                rec["loss_d"],
                rec["d_real"],
                rec["d_fake"],
                rec["d_mix"],
                rec["d_rank"],
                rec["loss_g"],
                rec["g_rec"],
                rec["g_adv"],
                rec["acc_real"],
                rec["acc_fake"],
                rec["acc_gen"],
                rec["acc_mix"],
                sps,
                scale,
            )

        if (
            di.is_main
            and val_faces
            and run.val_every
            and step % run.val_every == 0
            and step < total
        ):
            res = evaluate(_eval_copy(d_final), val_faces, quick=True)
            val_history.append({"step": step, **_brief(res)})
            log.info("validation at step %d: %s", step, _format_brief(res))

        if step % run.ckpt_every == 0 or step == total:
            if di.is_main:
                atomic_torch_save(
                    {
                        "version": CKPT_VERSION,
                        "step": step,
                        "D": d_core.state_dict(),
                        **({"D_ema": d_ema.state_dict()} if d_ema is not None else {}),
                        "G": g_core.state_dict(),
                        "opt_d": opt_d.state_dict(),
                        "opt_g": opt_g.state_dict(),
                        "rng": _rng_state(),
                        "config": cfg.to_dict(),
                        "world_size": di.world,
                        "elapsed_s": elapsed_before + time.time() - t_start,
                    },
                    ckpt_path,
                )
            if di.active:
                dist.barrier()
        if crash_at_step is not None and step >= crash_at_step:
            bar.close()
            raise SimulatedCrash(f"simulated crash after step {step}")
    bar.close()

    summary: dict[str, Any] = {
        "steps": step,
        "world_size": di.world,
        "batch_size_per_rank": bsz,
        "wall_time_s": round(elapsed_before + time.time() - t_start, 1),
        "hardware": hardware_description(device),
        "params_d": sum(p.numel() for p in d_core.parameters()),
        "validation_history": val_history,
    }
    if di.is_main:
        export_discriminator(d_final, out / "discriminator.safetensors", run.export_dtype)
        if export_path:
            export_discriminator(d_final, export_path, run.export_dtype)
        if val_faces:
            t0 = time.time()
            res = evaluate(_eval_copy(d_final, run.export_dtype), val_faces, quick=False)
            summary["validation"] = res
            log.info(
                "final validation (%.0f s, %d held-out faces):\n%s",
                time.time() - t0,
                len(val_faces),
                format_table_safe(res),
            )
        summary["wall_time_s"] = round(elapsed_before + time.time() - t_start, 1)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        log.info(
            "done: %d steps, %.1f s wall (incl. final validation)", step, summary["wall_time_s"]
        )
    if di.active:
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
    return {f: v["pair_accuracy"] for f, v in res["families"].items()}


def _format_brief(res: dict[str, Any]) -> str:
    parts = []
    for f, v in res["families"].items():
        gap = v["clean_mean"] - v["degraded_mean"]
        parts.append(f"{f} clean>deg {v['pair_accuracy'] * 100:.0f}% (gap {gap:+.4f})")
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
