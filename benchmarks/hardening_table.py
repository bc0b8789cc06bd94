"""One table of training runs: their setting-A audit and their held-out validation.

Each run folder needs ``summary.json`` (``ifqa train`` with held-out faces) and
``auditA/audit.json`` (``ifqa audit --settings A --weights RUN/discriminator.safetensors
--out RUN/auditA``). A baseline model is given the same way, as a folder holding
``audit.json`` (setting A) and ``validation.json`` (``ifqa validate --json``).

    python benchmarks/hardening_table.py runs/abl_none runs/abl_pgd --baseline audit_lite
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FAMILIES = ("blur", "downup", "noise", "jpeg", "unsharp")


def _audit_row(audit: dict) -> dict:
    return next(r for r in audit["rows"] if r["setting"] == "A" and r["degradation"] == "all")


def _family_cell(v: dict) -> str:
    rho = v["spearman_mean"]  # null in the JSON where undefined (constant scores)
    return f"{v['pair_accuracy'] * 100:.0f}% / " + ("n/a" if rho is None else f"{rho:+.2f}")


def _line(name: str, audit: dict, validation: dict) -> str:
    a = _audit_row(audit)
    cells = [
        name,
        f"{a['psnr_change']:+.2f}",
        f"{a['realer_than_real']}/{a['n']}",
        f"{a['own_before']:.2f}->{a['own_after']:.2f} ({a['own_clean']:.2f})",
        f"{a['judge_before']:.2f}->{a['judge_after']:.2f}",
    ]
    fam = validation["families"]
    cells += [_family_cell(fam[f]) if f in fam else "-" for f in FAMILIES]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="run folders")
    p.add_argument("--baseline", type=Path, action="append", default=[])
    args = p.parse_args(argv)
    head = ["run", "A: PSNR dB", "A: RtR", "A: own (clean)", "A: judge"]
    head += [f"{f}: pairs / rho" for f in FAMILIES]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for b in args.baseline:
        audit = json.loads((b / "audit.json").read_text())
        print(_line(b.name, audit, json.loads((b / "validation.json").read_text())))
    for r in args.runs:
        audit = json.loads((r / "auditA" / "audit.json").read_text())
        summary = json.loads((r / "summary.json").read_text())
        print(_line(r.name, audit, summary["validation"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
