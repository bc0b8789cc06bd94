"""The ``ifqa`` console command: one module per command, loaded only when that command runs.

- ``score``: :mod:`ifqa_loss.cli.score`;
- ``compare``: :mod:`ifqa_loss.cli.compare` (the report itself:
  :mod:`ifqa_loss.compare.comparison`);
- ``audit``: :mod:`ifqa_loss.cli.audit` (the audit itself is :mod:`ifqa_loss.audit`);
- ``models``, ``convert``: :mod:`ifqa_loss.cli.models`;
- ``download``: :mod:`ifqa_loss.cli.download`;
- ``train``, ``validate``: :mod:`ifqa_loss.cli.train` (which parses its own options).

Exit codes: :mod:`ifqa_loss.cli.exits`.

``ifqa --help`` imports none of them (nor torch): each sub-parser is filled in only for the
command on the command line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .exits import EXIT_ALL_FAILED, EXIT_NO_FACE, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE

__all__ = [
    "EXIT_ALL_FAILED",
    "EXIT_NO_FACE",
    "EXIT_OK",
    "EXIT_SOME_FAILED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

# name: (module, function filling in the sub-parser, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "score": ("ifqa_loss.cli.score", "configure", "score image files (higher is better)"),
    "compare": (
        "ifqa_loss.cli.compare",
        "configure",
        "compare face-restoration methods in an HTML report",
    ),
    "audit": (
        "ifqa_loss.cli.audit",
        "configure",
        "does minimising the loss make faces better, or does it fool the discriminator?",
    ),
    "models": (
        "ifqa_loss.cli.models",
        "configure_models",
        "list the registered models and where their weights are",
    ),
    "convert": (
        "ifqa_loss.cli.models",
        "configure_convert",
        "convert a .pth checkpoint to .safetensors",
    ),
    "download": (
        "ifqa_loss.cli.download",
        "configure",
        "download the official ifqa / ifqa++ weights into the user cache",
    ),
}
# Handed over whole to ifqa_loss.cli.train, whose parsers own their options (and -h).
TRAINER_COMMANDS = {"train": "train a new discriminator", "validate": "validate one"}


# Commands whose "# model:" line says when --model auto fell back to a bundled model; the
# library's warning of that fallback would repeat it, so they drop it.
MODEL_LINE_COMMANDS = ("score", "compare")


def _said_in_model_line(record: logging.LogRecord) -> bool:
    return not hasattr(record, "auto_fallback")


def _command_in(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the top level has only flag options)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``ifqa`` parser. Only ``command``'s sub-parser gets its options (all of them when
    ``command`` is None); the others are listed with their one-line help, so that the
    modules of commands not run are not imported."""
    p = argparse.ArgumentParser(
        prog="ifqa", description="IFQA face quality: score, compare, audit, convert, train"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log what is loaded")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (module, function, helptext) in COMMANDS.items():
        s = sub.add_parser(name, help=helptext)
        if command is None or command == name:
            getattr(importlib.import_module(module), function)(s)
    for name, helptext in TRAINER_COMMANDS.items():
        t = sub.add_parser(name, help=helptext, add_help=False)
        t.add_argument("rest", nargs=argparse.REMAINDER)
        t.set_defaults(func=lambda args, name=name: _run_trainer(name, args.rest))
    return p


def _log_level(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")


def _run_trainer(name: str, rest: list[str]) -> int:
    from . import train

    entry = train.train_main if name == "train" else train.validate_main
    return entry(rest)


def main(argv: list[str] | None = None) -> int:
    """Run ``ifqa`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    before = argv[: argv.index(command)] if command else argv
    if command in TRAINER_COMMANDS and set(before) <= {"-v", "--verbose"}:
        # Hand everything after the sub-command to the trainer's own parser, so that its
        # options (``-h`` included, which argparse's REMAINDER would not capture) work.
        _log_level(bool(before))
        return _run_trainer(command, argv[len(before) + 1 :])
    args = build_parser(command if command in COMMANDS else "").parse_args(argv)
    _log_level(args.verbose)
    library_log = logging.getLogger("ifqa_loss")
    if args.command in MODEL_LINE_COMMANDS:
        library_log.addFilter(_said_in_model_line)  # for this command only
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:  # bad input; a TypeError is a bug: it propagates
        print(f"ifqa {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        library_log.removeFilter(_said_in_model_line)
