"""``ifqa audit``: does minimising a loss make faces better, or does it fool the discriminator?

A frozen discriminator used as a loss can be gamed: whatever raises its score is learned,
whether or not the face becomes more real. The audit optimises against the loss as configured
and then looks with measures the loss never sees:

- **A, pure objective**: Adam on the degraded image's pixels, minimising the loss alone
  (``steps`` steps at ``lr``, clamped to the image range after every step);
- **B, with fidelity**: the same plus ``fidelity_weight`` times a data term to the degraded
  input, the L1 distance of the 3x3 box-filtered images (so the objective may add detail but
  must keep the degraded image's low frequencies);
- **C, a restorer**: a :class:`~ifqa_loss.audit.restorer.TinyRestorer`, pre-trained with L1 on
  training faces, then fine-tuned in two copies from the same weights on the same batches,
  one with L1 and one with L1 + ``ifqa_weight`` times the loss, and run on the audit faces
  (at ``restorer_size``, 128 by default, as restorers are often trained on small crops).

Each row compares "before" and "after" images with the clean face: for A and B, the degraded
input and the optimised image; for C, the L1 restorer's output and the L1 + IFQA restorer's.
Measures: the loss's own score (the mean realness of its discriminator), an independent
judge's score, PSNR and SSIM to the clean face (kornia), sharpness (mean Sobel gradient
magnitude over the clean face's), the per-channel colour shift, and the share of faces that
end "realer than real": own score above the clean face's own score while PSNR fell.

Verdict per setting, pooled over its faces: **GAMED** when the mean PSNR change is below
``-MAX_PSNR_DROP`` dB or more than ``MAX_REALER_THAN_REAL`` of the faces end realer than real;
otherwise **ok**, with whether PSNR and the judge rose.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..faces.degrade import degrade
from ..preprocess import luma, resize_map
from .judges import JUDGE_NAMES, Judge
from .restorer import TinyRestorer, fine_tune_pair, train_l1

# Verdict thresholds (the targets of the robust-model issue).
MAX_PSNR_DROP = 1.0  # dB, mean over the setting's faces
MAX_REALER_THAN_REAL = 0.5  # share of faces
MIN_AUDIT_SIZE = 64
SETTINGS = {
    "A": "pure objective",
    "B": "with fidelity",
    "C": "restorer",
}


@dataclass(frozen=True)
class AuditDegradation:
    """One degradation of the audit's fixed set, at the audit size."""

    name: str
    family: str  # a family of ifqa_loss.faces.degrade.degrade
    level: float
    label: str

    def apply(self, img: np.ndarray, seed: int) -> np.ndarray:
        """(H, W, 3) float32 RGB in [0, 1] -> degraded, on the 8-bit grid."""
        return degrade(img, self.family, self.level, seed=seed)


DEGRADATIONS: tuple[AuditDegradation, ...] = (
    AuditDegradation("blur", "blur", 1.5, "Gaussian blur, sigma 1.5 px"),
    AuditDegradation("downup", "downup", 4.0, "4x bicubic down and up"),
    AuditDegradation("noise", "noise", 15.0, "Gaussian noise, sigma 15/255"),
    AuditDegradation("jpeg", "jpeg", 20.0, "JPEG quality 20"),
)


@dataclass
class AuditOptions:
    """What the audit runs; every field is a command-line option of ``ifqa audit``.

    ``size``: side of the audit images (faces are resized to it); ``restorer_size``: side of
    the setting-C faces (training and audit, degraded at that size; the restorer's cost grows
    with its square while the discriminator always runs at its native size).
    ``all_degradations``: every face under every degradation (4x the time); by default face
    ``i`` gets degradation ``i mod 4``, so 16 faces give 4 per degradation.
    """

    settings: str = "ABC"
    size: int = 256
    steps: int = 50
    lr: float = 1.0 / 255.0
    fidelity_weight: float = 10.0
    all_degradations: bool = False
    restorer_size: int = 128
    restorer_warmup: int = 100
    restorer_steps: int = 100
    restorer_batch: int = 4
    restorer_lr: float = 1e-3
    ifqa_weight: float = 0.1
    seed: int = 0
    degradations: tuple[str, ...] = field(
        default_factory=lambda: tuple(d.name for d in DEGRADATIONS)
    )

    def check(self) -> None:
        bad = sorted(set(self.settings) - set(SETTINGS))
        if not self.settings or bad:
            raise ValueError(f"settings must be letters of 'ABC', got {self.settings!r}")
        known = {d.name for d in DEGRADATIONS}
        if not self.degradations or set(self.degradations) - known:
            raise ValueError(
                f"degradations must be among {sorted(known)}, got {list(self.degradations)}"
            )
        for name in ("size", "restorer_size"):
            if getattr(self, name) < MIN_AUDIT_SIZE:
                raise ValueError(f"{name} must be >= {MIN_AUDIT_SIZE}, got {getattr(self, name)}")
        for name in ("steps", "restorer_steps", "restorer_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.restorer_warmup < 0 or self.lr <= 0 or self.restorer_lr <= 0:
            raise ValueError("restorer_warmup must be >= 0 and learning rates > 0")


@dataclass
class Cases:
    """The audit's images: one case per (face, degradation)."""

    face: list[int]
    degradation: list[str]
    clean: torch.Tensor  # (N, 3, S, S) in [0, 1]
    degraded: torch.Tensor  # (N, 3, S, S) in [0, 1]


def prepare_faces(faces: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """(3, H, W) faces in [0, 1] -> (N, 3, size, size), antialiased resize, 8-bit grid."""
    out = [quantize_t(resize_map(f.float().clamp(0, 1), size)) for f in faces]
    return torch.stack(out)


def quantize_t(x: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] values to the 8-bit grid (as a saved image would be)."""
    return (x.clamp(0, 1) * 255.0).round() / 255.0


def _to_np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.numpy().transpose(1, 2, 0), dtype=np.float32)


def _to_t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def make_cases(clean: torch.Tensor, opts: AuditOptions) -> Cases:
    """Degrade each face: under every degradation, or the ``i mod n``-th one (default)."""
    degs = [d for d in DEGRADATIONS if d.name in opts.degradations]
    face, names, imgs, degraded = [], [], [], []
    for i in range(len(clean)):
        chosen = degs if opts.all_degradations else [degs[i % len(degs)]]
        img = _to_np(clean[i])
        for d in chosen:
            face.append(i)
            names.append(d.name)
            imgs.append(clean[i])
            degraded.append(_to_t(d.apply(img, seed=opts.seed * 1000 + i)))
    return Cases(face, names, torch.stack(imgs), torch.stack(degraded))


# --- measures the loss never sees ------------------------------------------------------------


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """(B,) mean Sobel gradient magnitude of the grayscale image."""
    import kornia

    return kornia.filters.sobel(luma(x)).mean((1, 2, 3))


def psnr_ssim(x: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image PSNR (dB) and SSIM (11x11 Gaussian window) to ``clean``, from kornia."""
    import kornia

    psnr = torch.stack(
        [kornia.metrics.psnr(a[None], b[None], 1.0) for a, b in zip(x, clean, strict=True)]
    )
    ssim = kornia.metrics.ssim(x, clean, 11).mean((1, 2, 3))
    return psnr, ssim


Scorer = Callable[[torch.Tensor], torch.Tensor]  # (B,3,S,S) in [0,1] -> (B,) realness


def measure(
    x: torch.Tensor,
    clean: torch.Tensor,
    own: Scorer,
    judge: Scorer | None,
    identity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    judges: Sequence[Judge] = (),
) -> dict[str, torch.Tensor]:
    """Every per-image measure of ``x`` against ``clean``; (B,) tensors, colour (B, 3).

    ``judges``: measures of other families (:mod:`.judges`), each under its own name.
    """
    x = quantize_t(x)
    psnr, ssim = psnr_ssim(x, clean)
    out = {
        "own": own(x),
        "psnr": psnr,
        "ssim": ssim,
        "sharpness": gradient_magnitude(x) / gradient_magnitude(clean).clamp_min(1e-8),
        "colour": (x.mean((2, 3)) - clean.mean((2, 3))) * 255.0,
    }
    if judge is not None:
        out["judge"] = judge(x)
    if identity is not None:
        out["identity"] = identity(x, clean)
    for j in judges:
        out[j.name] = j(x, clean)
    return out


# --- the three settings -----------------------------------------------------------------------


def _to_range(x: torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
    lo, hi = input_range
    return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo


def _objective(criterion: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(images, clean) -> 0-dim`` loss for [0, 1] images, in the criterion's own range."""
    rng = tuple(getattr(criterion, "input_range", (0.0, 1.0)))

    def f(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        loss = criterion(_to_range(x, rng), _to_range(clean, rng))
        return loss.mean() if loss.dim() else loss

    return f


def box_fidelity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the 3x3 box-filtered images (the setting-B data term)."""
    return F.avg_pool2d(x - y, 3, stride=1, padding=1, count_include_pad=False).abs().mean()


def optimise_pixels(
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    degraded: torch.Tensor,
    clean: torch.Tensor,
    *,
    steps: int,
    lr: float,
    fidelity_weight: float = 0.0,
    batch: int = 8,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Adam on the pixels of ``degraded`` minimising ``objective`` (+ fidelity), in [0, 1].

    Images are optimised in chunks of ``batch``; Adam acts per element, so each image's path
    does not depend on the others. ``clean`` is handed to the objective as the target
    (no-reference losses ignore it).
    """
    out = []
    for i in range(0, len(degraded), batch):
        y, c = degraded[i : i + batch], clean[i : i + batch]
        x = y.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            loss = objective(x, c)
            if fidelity_weight:
                loss = loss + fidelity_weight * box_fidelity(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            if on_step is not None:
                on_step(len(x))
        out.append(x.detach())
    return torch.cat(out)


# Pixels whose degraded value is within this of the clean one (in [0, 1]) have no way to the
# clean face to agree with: the sign agreement leaves them out.
DIRECTION_MIN_GAP = 1.0 / 255.0


def descent_direction(
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    degraded: torch.Tensor,
    clean: torch.Tensor,
    *,
    batch: int = 8,
) -> dict[str, torch.Tensor]:
    """Where minimising ``objective`` first moves each degraded image, against the way back.

    ``g = -grad objective`` at the degraded images (the first step of settings A and B, whose
    fidelity term has no gradient there) and ``d = clean - degraded``. Per image: ``cos``, the
    cosine of ``g`` and ``d``; ``sign``, the share of the values off by at least
    :data:`DIRECTION_MIN_GAP` where ``g`` is not zero whose sign of ``g`` is that of ``d``.
    A loss whose minimisation restores has ``cos > 0`` and ``sign`` well above 0.5; 0 and
    0.5 are a coin. Adam moves every value by about the learning rate along ``sign(g)``, so
    ``sign`` predicts whether its steps raise PSNR.

    Returns:
        ``{"cos": (B,), "sign": (B,)}`` (``sign`` NaN for an image with no value to count).
    """
    cos, sign = [], []
    for i in range(0, len(degraded), batch):
        y, c = degraded[i : i + batch], clean[i : i + batch]
        x = y.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(x, c), x)
        g, d = -grad.flatten(1).double(), (c - y).flatten(1).double()
        cos.append(F.cosine_similarity(g, d, dim=1, eps=1e-30))
        counted = (d.abs() >= DIRECTION_MIN_GAP) & (g != 0)
        agree = ((torch.sign(g) == torch.sign(d)) & counted).sum(1)
        sign.append(agree / counted.sum(1).where(counted.any(1), torch.nan))
    return {"cos": torch.cat(cos).float(), "sign": torch.cat(sign).float()}


def _batch_sampler(
    train: torch.Tensor, opts: AuditOptions
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Random training batches: a face, flipped half the time, under a random audit degradation."""
    rng = np.random.default_rng(opts.seed + 7)
    degs = [d for d in DEGRADATIONS if d.name in opts.degradations]

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        gts, lqs = [], []
        for _ in range(opts.restorer_batch):
            g = train[int(rng.integers(len(train)))]
            g = g.flip(-1) if rng.random() < 0.5 else g
            d = degs[int(rng.integers(len(degs)))]
            gts.append(g)
            lqs.append(_to_t(d.apply(_to_np(g), seed=int(rng.integers(1 << 30)))))
        return torch.stack(lqs), torch.stack(gts)

    return next_batch


def co_trained(criterion: torch.nn.Module) -> bool:
    """Whether ``criterion`` trains its discriminator beside the restorer (adversarial)."""
    return callable(getattr(criterion, "discriminator_step", None))


def restorer_outputs(
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train: torch.Tensor,
    degraded: torch.Tensor,
    opts: AuditOptions,
    on_step: Callable[[], None] | None = None,
    discriminator_log: list[dict[str, float]] | None = None,
    criterion: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Setting C: ``{"L1": outputs, "L1+IFQA": outputs}`` on ``degraded`` (clamped to [0, 1]).

    A co-trained ``criterion`` (:func:`co_trained`) takes one discriminator step on the clean
    faces and the detached outputs after each restorer step; its returned values (loss, pixel
    accuracies) are appended to ``discriminator_log``.
    """
    torch.manual_seed(opts.seed)
    next_batch = _batch_sampler(train, opts)
    base = TinyRestorer()
    train_l1(base, next_batch, opts.restorer_warmup, opts.restorer_lr)
    w = opts.ifqa_weight
    after = None
    if criterion is not None and co_trained(criterion):
        rng = tuple(getattr(criterion, "input_range", (0.0, 1.0)))
        log = discriminator_log if discriminator_log is not None else []

        def after(out: torch.Tensor, gt: torch.Tensor) -> None:
            log.append(criterion.discriminator_step(_to_range(gt, rng), _to_range(out, rng)))

    nets = fine_tune_pair(
        base,
        next_batch,
        lambda out, gt: w * objective(out, gt),
        steps=opts.restorer_steps,
        lr=opts.restorer_lr,
        on_step=(lambda _s: on_step()) if on_step else None,
        after_step=after,
    )
    with torch.no_grad():
        return {
            k: torch.cat([net(c) for c in degraded.split(8)]).clamp(0, 1) for k, net in nets.items()
        }


# --- summaries and verdicts -------------------------------------------------------------------


def _mean(t: torch.Tensor) -> float:
    return float(t.double().mean())


def summarise(
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    clean: dict[str, torch.Tensor],
    mask: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Means of every measure before/after (and of the clean faces), over ``mask``'s cases."""
    sel = (lambda t: t[mask]) if mask is not None else (lambda t: t)
    row: dict[str, Any] = {"n": int(sel(before["psnr"]).numel())}
    others = [k for k in before if k in JUDGE_NAMES]  # judges of other families
    for k in ("own", "judge", "psnr", "ssim", "sharpness", "identity", *others):
        if k in before:
            row[f"{k}_before"] = _mean(sel(before[k]))
            row[f"{k}_after"] = _mean(sel(after[k]))
    row["own_clean"] = _mean(sel(clean["own"]))
    for k in ("judge", *others):
        if k in clean:
            row[f"{k}_clean"] = _mean(sel(clean[k]))
    row["psnr_change"] = row["psnr_after"] - row["psnr_before"]
    shift = sel(after["colour"]) - sel(before["colour"])
    row["colour_shift"] = [float(v) for v in shift.double().mean(0)]
    rtr = (sel(after["own"]) > sel(clean["own"])) & (sel(after["psnr"]) < sel(before["psnr"]))
    row["realer_than_real"] = int(rtr.sum())
    return row


def verdict(row: dict[str, Any]) -> str:
    """One line: GAMED or ok, with the figures that decide it."""
    n, rtr, dp = row["n"], row["realer_than_real"], row["psnr_change"]
    gamed = dp < -MAX_PSNR_DROP or rtr > MAX_REALER_THAN_REAL * n
    parts = [
        f"PSNR {dp:+.2f} dB",
        f"SSIM {row['ssim_after'] - row['ssim_before']:+.3f}",
        f"realer than real on {rtr}/{n}",
        f"own {row['own_before']:.2f}->{row['own_after']:.2f} (clean {row['own_clean']:.2f})",
    ]
    if "judge_before" in row:
        parts.append(
            f"judge {row['judge_before']:.2f}->{row['judge_after']:.2f} "
            f"(clean {row['judge_clean']:.2f})"
        )
    if gamed:
        head = "GAMED"
    else:
        better = dp > 0.05 and row.get("judge_after", 1.0) >= row.get("judge_before", 0.0)
        head = "ok, improves" if better else "ok, not gamed"
    return f"{head}: " + ", ".join(parts)


def _rows(
    setting: str,
    cases: Cases,
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    clean: dict[str, torch.Tensor],
) -> list[dict[str, Any]]:
    names = np.array(cases.degradation)
    rows = []
    for d in dict.fromkeys(cases.degradation):
        mask = torch.from_numpy(names == d)
        rows.append({"setting": setting, "degradation": d, **summarise(before, after, clean, mask)})
    pooled = {"setting": setting, "degradation": "all", **summarise(before, after, clean)}
    pooled["verdict"] = verdict(pooled)
    return [*rows, pooled]


def _per_case(m: dict[str, torch.Tensor]) -> dict[str, list]:
    return {k: v.double().tolist() for k, v in m.items()}


def run_audit(
    criterion: torch.nn.Module,
    faces: Sequence[torch.Tensor],
    *,
    own: Scorer,
    judge: Scorer | None = None,
    train_faces: Sequence[torch.Tensor] | None = None,
    options: AuditOptions | None = None,
    identity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    judges: Sequence[Judge] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Run settings A, B and C against ``criterion`` and measure the results.

    Args:
        criterion: the loss under test, called as ``criterion(images, clean)`` with images in
            its ``input_range`` (an :class:`~ifqa_loss.IFQALoss` as configured by the user).
        faces: clean aligned faces, (3, H, W) in [0, 1]; resized to ``options.size``.
        own: the loss's own score, (B,3,S,S) in [0, 1] -> (B,) realness.
        judge: an independent judge's score, same signature (None: no judge column).
        train_faces: faces to train the setting-C restorer on (disjoint from ``faces``);
            required when ``options.settings`` has ``C``.
        identity: optional ``(images, clean) -> (B,)`` identity distance.
        judges: measures of other families (:func:`.judges.resolve`), one column each.

    Returns:
        ``{"options", "cases", "rows", "verdicts", "images", "seconds"}``; ``images`` holds the
        tensors for the picture grid (``clean``, ``degraded`` and one entry per result).
    """
    opts = options or AuditOptions()
    opts.check()
    if co_trained(criterion) and set(opts.settings) - {"C"}:
        raise ValueError(
            "a co-trained (adversarial) loss trains its discriminator beside a restorer: it "
            "applies to setting C only; run it with settings 'C'"
        )
    if "C" in opts.settings and not train_faces:
        raise ValueError("setting C needs training faces for the restorer (train_faces)")
    t0 = time.time()
    torch.manual_seed(opts.seed)
    cases = make_cases(prepare_faces(faces, opts.size), opts)
    objective = _objective(criterion)
    n = len(cases.degraded)
    bar = _progress(
        n * opts.steps * sum(s in opts.settings for s in "AB")
        + ("C" in opts.settings) * opts.restorer_steps,
        progress,
    )

    def m(c: Cases) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        return lambda x: measure(x, c.clean, own, judge, identity, judges)

    with torch.no_grad():
        base = {"clean": m(cases)(cases.clean), "degraded": m(cases)(cases.degraded)}
    out = _Collected(base)
    d_log: list[dict[str, float]] = []
    if "A" in opts.settings or "B" in opts.settings:
        direction = descent_direction(objective, cases.degraded, cases.clean)
        out.per_case["direction"] = _per_case(direction)
    for s in "AB":
        if s in opts.settings:
            bar.set_description(f"{s}: {SETTINGS[s]}")
            x = optimise_pixels(
                objective,
                cases.degraded,
                cases.clean,
                steps=opts.steps,
                lr=opts.lr,
                fidelity_weight=opts.fidelity_weight if s == "B" else 0.0,
                on_step=bar.update,
            )
            out.add(s, cases, {s: x}, m(cases), before=base["degraded"], clean=base["clean"])
            _add_direction(out.rows, s, cases, direction)
    if "C" in opts.settings:
        bar.set_description("C: restorer")
        small = make_cases(prepare_faces(faces, opts.restorer_size), opts)
        train = prepare_faces(train_faces, opts.restorer_size)
        outs = restorer_outputs(
            objective, train, small.degraded, opts, lambda: bar.update(1), d_log, criterion
        )
        out.add("C", small, {f"C {k}": v for k, v in outs.items()}, m(small))
        _add_discriminator(out.rows, d_log)
    bar.close()
    out.images = {"clean": cases.clean, "degraded": cases.degraded, **out.images}
    out.images.update(
        {k: resize_map(v, opts.size) for k, v in out.images.items() if k.startswith("C")}
    )
    return {
        "options": asdict(opts),
        "cases": {"face": cases.face, "degradation": cases.degradation, **out.per_case},
        "rows": out.rows,
        "verdicts": {r["setting"]: r["verdict"] for r in out.rows if "verdict" in r},
        "images": out.images,
        "seconds": time.time() - t0,
        "seconds_per_setting": out.seconds,
        "discriminator_log": d_log,
    }


def discriminator_summary(log: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean pixel accuracies of a co-trained discriminator: first 10% of steps, then the rest."""
    if not log:
        return {}
    cut = max(1, len(log) // 10)
    out = {}
    for part, rows in (("first", log[:cut]), ("rest", log[cut:] or log[-1:])):
        for k in ("acc_real", "acc_fake"):
            out[f"d_{k}_{part}"] = float(np.mean([r[k] for r in rows]))
    return out


def _add_discriminator(rows: list[dict[str, Any]], log: Sequence[dict[str, float]]) -> None:
    """The co-trained discriminator's accuracies into setting C's pooled row."""
    for r in rows:
        if r["setting"] == "C" and r["degradation"] == "all":
            r.update(discriminator_summary(log))


def _add_direction(
    rows: list[dict[str, Any]], setting: str, cases: Cases, direction: dict[str, torch.Tensor]
) -> None:
    """Means of :func:`descent_direction` into ``setting``'s rows (NaN images left out)."""
    names = np.array(cases.degradation)
    for r in rows:
        if r["setting"] != setting:
            continue
        sel = (
            slice(None)
            if r["degradation"] == "all"
            else torch.from_numpy(names == r["degradation"])
        )
        for k in ("cos", "sign"):
            v = direction[k][sel]
            v = v[~v.isnan()]
            r[f"direction_{k}"] = _mean(v) if v.numel() else float("nan")


class _Collected:
    """Rows, per-case measures, images and timings, setting by setting."""

    def __init__(self, base: dict[str, dict[str, torch.Tensor]]) -> None:
        self.per_case = {k: _per_case(v) for k, v in base.items()}
        self.rows: list[dict[str, Any]] = []
        self.images: dict[str, torch.Tensor] = {}
        self.seconds: dict[str, float] = {}
        self._t = time.time()

    def add(
        self,
        setting: str,
        cases: Cases,
        images: dict[str, torch.Tensor],
        measure_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        *,
        before: dict[str, torch.Tensor] | None = None,
        clean: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Measure ``images`` (one result, or C's two branches: before = the first)."""
        with torch.no_grad():
            got = {k: measure_fn(v) for k, v in images.items()}
            if clean is None:
                clean = measure_fn(cases.clean)
        keys = list(got)
        before = before if before is not None else got[keys[0]]
        self.rows += _rows(setting, cases, before, got[keys[-1]], clean)
        self.per_case.update({k: _per_case(v) for k, v in got.items()})
        if setting == "C":
            self.per_case["C clean"] = _per_case(clean)
        self.images.update(images)
        now = time.time()
        self.seconds[setting] = round(now - self._t, 1)
        self._t = now


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_description(self, s: str) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True)


def degradation_label(name: str) -> str:
    return next(d.label for d in DEGRADATIONS if d.name == name)
