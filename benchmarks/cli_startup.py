"""How long ``ifqa --help`` takes, side by side with an earlier revision of the package.

``ifqa --help`` used to import torch, OpenCV and the model code before printing anything; now
only the command on the command line is imported. This times ``python -m ifqa_loss.cli --help``
(what the ``ifqa`` script runs) in this checkout and in a temporary git worktree of
``--baseline`` (default: the last revision before the lazy imports), alternating the two so
that both see the same machine load.

    python benchmarks/cli_startup.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE_LAZY_IMPORTS = "b534494"


def seconds(cwd: Path) -> float:
    """Wall time of one ``python -m ifqa_loss.cli --help`` run from ``cwd`` (whose
    ``ifqa_loss`` folder is imported first)."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ifqa_loss.cli", "--help"],
        cwd=cwd,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--baseline", default=BEFORE_LAZY_IMPORTS, help="git revision to compare")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        git = ["git", "-C", str(REPO)]
        subprocess.run([*git, "worktree", "add", "-q", "--detach", str(base), args.baseline],
                       check=True)  # fmt: skip
        try:
            times: dict[str, list[float]] = {"baseline": [], "this checkout": []}
            for _ in range(args.runs):
                times["baseline"].append(seconds(base))
                times["this checkout"].append(seconds(REPO))
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(base)], check=True)
    for name, ts in times.items():
        runs = ", ".join(f"{t:.2f}" for t in ts)
        print(f"{name:<14} median {statistics.median(ts):6.2f} s  (runs: {runs})")


if __name__ == "__main__":
    main()
