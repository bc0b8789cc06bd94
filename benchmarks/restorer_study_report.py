"""Table, curves and picture grid of ``benchmarks/restorer_study.py``'s finished runs, with
the study's targets per seed and the dark outlines each run draws.

python benchmarks/restorer_study_report.py --out study   # writes study/report.md,
                                        # study/curves.png (seed 0), study/paired.png (every
                                        # seed against its L1), study/grid.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ifqa_loss._io import atomic_write, atomic_write_image, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling dark_outlines.py

COLUMNS = (  # (key, header, digits); NIQE/BRISQUE/GMSD lower is better
    ("psnr", "PSNR dB", 2),
    ("ssim", "SSIM", 3),
    ("niqe", "NIQE", 2),
    ("brisque", "BRISQUE", 1),
    ("ms_ssim", "MS-SSIM", 3),
    ("gmsd", "GMSD", 3),
    ("judge", "ifqa-judge", 3),
    ("identity", "identity", 3),
    ("colour", "colour", 2),
    ("sharpness", "sharp", 2),
)
# the co-trained term at each co-trained branch's recommended weight (a ratio for adaptive)
TARGETS = {"cotrained": 0.01, "matched": 0.01, "adaptive": 0.5}
ORDER = (
    "l1",
    "features",
    "frozen",
    "random",
    "cotrained",
    "matched",
    "adaptive",
    "adaptive-random",
    "uniform",
    "unsharp",
)


def load(out: Path) -> tuple[dict, list[dict]]:
    base = json.loads((out / "baseline.json").read_text())
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/result.json"))]
    key = {b: i for i, b in enumerate(ORDER)}
    runs.sort(key=lambda r: (key[r["run"]["branch"]], r["run"]["weight"], r["run"]["seed"]))
    return base, runs


def _cell(row: dict, key: str, digits: int) -> str:
    v = row.get(key)
    return "n/a" if v is None else f"{float(v):.{digits}f}"


def _d_cell(s: dict) -> str:
    if "d_acc_fake" not in s:
        return ""
    cell = (
        f"{s['d_acc_fake']:.2f} ({s['d_acc_fake_window_min']:.2f}-"
        f"{s['d_acc_fake_window_max']:.2f}); real {s['d_acc_real']:.2f}"
    )
    return cell + (f"; term weight {s['g_weight']:.4f}" if "g_weight" in s else "")


def table(base: dict, runs: list[dict]) -> list[str]:
    head = ["run", *(h for _, h, _ in COLUMNS), "D accuracy on fakes (50-step range); on real"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in ("input", "clean"):
        cells = [_cell(base[name], k, d) for k, _, d in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " | |")
    for r in runs:
        s = r["summary"]
        cells = [_cell(s, k, d) for k, _, d in COLUMNS]
        lines.append(f"| {r['run']['name']} | " + " | ".join(cells) + f" | {_d_cell(s)} |")
    return lines


def _by_run(runs: list[dict], key: str) -> dict[tuple, dict]:
    """(branch, weight, seed) -> the run's ``key`` summary, for the runs that have one."""
    return {(r["run"]["branch"], r["run"]["weight"], r["run"]["seed"]): r[key] for r in runs
            if key in r}  # fmt: skip


def _with_l1(runs: list[dict], key: str):
    """((branch, weight, seed), summary, L1's summary of that seed) for every run but L1's,
    in sorted order; runs whose seed has no L1 run are left out."""
    by = _by_run(runs, key)
    for (branch, weight, seed), s in sorted(by.items()):
        l1 = by.get(("l1", 0.0, seed))
        if branch != "l1" and l1 is not None:
            yield (branch, weight, seed), s, l1


def target_check(runs: list[dict], branch: str = "cotrained", key: str = "summary") -> list[str]:
    """The issue's targets for a co-trained ``branch`` at its recommended weight, per seed (0, 1
    and any other seed L1 ran with), then the mean differences over the seeds run; judged on
    the runs' ``key`` summaries (``summary_raw``: the last step's weights)."""
    by = _by_run(runs, key)
    seeds = sorted({0, 1} | {s for b, _, s in by if b == "l1"})
    out, pairs = [], []
    for seed in seeds:
        l1, co = by.get(("l1", 0.0, seed)), by.get((branch, TARGETS[branch], seed))
        if l1 is None or co is None:
            out.append(f"- seed {seed}: not run yet")
            continue
        pairs.append((l1, co))
        checks = {
            "NIQE lower": co["niqe"] < l1["niqe"],
            "PSNR at most 0.5 dB lower": co["psnr"] >= l1["psnr"] - 0.5,
            "colour shift at most L1's + 1/255": co["colour"] <= l1["colour"] + 1.0,
            "ifqa-judge not lower": co["judge"] >= l1["judge"],
            "identity distance not higher": co.get("identity", 0) <= l1.get("identity", 0),
            "D accuracy on fakes in [0.55, 0.95]": 0.55
            <= co.get("d_acc_fake_window_min", 0)
            <= co.get("d_acc_fake_window_max", 1)
            <= 0.95,
        }
        verdict = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())
        out.append(
            f"- seed {seed}: PSNR {co['psnr'] - l1['psnr']:+.2f} dB, NIQE "
            f"{co['niqe'] - l1['niqe']:+.2f}; {verdict}"
        )
    return out + mean_differences(pairs)


def mean_differences(pairs: list[tuple[dict, dict]], label: str = "mean") -> list[str]:
    """Mean (min to max) over seeds of the branch's differences from L1 of the same seed, on
    a line starting ``- LABEL over N seeds``."""
    if len(pairs) < 2:
        return []
    cells = []
    for key, header, digits in COLUMNS:
        d = [co[key] - l1[key] for l1, co in pairs if co.get(key) is not None]
        if len(d) == len(pairs):
            cells.append(
                f"{header} {np.mean(d):+.{digits}f} ({min(d):+.{digits}f} to {max(d):+.{digits}f})"
            )
    return [f"- {label} over {len(pairs)} seeds: " + "; ".join(cells)]


DIFF_KEYS = ("psnr", "niqe", "brisque", "judge", "identity", "colour")


def _diff(s: dict, l1: dict, key: str, digits: int) -> str:
    if s.get(key) is None or l1.get(key) is None:
        return "n/a"
    return f"{s[key] - l1[key]:+.{digits}f}"


def against_l1(runs: list[dict], key: str = "summary") -> list[str]:
    """Every run's differences from L1 of the same seed (a table), then, for each branch and
    weight run on two seeds or more, the mean (min to max) over its seeds."""
    cols = [c for c in COLUMNS if c[0] in DIFF_KEYS]
    head = "| run | " + " | ".join(h for _, h, _ in cols) + " |"
    lines = [head, "|" + " --- |" * (len(cols) + 1)]
    groups: dict[tuple, list[tuple[dict, dict]]] = {}
    for (branch, weight, seed), s, l1 in _with_l1(runs, key):
        groups.setdefault((branch, weight), []).append((l1, s))
        cells = [_diff(s, l1, k, d) for k, _, d in cols]
        lines.append(f"| {branch}_{weight:g}_s{seed} | " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return ["- no run has an L1 of its seed yet"]
    for (branch, weight), pairs in groups.items():
        lines += mean_differences(pairs, f"{branch} {weight:g}, mean")
    return lines


def seed_spread(runs: list[dict], key: str = "summary") -> list[str]:
    """For each branch and weight run with two seeds or more: the range of PSNR and NIQE over
    its seeds (how far one run is from another of the same recipe)."""
    groups: dict[tuple, list[dict]] = {}
    for (branch, weight, _), s in sorted(_by_run(runs, key).items()):
        groups.setdefault((branch, weight), []).append(s)
    out = []
    for (branch, weight), rows in groups.items():
        if len(rows) < 2:
            continue
        name = branch if branch == "l1" else f"{branch} {weight:g}"
        cells = []
        for k, header, digits in (("psnr", "PSNR dB", 2), ("niqe", "NIQE", 2)):
            v = [r[k] for r in rows]
            cells.append(f"{header} {min(v):.{digits}f} to {max(v):.{digits}f} "
                         f"(range {max(v) - min(v):.{digits}f})")  # fmt: skip
        out.append(f"- {name}, {len(rows)} seeds: " + "; ".join(cells))
    return out


# Measures compared with the sharpened L1 at the same PSNR (lower is better for gmsd, niqe,
# brisque, identity; piq's full-reference measures and dlib's identity decide, as NIQE and
# ifqa-judge reward sharpening)
AGAINST_SHARPENED = (
    ("ssim", "SSIM", 3),
    ("ms_ssim", "MS-SSIM", 3),
    ("gmsd", "GMSD", 4),
    ("haarpsi", "HaarPSI", 3),
    ("vif", "VIF", 3),
    ("niqe", "NIQE", 2),
    ("brisque", "BRISQUE", 1),
    ("judge", "ifqa-judge", 3),
    ("identity", "identity", 3),
    ("sharpness", "sharp", 2),
)


def sharpened_at(psnr: float, curve: list[tuple[float, dict]]) -> tuple[float, dict] | None:
    """The ``unsharp`` control at ``psnr``: ``curve`` is ``(amount, summary)`` with amount 0
    for L1 itself; linear in PSNR between the two amounts around it, None outside the curve."""
    for (a0, s0), (a1, s1) in itertools.pairwise(sorted(curve, key=lambda p: p[0])):
        lo, hi = sorted((s0["psnr"], s1["psnr"]))
        if lo <= psnr <= hi and hi > lo:
            t = (s0["psnr"] - psnr) / (s0["psnr"] - s1["psnr"])
            keys = [k for k in s0 if k in s1 and isinstance(s0[k], float | int)]
            return a0 + t * (a1 - a0), {k: s0[k] + t * (s1[k] - s0[k]) for k in keys}
    return None


def against_sharpened(runs: list[dict], key: str = "summary") -> list[str]:
    """Each trained run against L1's outputs of its seed unsharp-masked to the same PSNR (the
    ``unsharp`` control, interpolated between its amounts): ``run / sharpened`` per measure."""
    by = _by_run(runs, key)
    head = "| run | PSNR dB | amount | " + " | ".join(h for _, h, _ in AGAINST_SHARPENED) + " |"
    lines = [head, "|" + " --- |" * (len(AGAINST_SHARPENED) + 3)]
    for (branch, weight, seed), s in sorted(by.items()):
        if branch in ("l1", "unsharp") or ("l1", 0.0, seed) not in by:
            continue
        curve = [(0.0, by["l1", 0.0, seed])]
        curve += [(w, v) for (b, w, sd), v in by.items() if b == "unsharp" and sd == seed]
        found = sharpened_at(s["psnr"], curve)
        if found is None:
            lines.append(f"| {branch}_{weight:g}_s{seed} | {s['psnr']:.2f} | outside the control |")
            continue
        amount, c = found
        cells = [f"{s[k]:.{d}f} / {c[k]:.{d}f}" if k in s and k in c else "n/a"
                 for k, _, d in AGAINST_SHARPENED]  # fmt: skip
        lines.append(f"| {branch}_{weight:g}_s{seed} | {s['psnr']:.2f} | {amount:.2f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return lines if len(lines) > 2 else ["- no trained run has an unsharp control of its seed"]


def sections(runs: list[dict]) -> list[str]:
    """Targets and seed spreads on the judged weights (the moving average where the recipe
    keeps one), then on the last step's weights where they were measured beside them."""
    lines = []
    for key, label in (("summary", ""), ("summary_raw", ", last step's weights")):
        if not any(key in r for r in runs):
            continue
        for branch, weight in TARGETS.items():
            lines += ["", f"Targets ({branch} at {weight:g} against L1{label}):"]
            lines += target_check(runs, branch, key)
        lines += ["", f"Against L1 of the same seed{label}:", *against_l1(runs, key)]
        lines += ["", f"Spread over seeds{label}:", *seed_spread(runs, key)]
    if any(r["run"]["branch"] == "unsharp" for r in runs):
        lines += ["", "Against L1 sharpened to the same PSNR (run / sharpened L1):"]
        lines += against_sharpened(runs)
    return lines


def outlines(out: Path, runs: list[dict]) -> list[str]:
    """Dark edges (``benchmarks/dark_outlines.py``) of the input and of each run's saved outputs
    of the held-out cases, in the eye/nose/mouth template regions and elsewhere (mean %)."""
    from dark_outlines import dark_edges

    from ifqa_loss.masks import face_region_masks

    data = torch.load(out / "cases.pt", weights_only=True)
    size = data["gt"].shape[-1]
    regions = face_region_masks(None, size, ("eyes", "nose", "mouth"))[0].sum(0) > 0.5
    lines = [
        "| run | dark edges in eyes/nose/mouth % | elsewhere % |",
        "| --- | --- | --- |",
    ]
    paths = {r["run"]["name"]: out / "runs" / r["run"]["name"] / "outputs.pt" for r in runs}
    for name, path in {"input": None, **paths}.items():
        if path is not None and not path.is_file():
            continue
        imgs = data["lq"] if path is None else torch.load(path, weights_only=True)
        inside, outside = dark_edges(imgs, data["gt"], regions)  # one run's outputs at a time
        lines.append(f"| {name} | {float(inside.mean()):.3f} | {float(outside.mean()):.3f} |")
    return lines


def _pyplot():
    """matplotlib's pyplot on the file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def curves(runs: list[dict], path: Path) -> Path | None:
    """PSNR against NIQE and against ifqa-judge, one line per branch (seed 0)."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for branch in ORDER:
        pts = sorted(
            (r["run"]["weight"], r["summary"])
            for r in runs
            if r["run"]["branch"] == branch and r["run"]["seed"] == 0
        )
        if not pts:
            continue
        for ax, key in zip(axes, ("niqe", "judge"), strict=True):
            have = [(w, s) for w, s in pts if s.get(key) is not None]  # judges extra missing
            xs = [s["psnr"] for _, s in have]
            ys = [s[key] for _, s in have]
            ax.plot(xs, ys, "o-", label=branch)
            for (w, _), x, y in zip(have, xs, ys, strict=True):
                ax.annotate(f"{w:g}", (x, y), fontsize=7)
    axes[0].set(xlabel="PSNR dB (higher: more faithful)", ylabel="NIQE (lower: more natural)")
    axes[1].set(xlabel="PSNR dB", ylabel="ifqa-judge (higher: more real)")
    axes[0].legend(fontsize=8)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def paired_points(runs: list[dict], key: str = "summary") -> dict[tuple, list[tuple]]:
    """(branch, weight) -> one (PSNR, NIQE, ifqa-judge) difference from L1 of the same seed per
    seed run, in seed order; runs whose seed has no L1 run, or without NIQE (the judges extra
    was missing), are left out."""
    points: dict[tuple, list[tuple]] = {}
    for (branch, weight, _), s, l1 in _with_l1(runs, key):
        pairs = [(s.get(k), l1.get(k)) for k in ("psnr", "niqe", "judge")]
        if all(a is not None and b is not None for a, b in pairs):
            points.setdefault((branch, weight), []).append(tuple(a - b for a, b in pairs))
    return points


def _span(values: list[float], keep: list[float]) -> tuple[float, float]:
    """Axis limits covering ``keep``, zero, and every value within six median absolute
    deviations of the median (a broken run would squash the rest), padded by 8%."""
    v = np.asarray(values)
    med = np.median(v)
    mad = np.median(np.abs(v - med))
    inner = v[np.abs(v - med) <= 6 * mad] if mad > 0 else v
    lo, hi = min(*inner, *keep, 0.0), max(*inner, *keep, 0.0)
    pad = 0.08 * (hi - lo) or 0.1
    return lo - pad, hi + pad


def _paired_panel(ax, points: dict[tuple, list[tuple]], j: int) -> None:
    """One panel of :func:`paired_curves`: PSNR difference against difference ``j`` (1 NIQE,
    2 ifqa-judge). Single runs beyond the axes (:func:`_span`) are drawn at the edge as
    crosses, with their values."""
    means = {k: np.mean(v, axis=0) for k, v in points.items()}
    spans = [
        _span([p[c] for v in points.values() for p in v], [m[c] for m in means.values()])
        for c in (0, j)
    ]
    lo, hi = np.array(spans).T
    for branch in (b for b in ORDER if any(k[0] == b for k in points)):
        i = ORDER.index(branch) % 10  # one colour per branch in every folder's plot
        keys = sorted(k for k in points if k[0] == branch)
        for k in keys:
            for p in points[k]:
                x, y = np.clip((p[0], p[j]), lo, hi)
                out = (x, y) != (p[0], p[j])
                ax.plot(x, y, "x" if out else ".", color=f"C{i}", alpha=0.9 if out else 0.45)
                if out:
                    label = f"{p[0]:+.1f}, {p[j]:+.1f}"
                    ax.annotate(label, (x, y), xytext=(4, -9), textcoords="offset points",
                                fontsize=6, color=f"C{i}")  # fmt: skip
        xs, ys = [means[k][0] for k in keys], [means[k][j] for k in keys]
        ax.plot(xs, ys, "o-", color=f"C{i}", label=branch)
        for k, x, y in zip(keys, xs, ys, strict=True):  # weight x number of seeds
            ax.annotate(f"{k[1]:g} x{len(points[k])}", (x, y), fontsize=7)
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])


def paired_curves(runs: list[dict], path: Path) -> Path | None:
    """Each run's PSNR against its NIQE and ifqa-judge, as differences from L1 of the same
    seed (small dots), and each branch and weight's mean over seeds (large, joined by weight):
    the trade-off over seeds rather than one seed's points."""
    plt, points = _pyplot(), paired_points(runs)
    if plt is None or not points:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, j in zip(axes, (1, 2), strict=True):
        _paired_panel(ax, points, j)
    x = "PSNR dB minus L1's of the same seed"
    axes[0].set(xlabel=x, ylabel="NIQE minus L1's (lower: more natural)")
    axes[1].set(xlabel=x, ylabel="ifqa-judge minus L1's (higher: more real)")
    axes[0].legend(fontsize=7)
    fig.suptitle("dots: single runs; large: mean over seeds (weight x seeds)", fontsize=9)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def grid(
    out: Path, runs: list[dict], seed: int = 0, cases: tuple[int, ...] = (0, 13, 26, 39, 52, 63)
) -> Path:
    """Rows: cases; columns: input, each branch's recommended run of ``seed``, clean."""
    import cv2

    data = torch.load(out / "cases.pt", weights_only=True)
    cols = [("input", data["lq"])]
    for branch in ORDER:
        pick = [r for r in runs if r["run"]["branch"] == branch and r["run"]["seed"] == seed]
        rec = [r for r in pick if r["run"]["weight"] in (0.0, 0.01, 0.5)]
        for r in rec[:1]:
            imgs = torch.load(out / "runs" / r["run"]["name"] / "outputs.pt", weights_only=True)
            cols.append((r["run"]["name"], imgs))
    cols.append(("clean", data["gt"]))
    rows = []
    for i in cases:
        tiles = [c[1][i].permute(1, 2, 0).numpy()[..., ::-1].copy() for c in cols]
        rows.append(np.concatenate(tiles, 1))
    img = np.ascontiguousarray(np.concatenate(rows, 0))
    head = np.full((24, img.shape[1], 3), 255, np.uint8)
    for j, (name, _) in enumerate(cols):
        cv2.putText(head, name, (j * 256 + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    name = "grid.png" if seed == 0 else f"grid_s{seed}.png"
    return atomic_write_image(out / name, np.concatenate([head, img], 0))


def main(argv: list[str] | None = None) -> int:
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--out", default="study")
    a.add_argument("--seed", type=int, default=0, help="the seed whose runs the grid shows")
    args = a.parse_args(argv)
    out = Path(args.out)
    base, runs = load(out)
    hours = sum(r.get("seconds_this_part", 0) for r in runs) / 3600
    lines = [f"{len(runs)} finished runs; {hours:.2f} h of run time recorded", ""]
    lines += table(base, runs) + sections(runs)
    if (out / "cases.pt").is_file():
        lines += ["", "Dark outlines (new dark, steep edges; the clean face has none):"]
        lines += outlines(out, runs)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    written = (
        curves(runs, out / "curves.png"),
        paired_curves(runs, out / "paired.png"),
        grid(out, runs, args.seed) if runs else None,
    )
    for p in written:
        if p is not None:
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
