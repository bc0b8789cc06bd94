"""The validation protocol: does the score rank clean faces above degraded ones?

On held-out clean aligned faces at 512x512 (resized to 512 first when needed), four
degradation families are applied at several strengths, from none to severe, and every image is
scored through :class:`ifqa_loss.IFQAMetric` as it is (the metric resizes to the model's native
size, as it does for a restorer's output). Reported per family:

- ``pair_accuracy``: share of faces whose clean score is strictly higher than the score of the
  same face at the family's test strength (blur sigma 2, 4x down-up bicubic, noise 15/255,
  JPEG quality 20, unsharp mask amount 2 at sigma 2: over-sharpening must not score as more
  real);
- ``spearman_mean``: Spearman's rho between strength (level index) and score, computed per face
  and averaged over faces (the figure the target refers to); ``spearman_pooled``: the same over
  all (face, level) pairs pooled.

The ``degenerate`` family (optional) scores a fixed set of images that are not faces
(:func:`ifqa_loss.train.degenerate.degenerate_test_set`: constant colours, near-constant
images, gradients, noise patterns, posterised and tile-shuffled faces, corners of whole
photographs; not blurred faces, which are faces of low quality for the blur family) and fails
when any of them scores at or above the lowest clean face; it reports how many do and the
worst margin (highest degenerate score minus lowest clean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from ..faces.degrade import degrade, quantize
from .degenerate import degenerate_test_set

EVAL_SIZE = 512


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    levels: tuple[float | None, ...]  # first level = none
    test: float

    def fmt(self, v: float | None) -> str:
        return "none" if v is None or v == self.levels[0] else f"{self.label} {v:g}"


FAMILIES: tuple[Family, ...] = (
    Family("blur", "sigma", (0.0, 0.5, 1.0, 2.0, 3.0, 4.0), 2.0),
    Family("downup", "x", (1.0, 1.5, 2.0, 3.0, 4.0, 6.0), 4.0),
    Family("noise", "sigma/255", (0.0, 5.0, 10.0, 15.0, 20.0, 25.0), 15.0),
    Family("jpeg", "q", (None, 80.0, 60.0, 40.0, 20.0, 10.0), 20.0),
    # Over-sharpening (the halos GAN restorers are criticised for): a gamed loss rewards it.
    Family("unsharp", "amount", (0.0, 0.5, 1.0, 2.0, 3.0), 2.0),
)
FAMILY_NAMES = (*(f.name for f in FAMILIES), "degenerate")
# Whole photographs whose corners are the degenerate family's non-face crops (relative to the
# faces root). The degenerate training recipes take their backgrounds from the other *_whole
# folders of more/, never these.
TEST_BACKGROUNDS = (
    "more/openface_whole/*",
    "more/mica_whole/*",
    "more/pulid_whole/*",
    "more/prnet_whole/*",
)


def _scorer(model: Any, device: str | torch.device | None) -> Any:
    from ..metric import IFQAMetric

    if isinstance(model, IFQAMetric):
        return model
    return IFQAMetric(model=model, device=device or "cpu", batch_size=8)


def evaluate(
    model: Any,
    faces: Sequence[torch.Tensor],
    *,
    families: Sequence[Family] = FAMILIES,
    quick: bool = False,
    device: str | torch.device | None = None,
    names: Sequence[str] | None = None,
    degenerate: bool | Sequence[tuple[str, np.ndarray]] = False,
) -> dict[str, Any]:
    """Run the protocol.

    Args:
        model: an :class:`~ifqa_loss.IFQAMetric`, a ``Discriminator`` or a registered name.
        faces: clean faces, (3, H, W) float tensors in [0, 1]; resized to 512 when needed.
        quick: score only the clean face and the test strength (pair accuracy, no Spearman).
        names: optional face names, kept in the per-face records.
        degenerate: also run the degenerate family: ``True`` for the synthetic set plus the
            faces' own posterised and shuffled versions, or a list of
            ``(name, (S, S, 3) float32 image)`` (see :func:`degenerate_test_set`).

    Returns:
        ``{"n_faces", "size", "spearman": "per-face mean", "families": {name: {...}}}`` with,
        per family, ``pair_accuracy``, ``wins``, ``clean_mean``, ``degraded_mean``, and without
        ``quick`` also ``levels``, ``level_means``, ``spearman_mean``, ``spearman_pooled``;
        ``"auc"``: :func:`unpaired_auc` of the clean faces against every family's test
        strength; with ``degenerate``, a ``"degenerate"`` entry (see
        :func:`evaluate_degenerate`).
    """
    from ..preprocess import resize_map

    metric = _scorer(model, device)
    out: dict[str, Any] = {
        "n_faces": len(faces),
        "size": EVAL_SIZE,
        "spearman": "per-face mean",
        "model": getattr(metric, "model_name", None),
        "families": {},
    }
    per = {f.name: {"clean": [], "test": [], "levels": []} for f in families}
    clean_scores: list[float] = []
    imgs: list[np.ndarray] = []
    for i, face in enumerate(faces):
        x = face.float()
        x = resize_map(x, EVAL_SIZE) if x.shape[-1] != EVAL_SIZE else x
        img = np.ascontiguousarray(x.clamp(0, 1).numpy().transpose(1, 2, 0), dtype=np.float32)
        img = quantize(img)
        imgs.append(img)
        batch, index = [img], []
        for f in families:
            levels = (f.test,) if quick else f.levels[1:]
            for lv in levels:
                index.append((f.name, lv))
                batch.append(degrade(img, f.name, lv, seed=1000 + i))
        t = torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())
        scores = metric(t).double().cpu().numpy()
        clean = float(scores[0])
        clean_scores.append(clean)
        for f in families:
            rec = per[f.name]
            vals = {
                lv: float(s) for (fn, lv), s in zip(index, scores[1:], strict=True) if fn == f.name
            }
            rec["clean"].append(clean)
            rec["test"].append(vals[f.test])
            if not quick:
                rec["levels"].append([clean] + [vals[lv] for lv in f.levels[1:]])
    for f in families:
        rec = per[f.name]
        clean, test = np.array(rec["clean"]), np.array(rec["test"])
        wins = int((clean > test).sum())
        fam: dict[str, Any] = {
            "test_level": f.fmt(f.test),
            "pair_accuracy": wins / max(1, len(clean)),
            "wins": wins,
            "clean_mean": float(clean.mean()) if len(clean) else float("nan"),
            "degraded_mean": float(test.mean()) if len(test) else float("nan"),
        }
        if not quick and rec["levels"]:
            lv = np.array(rec["levels"])  # (faces, levels)
            strength = np.arange(lv.shape[1])
            rhos = []
            for row in lv:
                r = spearmanr(strength, row).statistic if np.ptp(row) > 0 else 0.0
                rhos.append(float(r))
            pooled = spearmanr(np.tile(strength, lv.shape[0]), lv.reshape(-1)).statistic
            fam.update(
                levels=[f.fmt(v) for v in f.levels],
                level_means=[float(v) for v in lv.mean(0)],
                spearman_mean=float(np.mean(rhos)),
                spearman_min=float(np.min(rhos)),
                spearman_pooled=float(pooled),
            )
        out["families"][f.name] = fam
    degraded = [t for f in families for t in per[f.name]["test"]]
    if degraded:  # no family (e.g. the degenerate family alone): no AUC
        out["auc"] = unpaired_auc(clean_scores, degraded)
    if names is not None:
        out["faces"] = list(names)
    if degenerate is not False:
        images = degenerate_test_set(imgs) if degenerate is True else list(degenerate)
        out["degenerate"] = evaluate_degenerate(metric, images, clean_scores)
    return out


def unpaired_auc(clean: Sequence[float], degraded: Sequence[float]) -> float:
    """The chance that a clean score beats a degraded one drawn independently (ties count
    half): the ROC AUC of the score as a clean-or-degraded test, faces unpaired.

    >>> unpaired_auc([0.9, 0.5], [0.4, 0.5, 0.95])
    0.5833333333333334
    """
    c = np.asarray(clean, float)[:, None]
    d = np.asarray(degraded, float)[None, :]
    if not c.size or not d.size:
        raise ValueError("unpaired_auc needs at least one clean and one degraded score")
    return float(((c > d).sum() + 0.5 * (c == d).sum()) / (c.size * d.size))


def evaluate_degenerate(
    metric: Any, images: Sequence[tuple[str, np.ndarray]], clean_scores: Sequence[float]
) -> dict[str, Any]:
    """Score degenerate images against the lowest clean score.

    Args:
        metric: an :class:`~ifqa_loss.IFQAMetric`.
        images: ``(name, (S, S, 3) float32 RGB in [0, 1])``; sizes may differ.
        clean_scores: the clean faces' scores.

    Returns:
        ``{"n", "above", "passed", "min_clean", "max_degenerate", "worst", "worst_margin",
        "mean_degenerate", "by_kind"}``: ``above`` counts images scoring at or above the lowest
        clean face; ``worst_margin`` is the highest degenerate score minus the lowest clean
        score (negative when the family passes); ``by_kind`` the highest score per kind (the
        name without its trailing indices and size).
    """
    if not images or not clean_scores:
        raise ValueError("the degenerate family needs at least one image and one clean score")
    scores = _score_mixed_sizes(metric, [img for _, img in images])
    min_clean = float(min(clean_scores))
    worst = int(np.argmax(scores))
    by_kind: dict[str, float] = {}
    for (name, _), sc in zip(images, scores, strict=True):
        kind = name.split("_")[0] if name.startswith("background") else name
        kind = "_".join(p for p in kind.split("_") if not p.isdigit())
        by_kind[kind] = max(by_kind.get(kind, -1.0), float(sc))
    above = int((scores >= min_clean).sum())
    return {
        "n": len(images),
        "above": above,
        "passed": above == 0,
        "min_clean": min_clean,
        "max_degenerate": float(scores[worst]),
        "worst": images[worst][0],
        "worst_margin": float(scores[worst]) - min_clean,
        "mean_degenerate": float(scores.mean()),
        "by_kind": by_kind,
        "clean_scores": [float(c) for c in clean_scores],
    }


def _score_mixed_sizes(metric: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    """Scores of HWC images of possibly different sizes, one batch per size, in input order."""
    scores = np.zeros(len(images))
    sizes = sorted({img.shape[:2] for img in images})
    for hw in sizes:
        idx = [i for i, img in enumerate(images) if img.shape[:2] == hw]
        t = torch.from_numpy(np.stack([images[i] for i in idx]).transpose(0, 3, 1, 2).copy())
        scores[idx] = metric(t).double().cpu().numpy()
    return scores


def format_table(res: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate`'s result."""
    fams = res["families"]
    head = (
        f"{'family':<8} {'test strength':<15} {'clean>degraded':>16} {'mean clean':>11} "
        f"{'mean degr.':>11} {'Spearman':>9} {'(min)':>7} {'pooled':>7}"
    )
    lines = [
        f"held-out faces: {res['n_faces']} at {res['size']}x{res['size']}; Spearman: "
        f"strength vs score, per face then averaged",
        head,
        "-" * len(head),
    ]
    n = res["n_faces"]
    for name, f in fams.items():
        sp = f.get("spearman_mean")
        spm = f.get("spearman_min")
        pooled = f.get("spearman_pooled")
        acc = f"{f['pair_accuracy'] * 100:5.1f}% ({f['wins']}/{n})"
        lines.append(
            f"{name:<8} {f['test_level']:<15} {acc:>16} {f['clean_mean']:>11.4f} "
            f"{f['degraded_mean']:>11.4f} "
            + (
                f"{sp:>9.3f} {spm:>7.2f} {pooled:>7.3f}"
                if sp is not None
                else f"{'-':>9} {'-':>7} {'-':>7}"
            )
        )
    if any("level_means" in f for f in fams.values()):
        lines.append("")
        lines.append("mean score per strength (none -> severe):")
        for name, f in fams.items():
            if "level_means" in f:
                cells = ", ".join(
                    f"{lv}: {m:.4f}" for lv, m in zip(f["levels"], f["level_means"], strict=True)
                )
                lines.append(f"  {name:<7} {cells}")
    if "auc" in res:
        lines += ["", f"clean vs every family's test strength, unpaired: AUC {res['auc']:.4f}"]
    if "degenerate" in res:
        lines += ["", format_degenerate(res["degenerate"])]
    return "\n".join(lines)


def format_degenerate(d: dict[str, Any]) -> str:
    """One summary line and the highest score per kind of the degenerate family."""
    verdict = "passed" if d["passed"] else "FAILED"
    kinds = ", ".join(f"{k} {v:.4f}" for k, v in sorted(d["by_kind"].items()))
    return (
        f"degenerate: {verdict}: {d['above']}/{d['n']} images score at or above the lowest clean"
        f" face ({d['min_clean']:.4f}); highest {d['max_degenerate']:.4f} ({d['worst']}),"
        f" worst margin {d['worst_margin']:+.4f}; mean {d['mean_degenerate']:.4f}\n"
        f"  highest per kind: {kinds}"
    )


def meets_targets(res: dict[str, Any], accuracy: float = 0.9, rho: float = -0.8) -> bool:
    """True when every family has pair accuracy >= ``accuracy`` and Spearman <= ``rho``, and
    the degenerate family (when run) passed."""
    if "degenerate" in res and not res["degenerate"]["passed"]:
        return False
    return all(
        f["pair_accuracy"] >= accuracy and f.get("spearman_mean", -1.0) <= rho
        for f in res["families"].values()
    )
