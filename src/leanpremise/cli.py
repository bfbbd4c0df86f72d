"""`leanpremise <command>`: one CLI; each stage registers its own subcommands.

A stage's `cli` module provides `register(subparsers)`, adding its parsers with
`set_defaults(func=...)`. Every flag of every command is a field of a dataclass,
turned into flags by HfArgumentParser (`sub.add_parser(name, dataclass_types=[...])`),
and a command reads its flags back as those dataclasses (:func:`from_args`); only
positional arguments are plain `add_argument` calls. A command that parses its own
arguments (training takes every Hugging Face TrainingArguments flag) is listed in
OWN_PARSER and receives the raw argument list.

Every command reports bad input the same way: `leanpremise <command>: error:
<message>` on stderr, exit status 2, no traceback. Flags are never abbreviated
(`--max_step` is an error, not `--max_steps`), and a flag error shows the usage
of the command it belongs to.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass

from leanpremise.data.errors import DataLayoutError
from leanpremise.flags import ArgumentParser, from_args, switch  # noqa: F401 - from_args: for the stage CLIs' callers

STAGES = [
    "leanpremise.data.cli",
    "leanpremise.train.cli",
    "leanpremise.eval.cli",
    "leanpremise.export.cli",
    "leanpremise.serve.cli",
    "leanpremise.bench.cli",
]

USER_ERRORS = (DataLayoutError, FileNotFoundError)

RENAMED_FLAGS = {"--seed": "--split_seed", "--no_cache": "--no_use_data_cache"}
"""Data flags renamed when the data options became one dataclass: an old spelling gets a hint, not a meaning."""

OWN_PARSER = {"train": "leanpremise.train.cli"}
"""Commands whose module has `main(argv)` parsing everything after the command name."""


@dataclass
class GlobalFlags:
    verbose: bool = switch("debug logging", aliases=["-v"])


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        dataclass_types=[GlobalFlags],
        prog="leanpremise",
        description="Train, evaluate, export and serve the premise selector behind LeanHammer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except ModuleNotFoundError as e:
        if (e.name or "leanpremise").split(".")[0] == "leanpremise":
            raise
        # A command of an extra run on an install without it: one line, not a traceback.
        command = f"leanpremise {argv[0]}" if argv else "leanpremise"
        print(f"{command}: error: {e.name.split('.')[0]} is not installed; this command needs an extra "
              "(README.md, Install: e.g. pip install 'leanpremise[all]')", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in OWN_PARSER:
        setup_logging()
        return int(importlib.import_module(OWN_PARSER[argv[0]]).main(argv[1:]) or 0)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the command's own parser, with its usage
        hints = [f"{old} is now {new}" for old, new in RENAMED_FLAGS.items()
                 if any(e == old or e.startswith(old + "=") for e in extras)]
        args.parser_.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        # Bad input is reported as one clear line naming the file, not a traceback.
        print(f"{args.parser_.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
