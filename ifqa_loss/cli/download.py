"""``ifqa download``: fetch the official weights into the user cache before first use."""

from __future__ import annotations

import argparse
import sys

from .exits import EXIT_ALL_FAILED, EXIT_OK, EXIT_SOME_FAILED


def cmd_download(args: argparse.Namespace) -> int:
    """Download each named model's weights (``all``: every downloadable model) unless found."""
    from ..models import list_models
    from ..weights import download_weights, find_weights, recorded_sha256

    able = [c.name for c in list_models() if c.downloadable]
    wanted = able if "all" in args.models else list(dict.fromkeys(args.models))
    unknown = [n for n in wanted if n not in able]
    if unknown:
        raise ValueError(
            f"cannot download {', '.join(map(repr, unknown))}: the downloadable models are "
            f"{', '.join(able)} (or all)"
        )
    failed = 0
    for name in wanted:
        try:
            try:
                path = find_weights(name)
                said = "found"
            except FileNotFoundError:
                path = download_weights(name, progress=None if args.progress else False)
                said = "downloaded"
            digest = recorded_sha256(path)
            print(f"{name}: {said} {path}" + (f"  sha256 {digest}" if digest else ""))
        except (FileNotFoundError, ValueError) as e:
            print(f"ifqa download {name}: {e}", file=sys.stderr)
            failed += 1
    if failed == 0:
        return EXIT_OK
    return EXIT_ALL_FAILED if failed == len(wanted) else EXIT_SOME_FAILED


def configure(d: argparse.ArgumentParser) -> None:
    """Give the ``download`` sub-parser its arguments."""
    d.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="ifqa, ifqa++ or all (the models whose registry entry names a download source)",
    )
    d.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (there is one only when stderr is a terminal anyway)",
    )
    d.set_defaults(func=cmd_download)
