"""What does IFQA do for a restorer? Train one with each form of IFQA and judge it with others.

A small U-Net restorer (:class:`UNetRestorer` below, 1.7 M parameters, most at low
resolution) is pre-trained with L1 on blind-degraded faces (blur, down-up, noise, JPEG at random
strengths), then fine-tuned from those weights, on the same batches, once per branch:

- ``l1``: L1 alone;
- ``features``: L1 + w x matching of the frozen ``ifqa-lite`` features of the output to those of
  the clean face (the full-reference form);
- ``frozen``: L1 + w x the region-weighted non-saturating term of the frozen ``ifqa-lite``
  (the no-reference form as a GAN term, never updated);
- ``cotrained``: L1 + w x the same term from ``IFQAAdversarialLoss``, whose discriminator starts
  from ``ifqa-lite``, first takes ``d_warmup`` steps alone on the restorer's outputs, then one
  step per restorer step (Adam at ``d_lr``, augmentation; see ``Settings``);
- ``random``: the same with the discriminator started from random weights (does IFQA's
  training help?);
- ``matched``: ``cotrained`` plus matching of the co-trained discriminator's *current* features
  of the output to those of the clean face, at ``FM_RATIO`` x w (pix2pixHD's feature matching;
  the third recipe, 2026-12-02);
- ``adaptive``: ``cotrained`` with the term's weight set at every step by
  :func:`ifqa_loss.adaptive_gan_weight` (CodeFormer's balance): its gradient at the restorer's
  last layer is w x L1's there, so w is a ratio, not a weight (2026-12-03);
- ``adaptive-random``: the same with the discriminator from random weights;
- ``uniform``: ``cotrained`` with every pixel of the face weighted alike (no extra weight on the
  eyes, nose and mouth): does the region emphasis draw the dark outlines seen around them?
  (2026-12-03).
- ``unsharp`` (a control, no training): the finished ``l1`` run's outputs of the same seed,
  sharpened after the fact by an unsharp mask of sigma 1 px at the run's "weight" as its
  amount. NIQE and ``ifqa-judge`` reward sharpening, so a branch that does no better than
  these points at the same PSNR did no more than sharpen (2026-12-07).

Every branch runs the discriminator at the crop's own size (128 px crops of 256 px faces: the
scale ``ifqa-lite`` was trained at), with the eye/nose/mouth weights of the whole face cropped
with the image. The held-out faces (16, the audit's, never trained on,
each under 4 fixed blind degradations) are restored at 256 px and measured with what no branch
optimises: PSNR/SSIM, NIQE and the other judges of :mod:`ifqa_loss.audit.judges`, the separate
``ifqa-judge``, dlib's identity distance, sharpness and colour shift. The discriminator's pixel
accuracy on real and restored crops is logged every step. From the fourth recipe on, a run is
judged by the moving average of its restorer's weights (``Settings.ema``), and its last step's
weights are measured beside it (``summary_raw`` in the result).

The models are pinned: the first run copies the bundled ``ifqa-lite`` and ``ifqa-judge`` files
into ``OUT/pinned`` and every run uses those copies (their sha256 is in each result).
Resumable: each run saves a checkpoint every ``--save-every`` steps and its result when done;
running the script again skips finished runs and continues unfinished ones. Run in parts with
``--only NAME[,NAME]``; ``--list`` shows the plan and what is done. One job at a time.

    python benchmarks/restorer_study.py --out study            # everything (about 6 h alone)
    python benchmarks/restorer_study.py --out study --only l1_s0,cotrained_0.01_s0
    python benchmarks/restorer_study_report.py --out study      # table, curves, picture grid
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ifqa_loss._io import atomic_write_text, strict_json
from ifqa_loss.adversarial import IFQAAdversarialLoss
from ifqa_loss.audit.judges import resolve as resolve_judges
from ifqa_loss.audit.measures import measure, quantize_t
from ifqa_loss.balance import adaptive_gan_weight
from ifqa_loss.faces.degrade import degrade
from ifqa_loss.regions import FPR_WEIGHTS
from ifqa_loss.train.ema import ema_update
from ifqa_loss.weights import find_weights


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
    )  # fmt: skip


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UNetRestorer(nn.Module):
    """A small U-Net with most of its parameters at low resolution: output = input + f(input).

    Four levels (full, 1/2, 1/4, 1/8 resolution; ``width`` x 1, 2, 4, 8 channels), residual
    blocks at 1/8, skip connections by concatenation. With ``width=16``: 1.9 M parameters, 90%
    of them at 1/4 and 1/8. The last convolution starts at zero (an untrained net is the
    identity); the output is not clamped. Sides must be multiples of 8.

    Shape:
        (B, 3, H, W) in [0, 1] -> same.
    """

    def __init__(self, width: int = 16, blocks: int = 4) -> None:
        super().__init__()
        c = [width, 2 * width, 4 * width, 8 * width]
        self.enc = nn.ModuleList([_conv_block(3, c[0])])
        self.enc.extend(_conv_block(c[i], c[i + 1]) for i in range(3))
        self.mid = nn.Sequential(*(_ResBlock(c[3]) for _ in range(blocks)))
        self.up = nn.ModuleList(nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in range(3))
        self.dec = nn.ModuleList(_conv_block(2 * c[i], c[i]) for i in range(3))
        self.out = nn.Conv2d(c[0], 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"UNetRestorer needs sides that are multiples of 8, got {x.shape}")
        skips, h = [], x
        for i, block in enumerate(self.enc):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
            skips.append(h)
        h = self.mid(h)
        for i in (2, 1, 0):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], 1))
        return x + self.out(h)


@dataclass(frozen=True)
class Run:
    """One fine-tuning run of the plan."""

    branch: str
    weight: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.branch}_s{self.seed}" if self.branch == "l1" else (
            f"{self.branch}_{self.weight:g}_s{self.seed}"
        )  # fmt: skip


# Weights chosen before any run (no tuning on the held-out faces); the second of each list is
# the branch's recommended weight, which also runs with seed 1. Ordered so that a partial study
# answers the main question first.
WEIGHTS = {
    "cotrained": (0.003, 0.01, 0.03),
    "random": (0.01, 0.03),
    "frozen": (0.01, 0.03),
    "features": (0.1, 0.5),
    "matched": (0.003, 0.01),
    "adaptive": (0.5, 2.0),
    "adaptive-random": (0.5, 2.0),
    "uniform": (0.01, 0.03),
    "unsharp": (0.25, 0.5, 1.0),
}
RECOMMENDED = {
    "cotrained": 0.01,
    "random": 0.01,
    "frozen": 0.01,
    "features": 0.5,
    "matched": 0.01,
    "adaptive": 0.5,
    "adaptive-random": 0.5,
    "uniform": 0.01,
    "unsharp": 0.5,
}
CONTROL_SIGMA = 1.0  # px, at the held-out cases' 256 px
# ``adaptive`` ratios, fixed before any of its runs from training batches only: at the fixed
# weight 0.01 the term's gradient at the restorer's last layer started at a median 10-15 x L1's
# (warm start; 2 x from random weights) and ended the runs at 0.4-0.6 x (random start). 0.5
# holds the end state from the first step; 2.0 the random start's opening pull.
ADAPTIVE = ("adaptive", "adaptive-random")
# ``matched``'s feature-matching weight over its GAN weight: pix2pixHD's 10, fixed before any run.
FM_RATIO = 10.0


def plan() -> list[Run]:
    first = [Run("l1", 0.0, 0)] + [Run(b, RECOMMENDED[b], 0) for b in WEIGHTS]
    rest = [Run(b, w, 0) for b, ws in WEIGHTS.items() for w in ws if w != RECOMMENDED[b]]
    seeds = [Run("l1", 0.0, 1)] + [Run(b, RECOMMENDED[b], 1) for b in WEIGHTS]
    return first + rest + seeds


# --- data ---------------------------------------------------------------------------------------


def blind_degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur (sigma 0.5-3), down-up (x1-4), noise (0-10/255), JPEG (q 40-90), in that order."""
    out = degrade(img, "blur", rng.uniform(0.5, 3.0))
    out = degrade(out, "downup", rng.uniform(1.0, 4.0))
    out = degrade(out, "noise", rng.uniform(0.0, 10.0), seed=int(rng.integers(1 << 30)))
    return degrade(out, "jpeg", rng.uniform(40.0, 90.0))


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.numpy().transpose(1, 2, 0), dtype=np.float32)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def training_batch(
    faces: torch.Tensor, seed: int, step: int, batch: int, crop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(degraded, clean) crops and each crop's (y, x) origin in its face; a function of
    (seed, step) only, so a resumed run sees the same."""
    rng = np.random.default_rng([seed, step])
    lqs, gts, origins = [], [], []
    for _ in range(batch):
        g = faces[int(rng.integers(len(faces)))]
        g = g.flip(-1) if rng.random() < 0.5 else g
        lq = _t(blind_degrade(_np(g), rng))
        y, x = (int(v) for v in rng.integers(0, g.shape[-1] - crop + 1, size=2))
        lqs.append(lq[:, y : y + crop, x : x + crop])
        gts.append(g[:, y : y + crop, x : x + crop])
        origins.append((y, x))
    return torch.stack(lqs), torch.stack(gts), torch.tensor(origins)


def held_out_cases(faces: torch.Tensor, per_face: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Each held-out face under ``per_face`` fixed blind degradations: (degraded, clean)."""
    lqs, gts = [], []
    for i, g in enumerate(faces):
        for k in range(per_face):
            lqs.append(_t(blind_degrade(_np(g), np.random.default_rng([12345, i, k]))))
            gts.append(g)
    return torch.stack(lqs), torch.stack(gts)


def load_split(data_root: str | None, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training faces, held-out faces) of the ``harden_cpu`` split, as (N, 3, size, size)."""
    from ifqa_loss.audit.measures import prepare_faces
    from ifqa_loss.faces.images import load_face, split_faces
    from ifqa_loss.train.config import load_config

    cfg = load_config("harden_cpu")
    train, held = split_faces(cfg.faces_root(data_root), cfg.data)
    return tuple(prepare_faces([load_face(f, size) for f in fs], size) for fs in (train, held))


# --- models and terms ---------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pinned(out: Path) -> dict[str, Path]:
    """The study's copies of the bundled models (made on first use, then never replaced)."""
    folder = out / "pinned"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("ifqa-lite", "ifqa-judge"):
        p = folder / f"{name}.pinned.safetensors"  # another name: no registry digest check
        if not p.exists():
            shutil.copyfile(find_weights(name), p)
        paths[name] = p
    return paths


def make_term(run: Run, weights: Path, d_lr: float = 1e-4) -> IFQAAdversarialLoss | None:
    """The branch's IFQA term (None for ``l1``); trained only for cotrained/random, with Adam at
    ``d_lr``."""
    if run.branch == "l1":
        return None
    # warmup=0: the study takes its discriminator-only steps itself, with the restorer frozen
    kw = {"resize": False, "lr": d_lr, "region_weights": FPR_WEIGHTS, "warmup": 0}
    if run.branch == "features":
        return IFQAAdversarialLoss(
            "ifqa-lite", weights, loss_weight=0.0, feature_weight=run.weight, **kw
        )
    if run.branch in ADAPTIVE:  # the weight is set per step (see restorer_step)
        warm = run.branch == "adaptive"
        return IFQAAdversarialLoss(
            "ifqa-lite", weights if warm else None, pretrained=warm, loss_weight=1.0, **kw
        )
    if run.branch == "random":
        return IFQAAdversarialLoss("ifqa-lite", pretrained=False, loss_weight=run.weight, **kw)
    if run.branch == "uniform":
        kw["region_weights"] = None
    fm = FM_RATIO * run.weight if run.branch == "matched" else 0.0
    return IFQAAdversarialLoss(
        "ifqa-lite", weights, loss_weight=run.weight, feature_weight=fm, **kw
    )


def trains_discriminator(run: Run) -> bool:
    return run.branch in ("cotrained", "random", "matched", "uniform", *ADAPTIVE)


# --- training -----------------------------------------------------------------------------------


@dataclass
class Settings:
    """What every run shares (recorded in each result).

    The discriminator settings are the second recipe (2026-12-02, chosen from the first
    recipe's training logs, before any of its runs): ``d_lr`` the restorer's own rate (at 1e-4
    the restorer fooled the warm-started discriminator within 50 steps and it stayed near
    chance), ``d_warmup`` discriminator-only steps on the warmed-up restorer's outputs before
    the GAN term starts (BasicSR's ``net_d_init_iters``), and ``regions="crop"``: the face
    regions of the whole 256 px face, cropped with the image, so the eyes' weight lands on the
    eyes. The first recipe was ``--d-lr 1e-4 --d-warmup 0 --regions template`` (the template
    drawn at the crop's size, wherever the crop was).

    The fourth recipe (2026-12-02, before any of its runs) adds ``ema``: each run is judged by
    an exponential moving average of the restorer's weights (BasicSR's ``net_g_ema``, which
    GFPGAN and CodeFormer validate), beside its last step's weights (``summary_raw``). The
    third recipe's L1 runs spanned 1 dB of PSNR over three seeds, and one seed moved 0.5 dB
    between runs from float-level differences (thread count), as much as the 0.5 dB
    target; the last step of a run at a constant rate is a noisy sample of where the
    restorer is. 0.995 (a ~200-step window) rather than BasicSR's 0.999, which over these
    1,000 steps would keep 37% of the starting weights. ``ema=0`` is the earlier recipes.
    """

    size: int = 256
    crop: int = 128
    batch: int = 4
    lr: float = 5e-4
    warmup: int = 400
    steps: int = 1000
    save_every: int = 100
    threads: int = 1
    d_lr: float = 5e-4
    d_warmup: int = 200
    regions: str = "crop"
    ema: float = 0.995


def region_masks(
    term: IFQAAdversarialLoss | None, origins: torch.Tensor, st: Settings
) -> torch.Tensor | None:
    """(B, R, crop, crop) masks of the term's regions for crops at ``origins`` of ``st.size``
    faces (``regions="crop"``), or None: the term draws its template at the crop's size."""
    if term is None or st.regions == "template" or not term.region_names:
        return None
    if st.regions != "crop":
        raise ValueError(f"regions must be 'crop' or 'template', got {st.regions!r}")
    whole = _whole_face_masks(st.size, tuple(term.region_names))
    c = st.crop
    return torch.stack([whole[:, y : y + c, x : x + c] for y, x in origins.tolist()])


@functools.lru_cache(maxsize=4)
def _whole_face_masks(size: int, names: tuple[str, ...]) -> torch.Tensor:
    """The template's (R, size, size) region masks, made once: the same at every step."""
    from ifqa_loss.masks import face_region_masks

    return face_region_masks(None, size, names)[0]


def restorer_step(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    term: IFQAAdversarialLoss | None,
    lq: torch.Tensor,
    gt: torch.Tensor,
    masks: torch.Tensor | None = None,
    ratio: float = 0.0,
) -> tuple[torch.Tensor, float]:
    """One restorer update with L1 (+ the IFQA term, weighted by :func:`adaptive_gan_weight`
    at ``ratio`` when ``ratio`` > 0); returns the detached output and the term's weight."""
    out = net(lq)
    loss = F.l1_loss(out, gt)
    weight = 0.0
    if term is not None:
        g, weight = term(out, gt, masks=masks), term.loss_weight
        if ratio > 0:
            w = adaptive_gan_weight(loss, g, net.out.weight, scale=ratio)
            weight, g = float(w), w * g
        loss = loss + g
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return out.detach(), weight


def warmed_up(out: Path, faces: torch.Tensor, seed: int, st: Settings) -> dict:
    """The L1-pretrained restorer of ``seed`` (trained once, then read from ``OUT/warmup``)."""
    path = out / "warmup" / f"seed{seed}_{st.warmup}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    torch.manual_seed(seed)
    net = UNetRestorer()
    opt = torch.optim.Adam(net.parameters(), lr=st.lr)
    for step in range(st.warmup):
        lq, gt, _ = training_batch(faces, seed + 1000, step, st.batch, st.crop)
        restorer_step(net, opt, None, lq, gt)  # L1 only
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return net.state_dict()


def _checkpoint(folder: Path, step: int, net, opt, term, log: list[dict], avg=None) -> None:
    state = {"step": step, "net": net.state_dict(), "opt": opt.state_dict(), "log": log}
    if term is not None:
        state["term"] = term.state_dict()
    if avg is not None:
        state["ema"] = avg.state_dict()
    tmp = folder / "ckpt.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "ckpt.pt")


def _resume(folder: Path, net, opt, term, avg=None) -> tuple[int, list[dict]]:
    path = folder / "ckpt.pt"
    if not path.exists():
        return 0, []
    state = torch.load(path, weights_only=True)
    if (avg is not None) != ("ema" in state):
        raise ValueError(
            f"{path} was saved {'without' if avg is not None else 'with'} a moving average of "
            "the weights; resume it with the --ema it started with (0 = none), or use a new --out"
        )
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    if term is not None:
        term.load_state_dict(state["term"])
    if avg is not None:
        avg.load_state_dict(state["ema"])
    return int(state["step"]), list(state["log"])


def warm_up_discriminator(
    run: Run, net: torch.nn.Module, term: IFQAAdversarialLoss, faces: torch.Tensor, st: Settings
) -> list[dict]:
    """``st.d_warmup`` discriminator-only steps on the restorer's outputs (it is not updated),
    on batches of their own; logged with negative steps."""
    log = []
    for k in range(st.d_warmup):
        torch.manual_seed(run.seed * 100_003 - k - 1)
        lq, gt, _ = training_batch(faces, run.seed + 2000, k, st.batch, st.crop)
        with torch.no_grad():
            fake = net(lq)
        log.append({"step": k - st.d_warmup, **term.discriminator_step(gt, fake)})
    return log


def fine_tune(run: Run, out: Path, faces: torch.Tensor, weights: Path, st: Settings):
    """Fine-tune ``run`` from its seed's warm-up; resumes from the run's checkpoint. Returns
    the restorer, its moving average (None when ``st.ema`` is 0), the term and the log."""
    folder = out / "runs" / run.name
    folder.mkdir(parents=True, exist_ok=True)
    net = UNetRestorer()
    net.load_state_dict(warmed_up(out, faces, run.seed, st))
    opt = torch.optim.Adam(net.parameters(), lr=st.lr)
    term = make_term(run, weights, st.d_lr)
    avg = copy.deepcopy(net) if st.ema > 0 else None
    start, log = _resume(folder, net, opt, term, avg)
    if start == 0 and term is not None and trains_discriminator(run):
        log = warm_up_discriminator(run, net, term, faces, st)
    ratio = run.weight if run.branch in ADAPTIVE else 0.0  # > 0: the term's weight per step
    t0 = time.time()
    for step in range(start, st.steps):
        torch.manual_seed(run.seed * 100_003 + step)  # the augmentation's draws, for resuming
        lq, gt, origins = training_batch(faces, run.seed, st.warmup + step, st.batch, st.crop)
        masks = region_masks(term, origins, st)
        fake, g_weight = restorer_step(net, opt, term, lq, gt, masks, ratio)
        if avg is not None:
            ema_update(avg, net, st.ema)
        if term is not None and trains_discriminator(run):
            row = {"step": step, **term.discriminator_step(gt, fake)}
            log.append({**row, "g_weight": g_weight} if ratio > 0 else row)
        if (step + 1) % st.save_every == 0 or step + 1 == st.steps:
            _checkpoint(folder, step + 1, net, opt, term, log, avg)
            rate = (time.time() - t0) / (step + 1 - start)
            print(f"  {run.name}: step {step + 1}/{st.steps}, {rate:.2f} s/step", flush=True)
    return net.eval(), None if avg is None else avg.eval(), term, log


# --- evaluation ---------------------------------------------------------------------------------


class Measures:
    """Everything a run is judged by (nothing a branch optimises); built once."""

    def __init__(self, paths: dict[str, Path]) -> None:
        from ifqa_loss import IFQAMetric
        from ifqa_loss.audit.identity import identity_distance

        self.own = IFQAMetric("ifqa-lite", weights=paths["ifqa-lite"], batch_size=8)
        self.judge = IFQAMetric("ifqa-judge", weights=paths["ifqa-judge"], batch_size=8)
        self.identity = identity_distance()
        self.judges, self.missing = resolve_judges("auto")

    def __call__(self, x: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = [
            measure(a, b, self.own, self.judge, self.identity, self.judges)
            for a, b in zip(x.split(8), clean.split(8), strict=True)
        ]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def restore(net: torch.nn.Module, lq: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return quantize_t(torch.cat([net(x) for x in lq.split(8)]))


def summary(m: dict[str, torch.Tensor], log: list[dict], steps: int) -> dict:
    """Means of the measures; colour as the mean absolute channel shift (1/255)."""
    row = {k: float(v.double().mean()) for k, v in m.items() if k != "colour"}
    row["colour"] = float(m["colour"].abs().double().mean())
    late = [r for r in log if r["step"] >= steps // 10]
    for k in ("acc_real", "acc_fake"):
        if late:
            row[f"d_{k}"] = float(np.mean([r[k] for r in late]))
            row[f"d_{k}_window_min"] = _window(late, k, min)
            row[f"d_{k}_window_max"] = _window(late, k, max)
    if late and "g_weight" in late[0]:  # the adaptive weight's mean after the first 10%
        row["g_weight"] = float(np.mean([r["g_weight"] for r in late]))
    return row


def _window(rows: list[dict], key: str, pick, width: int = 50) -> float:
    """The lowest or highest (``pick``) mean of ``key`` over ``width`` consecutive steps."""
    v = np.array([r[key] for r in rows])
    if len(v) < width:
        return float(v.mean())
    return float(pick(np.convolve(v, np.ones(width) / width, mode="valid")))


# --- the study ----------------------------------------------------------------------------------


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def baseline(out: Path, measures: Measures, lq: torch.Tensor, gt: torch.Tensor) -> None:
    """Measures of the degraded inputs and the clean faces (once), and the inputs themselves."""
    path = out / "baseline.json"
    if path.exists():
        return
    rows = {name: summary(measures(x, gt), [], 0) for name, x in (("input", lq), ("clean", gt))}
    torch.save({"lq": _uint8(lq), "gt": _uint8(gt)}, out / "cases.pt")
    atomic_write_text(path, strict_json(rows))


def judged(
    nets: dict[str, torch.nn.Module],
    folder: Path,
    data: dict,
    measures: Measures,
    log: list[dict],
    steps: int,
) -> dict:
    """Restore the held-out cases with each of ``nets`` (the first is the one judged: its
    outputs go to ``outputs.pt``, the others' to ``outputs_NAME.pt``) and measure them."""
    fields = {}
    for i, (name, net) in enumerate(nets.items()):
        x = restore(net, data["lq"])
        m = measures(x, data["gt"])
        tail = "" if i == 0 else f"_{name}"
        torch.save(_uint8(x), folder / f"outputs{tail}.pt")
        fields[f"summary{tail}"] = summary(m, log, steps)
        fields[f"per_case{tail}"] = {k: v.double().tolist() for k, v in m.items()}
    return fields


def sharpened_l1(run: Run, out: Path, data: dict, measures: Measures) -> dict:
    """The ``unsharp`` control: ``l1_sN``'s saved outputs, unsharp-masked at ``run.weight``
    (sigma :data:`CONTROL_SIGMA`), measured like a run; written to ``runs/NAME/``."""
    from ifqa_loss.faces.degrade import unsharp

    source = out / "runs" / f"l1_s{run.seed}" / "outputs.pt"
    if not source.is_file():
        raise FileNotFoundError(f"{run.name} sharpens the outputs of l1_s{run.seed}: run it first")
    t0 = time.time()
    imgs = torch.load(source, weights_only=True).float() / 255.0
    x = quantize_t(torch.stack([_t(unsharp(_np(i), CONTROL_SIGMA, run.weight)) for i in imgs]))
    m = measures(x, data["gt"])
    folder = out / "runs" / run.name
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(_uint8(x), folder / "outputs.pt")
    result = {
        "run": {**asdict(run), "name": run.name},
        "control": {"of": f"l1_s{run.seed}", "sigma": CONTROL_SIGMA, "amount": run.weight},
        "pinned_sha256": {k: _sha(p) for k, p in data["pinned"].items()},
        "summary": summary(m, [], 0),
        "per_case": {k: v.double().tolist() for k, v in m.items()},
        "seconds_this_part": round(time.time() - t0, 1),
        "judges_missing": measures.missing,
    }
    atomic_write_text(folder / "result.json", strict_json(result))
    return result


def run_one(run: Run, out: Path, data: dict, measures: Measures, st: Settings) -> dict:
    """Fine-tune, restore the held-out cases, measure, write ``runs/NAME/result.json``: the
    ``summary`` of the moving average of the weights (of the last step's when ``st.ema`` is
    0), and ``summary_raw`` of the last step's beside it."""
    t0 = time.time()
    paths = data["pinned"]
    net, avg, _, log = fine_tune(run, out, data["train"], paths["ifqa-lite"], st)
    nets = {"raw": net} if avg is None else {"ema": avg, "raw": net}
    folder = out / "runs" / run.name
    result = {
        "run": {**asdict(run), "name": run.name},
        "settings": asdict(st),
        "pinned_sha256": {k: _sha(p) for k, p in paths.items()},
        **judged(nets, folder, data, measures, log, st.steps),
        "d_log": log,
        "seconds_this_part": round(time.time() - t0, 1),
        "judges_missing": measures.missing,
    }
    atomic_write_text(folder / "result.json", strict_json(result))
    return result


def parse_run(name: str) -> Run:
    """``l1_sN`` or ``BRANCH_WEIGHT_sN`` (a branch of :data:`WEIGHTS`, a weight > 0): runs off
    the plan are allowed, so a curve can gain a point; the plan's own names parse the same."""
    head, _, seed = name.rpartition("_s")
    branch, _, weight = head.partition("_")
    try:
        if branch == "l1" and not weight and seed.isdigit():
            return Run("l1", 0.0, int(seed))
        run = Run(branch, float(weight), int(seed))
    except ValueError:
        run = None
    if run is None or branch not in WEIGHTS or run.weight <= 0 or run.seed < 0:
        raise ValueError(
            f"unknown run {name!r}: use l1_sN or BRANCH_WEIGHT_sN with BRANCH one of "
            f"{sorted(WEIGHTS)} (for example cotrained_0.01_s0); see --list"
        )
    return run


def status(out: Path, extra: list[Run] = ()) -> list[tuple[Run, str]]:
    """Each run of the plan, then of ``extra`` and of ``OUT/runs`` off the plan, with its state."""
    runs = plan()
    found = sorted(p.name for p in (out / "runs").glob("*") if p.is_dir())
    for r in [*extra, *(parse_run(n) for n in found)]:
        if r not in runs:
            runs.append(r)
    rows = []
    for r in runs:
        folder = out / "runs" / r.name
        if (folder / "result.json").exists():
            rows.append((r, "done"))
        elif (folder / "ckpt.pt").exists():
            step = torch.load(folder / "ckpt.pt", weights_only=True)["step"]
            rows.append((r, f"at step {step}"))
        else:
            rows.append((r, "to do"))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("--out", default="study", help="folder for checkpoints and results")
    a.add_argument(
        "--only",
        help="comma-separated run names (see --list; off-plan weights too); default: the plan",
    )
    a.add_argument("--list", action="store_true", help="print the plan and what is done")
    a.add_argument("--data-root", help="the faces folder (default: ../shared/data/faces)")
    st = Settings()
    for k, v in asdict(st).items():
        a.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    return a.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.list:
        for r, state in status(out):
            print(f"{r.name:24s} {state}")
        return 0
    st = Settings(**{k: getattr(args, k) for k in asdict(Settings())})
    if st.regions not in ("crop", "template"):
        print(f"--regions must be 'crop' or 'template', got {st.regions!r}", file=sys.stderr)
        return 2
    torch.set_num_threads(st.threads)
    try:
        extra = [parse_run(n) for n in args.only.split(",")] if args.only else []
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    only = {r.name for r in extra} or {r.name for r in plan()}
    train, held = load_split(args.data_root, st.size)
    lq, gt = held_out_cases(held)
    data = {"train": train, "lq": lq, "gt": gt, "pinned": pinned(out)}
    measures = Measures(data["pinned"])
    baseline(out, measures, lq, gt)
    for run, state in status(out, extra):
        if run.name in only and state != "done":
            print(f"{run.name}: {state}", flush=True)
            if run.branch == "unsharp":
                res = sharpened_l1(run, out, data, measures)
            else:
                res = run_one(run, out, data, measures, st)
            print(f"{run.name}: {json.dumps(res['summary'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
