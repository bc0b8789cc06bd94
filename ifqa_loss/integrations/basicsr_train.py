"""BasicSR's training pipeline with the IFQA losses and metric registered.

Usage (from the folder that should hold ``experiments/`` and ``tb_logger/``)::

    python -m ifqa_loss.integrations.basicsr_train -opt options/train.yml
    python -m ifqa_loss.integrations.basicsr_train -opt options/train_gfpgan.yml --import gfpgan
    torchrun --nproc_per_node=4 -m ifqa_loss.integrations.basicsr_train \\
        -opt options/train.yml --launcher pytorch

Every argument except ``--import`` and ``--root`` goes to BasicSR (``-opt``, ``--launcher
none|pytorch|slurm``, ``--auto_resume``, ``--debug``, ``--force_yml``).

- ``--import MODULE`` (repeatable): import a module before training so its registrations
  happen, e.g. ``gfpgan`` (GFPGANModel, its archs and FFHQDegradationDataset) or your own
  package of archs/models.
- ``--root DIR``: the root BasicSR writes ``experiments/`` and ``tb_logger/`` under (default:
  the current folder).

``--local-rank=N`` (added by ``python -m torch.distributed.launch`` on torch >= 2) is accepted and
passed on as ``--local_rank``; ``torchrun`` is the recommended launcher.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence


def _split_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m ifqa_loss.integrations.basicsr_train",
        description="BasicSR training with the IFQA losses and metric registered. Other "
        "arguments (-opt, --launcher, --auto_resume, --debug, --force_yml) go to BasicSR.",
        add_help=False,
    )
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MOD")
    parser.add_argument("--root", default=None, metavar="DIR")
    ours, rest = parser.parse_known_args(list(argv))
    fixed = []
    for a in rest:
        if a.startswith("--local-rank"):
            a = "--local_rank" + a[len("--local-rank") :]
        fixed.append(a)
    return ours, fixed


def main(argv: Sequence[str] | None = None) -> None:
    """Register the IFQA entries, import ``--import`` modules, run ``train_pipeline``."""
    ours, rest = _split_args(sys.argv[1:] if argv is None else argv)
    from . import basicsr as _registration  # noqa: F401  (shim + registration, before basicsr)

    for mod in ours.imports:
        importlib.import_module(mod)
    from basicsr.train import train_pipeline

    root = os.path.abspath(ours.root or os.getcwd())
    sys.argv = [sys.argv[0], *rest]
    train_pipeline(root)


if __name__ == "__main__":
    main()
