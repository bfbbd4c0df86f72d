"""`leanpremise <command>`: one CLI; each stage registers its own subcommands.

A stage's `cli` module provides `register(subparsers)`, adding its parsers with
`set_defaults(func=...)`. A command that parses its own arguments (training
takes every Hugging Face TrainingArguments flag) is listed in OWN_PARSER and
receives the raw argument list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

STAGES = [
    "leanpremise.data.cli",
    "leanpremise.train.cli",
    "leanpremise.eval.cli",
    "leanpremise.export.cli",
    "leanpremise.serve.cli",
    "leanpremise.bench.cli",
]

from leanpremise.data.errors import DataLayoutError

USER_ERRORS = (DataLayoutError, FileNotFoundError)

OWN_PARSER = {"train": "leanpremise.train.cli"}
"""Commands whose module has `main(argv)` parsing everything after the command name."""


def _stage_modules():
    for name in STAGES:
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a missing dependency is a real error; a stage not yet built is not
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leanpremise",
        description="Train, evaluate, export and serve the premise selector behind LeanHammer.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _stage_modules():
        module.register(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in OWN_PARSER:
        setup_logging()
        return int(importlib.import_module(OWN_PARSER[argv[0]]).main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        # Bad input is reported as one clear line naming the file, not a traceback.
        print(f"leanpremise {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
