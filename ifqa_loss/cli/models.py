"""``ifqa models`` (the registered models and where their weights are) and ``ifqa convert``."""

from __future__ import annotations

import argparse

from .exits import EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """Print one line per registered model: name, native size, parameters, weights file and
    its sha256 (recorded beside a downloaded file, or published in the registry)."""
    from ..models import list_models
    from ..weights import CheckpointError, find_weights, recorded_sha256

    print(f"{'name':<11} {'size':>4} {'params':>7}  weights")
    for cfg in list_models():
        digest = cfg.sha256
        try:
            path = find_weights(cfg.name)
            where = str(path)
            try:
                digest = recorded_sha256(path) or (
                    cfg.sha256 if path.name == cfg.weight_file else None
                )
            except CheckpointError as e:
                digest = f"unreadable record: {e}"
        except FileNotFoundError:
            fetch = f"; ifqa download {cfg.name}" if cfg.downloadable else ""
            where = f"not found ({cfg.weight_file}: {cfg.source}{fetch})"
        sha = f"  sha256 {digest}" if digest else ""
        print(f"{cfg.name:<11} {cfg.native_size:>4} {cfg.params:>7}  {where}{sha}")
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a ``.pth`` checkpoint to ``.safetensors`` (keys checked against ``--model``)."""
    from ..weights import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, model=args.model)
    print(f"wrote {out}")
    return EXIT_OK


def configure_models(m: argparse.ArgumentParser) -> None:
    """Give the ``models`` sub-parser its arguments (none)."""
    m.set_defaults(func=cmd_models)


def configure_convert(c: argparse.ArgumentParser) -> None:
    """Give the ``convert`` sub-parser its arguments."""
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--model", default=None, help="check the keys against this architecture")
    c.set_defaults(func=cmd_convert)
