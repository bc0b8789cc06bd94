"""``ifqa audit`` output: the terminal table, the JSON and the picture grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import strict_json
from .judges import JUDGE_NAMES, describe
from .measures import SETTINGS, degradation_label

COLUMNS = {
    "clean": "clean",
    "degraded": "degraded",
    "A": "A: pure objective",
    "B": "B: with fidelity",
    "C L1": "C: restorer L1",
    "C L1+IFQA": "C: restorer L1+IFQA",
}


def _pair(row: dict[str, Any], key: str, digits: int = 3) -> str:
    if f"{key}_before" not in row:
        return "-"
    clean = row.get(f"{key}_clean")
    tail = f" ({clean:.{digits}f})" if clean is not None else ""
    return f"{row[f'{key}_before']:.{digits}f}->{row[f'{key}_after']:.{digits}f}{tail}"


def format_table(res: dict[str, Any]) -> str:
    """The audit's rows as a plain-text table, then one verdict line per setting."""
    head = (
        f"{'set':<3} {'degradation':<11} {'n':>3}  {'own (clean)':<20} {'judge (clean)':<20} "
        f"{'PSNR dB':<13} {'SSIM':<11} {'sharp':<10} {'ident':<10} {'colour':>6} {'RtR':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in res["rows"]:
        shift = max(abs(v) for v in r["colour_shift"])
        lines.append(
            f"{r['setting']:<3} {r['degradation']:<11} {r['n']:>3}  {_pair(r, 'own'):<20} "
            f"{_pair(r, 'judge'):<20} {_pair(r, 'psnr', 2):<13} {_pair(r, 'ssim'):<11} "
            f"{_pair(r, 'sharpness', 2):<10} {_pair(r, 'identity', 2):<10} {shift:>6.1f} "
            f"{r['realer_than_real']:>2}/{r['n']:<2}"
        )
    lines += [
        "",
        "before->after: A, B: degraded input -> optimised image; C: L1 restorer -> L1+IFQA "
        "restorer. own: the loss's discriminator; judge: the independent judge; sharp: "
        "gradient magnitude / the clean face's; ident: dlib face-descriptor distance to the "
        "clean face (< 0.6: same person); colour: largest per-channel mean shift "
        "(1/255); RtR: realer than real (own score above the clean face's while PSNR fell).",
    ]
    lines += _judge_lines(res["rows"])
    lines += _direction_lines(res["rows"])
    lines += _discriminator_lines(res["rows"])
    if "identity_before" not in res["rows"][0]:
        lines.append(res.get("identity_note", ""))
    lines.append("")
    for s, v in res["verdicts"].items():
        lines.append(f"verdict {s} ({SETTINGS[s]}): {v}")
    return "\n".join(line for line in lines if line is not None)


def _discriminator_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The co-trained discriminator's pixel accuracy (setting C with ``--loss adversarial``)."""
    pooled = [r for r in rows if r["setting"] == "C" and "d_acc_fake_first" in r]
    if not pooled:
        return []
    r = pooled[0]
    return [
        "",
        "co-trained discriminator, pixel accuracy (first 10% of steps -> the rest): on restored "
        f"outputs {r['d_acc_fake_first']:.2f} -> {r['d_acc_fake_rest']:.2f}, on clean faces "
        f"{r['d_acc_real_first']:.2f} -> {r['d_acc_real_rest']:.2f}",
    ]


def _judged(rows: list[dict[str, Any]]) -> list[str]:
    """Names of the judges of other families that the rows carry."""
    return [k for k in JUDGE_NAMES if f"{k}_before" in rows[0]]


def _judge_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A second table: the judges of other families, before->after (clean face's for NIQE and
    BRISQUE; the full-reference ones compare with the clean face)."""
    names = _judged(rows)
    if not names:
        return []
    digits = {"niqe": 2, "brisque": 1}  # no-reference: shown with the clean face's value

    def cell(r: dict[str, Any], k: str) -> str:
        return _pair(r, k, digits[k]) if k in digits else _pair_no_clean(r, k)

    heads = {k: f"{describe(k)['label']} ({describe(k)['better']})" for k in names}
    width = {k: max(len(heads[k]), 22 if k in digits else 12) for k in names}
    head = f"{'set':<3} {'degradation':<11} " + " ".join(f"{heads[k]:<{width[k]}}" for k in names)
    lines = ["", "judges of other families, before->after (clean face's):", head, "-" * len(head)]
    for r in rows:
        vals = " ".join(f"{cell(r, k):<{width[k]}}" for k in names)
        lines.append(f"{r['setting']:<3} {r['degradation']:<11} {vals}")
    return lines


def _pair_no_clean(row: dict[str, Any], key: str) -> str:
    return f"{row[f'{key}_before']:.3f}->{row[f'{key}_after']:.3f}"


def _direction_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Setting A's (else B's) descent direction per degradation, as two lines."""
    for s in "AB":
        got = [r for r in rows if r["setting"] == s and "direction_cos" in r]
        if got:
            cells = [
                f"{r['degradation']} {r['direction_cos']:+.3f} / {r['direction_sign'] * 100:.1f}%"
                for r in got
            ]
            return [
                "",
                "descent direction at the degraded inputs (the first step of A and B) against "
                "the way to the clean face, cosine / sign agreement on values off by >= 1/255 "
                "(+0.000 / 50%: a coin; Adam steps every value along that sign):",
                "  " + ", ".join(cells),
            ]
    return []


def _bgr(x: torch.Tensor, size: int) -> np.ndarray:
    import cv2

    img = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img[:, :, ::-1])


def _text(img: np.ndarray, text: str, y: int, scale: float = 0.38, x: int = 4) -> None:
    """White text with a black outline, readable on any face."""
    import cv2

    font, aa = cv2.FONT_HERSHEY_SIMPLEX, cv2.LINE_AA
    cv2.putText(img, text, (x, y), font, scale, (0, 0, 0), 3, aa)
    cv2.putText(img, text, (x, y), font, scale, (255, 255, 255), 1, aa)


def _caption(res: dict[str, Any], key: str, i: int) -> str:
    per = res["cases"].get(key)
    if per is None:
        return ""
    parts = [f"own {per['own'][i]:.2f}"]
    if "judge" in per:
        parts.append(f"judge {per['judge'][i]:.2f}")
    if key != "clean":
        parts.append(f"{per['psnr'][i]:.1f}dB")
    return " ".join(parts)


def _judge_caption(res: dict[str, Any], key: str, i: int) -> str:
    """The no-reference judges' values (NIQE, BRISQUE) of one cell, e.g. ``NIQE 6.50``."""
    per = res["cases"].get(key) or {}
    parts = [
        f"{describe(k)['label']} {per[k][i]:.{2 if k == 'niqe' else 1}f}"
        for k in JUDGE_NAMES
        if k in per and not describe(k)["reference"] and per[k][i] is not None
    ]
    return " ".join(parts)


def picture_grid(
    res: dict[str, Any], names: Sequence[str], *, cell: int = 160, max_rows: int = 16
) -> np.ndarray:
    """One row per case (face and degradation), one column per result; 8-bit BGR.

    Columns: clean | degraded | A | B | C L1 | C L1+IFQA (those the audit ran). Each cell is
    captioned with the loss's own score, the judge's score and PSNR to the clean face.
    """
    keys = [k for k in COLUMNS if k in res["images"]]
    n = min(len(res["images"]["clean"]), max_rows)
    header = 24
    grid = np.full((header + n * cell, len(keys) * cell, 3), 255, np.uint8)
    for j, k in enumerate(keys):
        _text(grid, COLUMNS[k], 16, 0.45, x=j * cell + 4)
    for i in range(n):
        y = header + i * cell
        for j, k in enumerate(keys):
            tile = _bgr(res["images"][k][i], cell)
            _text(tile, _caption(res, k, i), cell - 6)
            _text(tile, _judge_caption(res, k, i), cell - 20)
            if k == "clean":
                face = Path(names[res["cases"]["face"][i]]).stem[:16]
                _text(tile, f"{face} {res['cases']['degradation'][i]}", 14)
            grid[y : y + cell, j * cell : (j + 1) * cell] = tile
    return grid


def to_json(res: dict[str, Any], meta: dict[str, Any]) -> str:
    """Everything but the image tensors, with ``meta`` (models, faces, time)."""
    doc = {k: v for k, v in res.items() if k != "images"}
    doc["degradations"] = {
        d: degradation_label(d) for d in dict.fromkeys(res["cases"]["degradation"])
    }
    return strict_json({"meta": meta, **doc})
